"""DDP worker for tests/training/test_reliability_train.py (started once per rank with RANK, WORLD_SIZE,
LOCAL_RANK, MASTER_ADDR, MASTER_PORT set; CPU, gloo). Usage: ddp_worker.py OUT_PREFIX CKPT_DIR.

Runs (A) an uninterrupted DDP training of the toy objective and (B) the same run crashing at step 6
on every rank after a checkpoint at step 4, then resumed in the same process group; (C) image CFM
with the library's own pieces: :class:`gftlib.gft.objective.FlowMatchingObjective` on a tiny UNet
(rows-as-drawn pairing, see train_helpers.rows_as_drawn). Every rank writes
OUT_PREFIX.{A,B,C}.rank{R}.pt with the final model, EMA and history.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from train_helpers import TinyMLP, ToyObjective, rows_as_drawn, tiny_images, toy_data  # noqa: E402

from gftlib.training import distributed as D  # noqa: E402
from gftlib.models import build_model  # noqa: E402
from gftlib.gft.objective import FlowMatchingObjective  # noqa: E402
from gftlib.schedules import make_schedule  # noqa: E402
from gftlib.training.config import TrainConfig  # noqa: E402
from gftlib.training.loop import train  # noqa: E402

STEPS, BATCH = 8, 64


def make_model() -> TinyMLP:
    torch.manual_seed(0)
    return TinyMLP()


def config(**kw) -> TrainConfig:
    return TrainConfig(steps=STEPS, lr=1e-2, grad_clip=0.5, warmup_steps=2, log_every=4, device="cpu",
                       progress=False, seed=7, **kw)


def make_unet() -> torch.nn.Module:
    return build_model("unet", config="tiny", image_size=8, seed=0)


def image_objective() -> FlowMatchingObjective:
    return FlowMatchingObjective(tiny_images(), batch_size=16, coupling=rows_as_drawn, seed=0)


def image_config() -> TrainConfig:
    return TrainConfig(steps=4, lr=1e-3, grad_clip=1.0, ema_decay=0.9, log_every=2, device="cpu",
                       progress=False, seed=11)


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
    c = train(make_unet(), image_objective(), image_config())
    torch.save({"model": c.model.state_dict(), "ema": c.ema_model.state_dict(), "history": c.history},
               f"{prefix}.C.rank{ctx.rank}.pt")
    D.cleanup()


if __name__ == "__main__":
    main()
