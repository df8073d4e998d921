"""DDP worker for tests/test_reliability_train.py (started once per rank with RANK, WORLD_SIZE,
LOCAL_RANK, MASTER_ADDR, MASTER_PORT set; CPU, gloo). Usage: ddp_worker.py OUT_PREFIX CKPT_DIR.

Runs (A) an uninterrupted DDP training of the toy objective and (B) the same run crashing at step 6
on every rank after a checkpoint at step 4, then resumed in the same process group. Every rank
writes OUT_PREFIX.{A,B}.rank{R}.pt with the final model, EMA and history.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from train_helpers import TinyMLP, ToyObjective, toy_data  # noqa: E402

from gftlib import distributed as D  # noqa: E402
from gftlib.schedules import make_schedule  # noqa: E402
from gftlib.train import TrainConfig, train  # noqa: E402

STEPS, BATCH = 8, 64


def make_model() -> TinyMLP:
    torch.manual_seed(0)
    return TinyMLP()


def config(**kw) -> TrainConfig:
    return TrainConfig(steps=STEPS, lr=1e-2, grad_clip=0.5, warmup_steps=2, log_every=4, device="cpu",
                       progress=False, seed=7, **kw)


def main() -> None:
    torch.set_num_threads(1)
    prefix, ckpt_dir = sys.argv[1], sys.argv[2]
    ctx = D.init_from_env("cpu")
    assert ctx.world_size == 2 and ctx.backend == "gloo"
    data = toy_data()
    sched = make_schedule("linear", 1.0, STEPS)
    a = train(make_model(), ToyObjective(data, BATCH), config(), schedule=sched)
    torch.save({"model": a.model.state_dict(), "ema": a.ema_model.state_dict(), "history": a.history},
               f"{prefix}.A.rank{ctx.rank}.pt")
    try:
        train(make_model(), ToyObjective(data, BATCH, fail_at=6), config(checkpoint_dir=ckpt_dir,
                                                                          checkpoint_every=4), schedule=sched)
        raise AssertionError("the simulated crash did not happen")
    except RuntimeError as err:
        assert "simulated crash" in str(err), err
    D.barrier()
    b = train(make_model(), ToyObjective(data, BATCH), config(checkpoint_dir=ckpt_dir, checkpoint_every=4),
              schedule=sched)
    assert b.resumed_from == 4, b.resumed_from
    torch.save({"model": b.model.state_dict(), "ema": b.ema_model.state_dict(), "history": b.history},
               f"{prefix}.B.rank{ctx.rank}.pt")
    D.cleanup()


if __name__ == "__main__":
    main()
