"""Reliability of training: atomic checkpoints, the non-finite guard, refusing a mismatched resume
(fast, in-process), and exact resume after SIGKILL plus DDP (slow, subprocesses; CPU)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from gftlib.training import checkpoint as C
from gftlib.training import guard as G
from gftlib.schedules import make_schedule
from gftlib.training.config import TrainConfig
from gftlib.training.guard import NonFiniteLossError
from gftlib.training.loop import train

from train_helpers import ToyObjective, toy_data
from train_helpers import equal_states as _equal_states, seeded_tiny_mlp as _model

torch.set_num_threads(1)
REPO = Path(__file__).resolve().parents[2]
TESTS = Path(__file__).resolve().parents[1]  # the helper scripts


def _cfg(**kw) -> TrainConfig:
    base = dict(steps=12, lr=1e-2, device="cpu", progress=False, log_every=4)
    base.update(kw)
    return TrainConfig(**base)


# ----------------------------------------------------------------------------------------- atomic writes
def _failing_save(monkeypatch, fail_on_call: int = 1):
    """Patch torch.save so that its calls from the ``fail_on_call``-th on write a partial file and raise."""
    real = torch.save
    calls = {"n": 0}

    def save(obj, f, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] >= fail_on_call:
            Path(f).write_bytes(b"partial")
            raise OSError("disk full (simulated)")
        return real(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save)
    return real


def test_interrupted_checkpoint_write_keeps_the_previous_one(tmp_path, monkeypatch):
    C.save_checkpoint({"v": 1}, tmp_path, 1)
    before = (tmp_path / "ckpt_00000001.pt").read_bytes()
    _failing_save(monkeypatch)
    with pytest.raises(OSError, match="simulated"):
        C.save_checkpoint({"v": 2}, tmp_path, 2)
    with pytest.raises(OSError, match="simulated"):  # overwriting the same step fails too
        C.save_checkpoint({"v": 3}, tmp_path, 1)
    monkeypatch.undo()
    assert [p.name for p in C.list_checkpoints(tmp_path)] == ["ckpt_00000001.pt"]
    assert (tmp_path / "ckpt_00000001.pt").read_bytes() == before
    assert C.load_checkpoint(C.latest_checkpoint(tmp_path))["v"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt_00000001.pt", "ckpt_00000001.pt.sha256"]


def test_failed_checkpoint_during_training_then_exact_resume(tmp_path, monkeypatch):
    data = toy_data()
    ref = train(_model(), ToyObjective(data, 32), _cfg())
    cfg = _cfg(checkpoint_every=4, checkpoint_dir=tmp_path)
    _failing_save(monkeypatch, fail_on_call=2)  # the checkpoint at step 8 fails
    with pytest.raises(OSError, match="simulated"):
        train(_model(), ToyObjective(data, 32), cfg)
    monkeypatch.undo()
    assert [p.name for p in C.list_checkpoints(tmp_path)] == ["ckpt_00000004.pt"]
    res = train(_model(), ToyObjective(data, 32), cfg)
    assert res.resumed_from == 4
    assert _equal_states(res.model.state_dict(), ref.model.state_dict())
    assert _equal_states(res.ema_model.state_dict(), ref.ema_model.state_dict())


# ----------------------------------------------------------------------------------------- NaN guard
@pytest.mark.parametrize("deferred", [False, True], ids=["per-step", "deferred"])
@pytest.mark.parametrize("term", ["target", "pretrained", "gradient"])
def test_nonfinite_guard_names_step_and_term(tmp_path, monkeypatch, term, deferred):
    if deferred:  # the GPU code path (check at log / checkpoint boundaries), exercised on the CPU
        monkeypatch.setattr(G, "_CPU_PER_STEP_CHECK", False)
    steps, bad = 20, 7
    cfg = _cfg(steps=steps, checkpoint_every=3, checkpoint_dir=tmp_path, log_every=100)
    obj = ToyObjective(toy_data(), 16, nan_at=bad, nan_term=term)
    with pytest.raises(FloatingPointError, match=rf"non-finite {term} .*at step {bad}\b") as info:
        train(_model(), obj, cfg, schedule=make_schedule("constant", 1.0, steps))
    err = info.value
    assert isinstance(err, NonFiniteLossError) and err.step == bad and err.terms == (term,)
    # per-step: stops in step 7; deferred: at the next boundary (the checkpoint of step 9), unwritten
    assert obj.calls == (9 if deferred else bad)
    assert [p.name for p in C.list_checkpoints(tmp_path)] == ["ckpt_00000003.pt", "ckpt_00000006.pt"]
    assert err.last_checkpoint == str(tmp_path / "ckpt_00000006.pt")
    state = C.load_checkpoint(C.latest_checkpoint(tmp_path))
    assert all(torch.isfinite(v).all() for v in state["model"].values())


def test_nonfinite_guard_without_checkpoints_and_deferred_at_the_end(monkeypatch):
    monkeypatch.setattr(G, "_CPU_PER_STEP_CHECK", False)
    obj = ToyObjective(toy_data(), 16, nan_at=5)
    with pytest.raises(NonFiniteLossError, match="step 5.*no checkpoint was written"):
        train(_model(), obj, _cfg(steps=6, log_every=100))
    assert obj.calls == 6  # the final boundary catches it


# ----------------------------------------------------------------------------------------- mismatch
@pytest.mark.parametrize("change, match", [
    (dict(lr=2e-2), "lr"),
    (dict(seed=1), "seed"),
    (dict(steps=13), "steps"),
    (dict(grad_clip=None), "grad_clip"),
    (dict(ema_decay=0.99), "ema_decay"),
    (dict(warmup_steps=2), "warmup_steps"),
    (dict(weight_decay=0.1), "weight_decay"),
    (dict(amp="bf16"), "amp"),
    ("schedule", "schedule"),
    ("fingerprint", "extra"),
])
def test_resume_refuses_a_mismatched_config(tmp_path, change, match):
    data = toy_data()
    base = dict(checkpoint_every=3, checkpoint_dir=tmp_path)
    sched = make_schedule("linear", 1.0, 12)
    with pytest.raises(RuntimeError, match="simulated"):
        train(_model(), ToyObjective(data, 16, fail_at=5), _cfg(**base), schedule=sched,
              fingerprint={"method": "ft"})
    kwargs = dict(schedule=sched, fingerprint={"method": "ft"})
    cfg = _cfg(**base)
    if change == "schedule":
        kwargs["schedule"] = make_schedule("linear", 2.0, 12)
    elif change == "fingerprint":
        kwargs["fingerprint"] = {"method": "gft-drift"}
    else:
        cfg = _cfg(**base, **change)
        if "steps" in change:
            kwargs["schedule"] = make_schedule("linear", 1.0, change["steps"])
    with pytest.raises(ValueError, match=rf"cannot resume.*{match}"):
        train(_model(), ToyObjective(data, 16), cfg, **kwargs)
    # settings that do not change the result may differ
    res = train(_model(), ToyObjective(data, 16), _cfg(checkpoint_dir=tmp_path, checkpoint_every=5,
                                                          log_every=2, progress=False),
                schedule=sched, fingerprint={"method": "ft"})
    assert res.resumed_from == 3


# ----------------------------------------------------------------------------------------- subprocesses
def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONHASHSEED="0",
               PYTHONPATH=os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]))
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(var, None)
    return env


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "gftlib.experiments.train_cli", *args]


@pytest.mark.slow
@pytest.mark.parametrize("kill_step, when, resumes_from", [(60, "after", 60), (125, "during", 120)],
                         ids=["after-checkpoint", "mid-write"])
def test_cli_resumes_bit_exactly_after_sigkill(tmp_path, kill_step, when, resumes_from):
    """SIGKILL at a step the test chooses: the child blocks on a pipe we hold (tests/blocking_cli.py),
    so the kill lands exactly there on any machine; "mid-write" kills it with a half-written
    temporary checkpoint on disk. Rerunning the same command must give bit-identical weights."""
    common = ["--task", "2d", "--method", "scratch", "--steps", "200", "--batch-size", "128", "--seed", "3",
              "--hidden", "64", "--device", "cpu", "--no-progress", "--log-every", "40",
              "--n-data", "1024", "--warmup-steps", "10"]
    ref_out, out, ck = tmp_path / "ref.pt", tmp_path / "out.pt", tmp_path / "ck"
    resumable = [*common, "--checkpoint-dir", str(ck), "--checkpoint-every", "5", "--out", str(out)]
    ref = subprocess.Popen(_cli(*common, "--out", str(ref_out)), env=_env(), cwd=tmp_path,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    victim = subprocess.Popen([sys.executable, str(TESTS / "blocking_cli.py"), str(kill_step), when, "--",
                               *resumable], env=_env(), cwd=tmp_path, stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = victim.stdout.readline()  # returns when the child blocks (or dies: then the line is empty)
    assert line.strip() == f"BLOCKED {kill_step}", f"child did not block: {line!r} {victim.stderr.read()}"
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    victim.stdin.close()
    assert victim.returncode == -signal.SIGKILL, victim.returncode
    on_disk = [p.name for p in ck.iterdir()]
    assert C.load_checkpoint(C.latest_checkpoint(ck))["step"] == resumes_from
    if when == "during":  # the half-written file exists only under its temporary name
        assert any(name.startswith(f".ckpt_{kill_step:08d}.pt.") for name in on_disk), on_disk
        assert f"ckpt_{kill_step:08d}.pt" not in on_disk
    assert not out.exists()

    done = subprocess.run(_cli(*resumable), env=_env(), cwd=tmp_path, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["resumed_from"] == resumes_from
    assert ref.wait(timeout=600) == 0, ref.stderr.read()
    a = torch.load(out, weights_only=True)
    b = torch.load(ref_out, weights_only=True)
    assert _equal_states(a["model"], b["model"]), "resumed weights differ from the uninterrupted run"
    assert _equal_states(a["ema"], b["ema"])
    assert a["history"] == b["history"]
    # stale temporaries removed; the lock file stays (the kernel released the killed run's lock)
    assert [p.name for p in ck.iterdir() if p.name.startswith(".")] == [".gftlib.lock"]


@pytest.mark.slow
def test_torchrun_cli_ranks_end_identical(tmp_path):
    out, ck = tmp_path / "w.pt", tmp_path / "ck"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port",
           str(_free_port()), "-m", "gftlib.experiments.train_cli", "--task", "2d", "--method", "scratch",
           "--steps", "6", "--batch-size", "64", "--hidden", "32", "--n-data", "256", "--device", "cpu",
           "--no-progress", "--log-every", "3", "--checkpoint-dir", str(ck), "--checkpoint-every", "3",
           "--out", str(out), "--per-rank-out"]
    run = subprocess.run(cmd, env=_env(), cwd=tmp_path, capture_output=True, text=True, timeout=240)
    assert run.returncode == 0, run.stderr[-4000:]
    w0 = torch.load(tmp_path / "w.rank0.pt", weights_only=True)
    w1 = torch.load(tmp_path / "w.rank1.pt", weights_only=True)
    assert _equal_states(w0["model"], w1["model"]) and _equal_states(w0["ema"], w1["ema"])
    assert w0["history"] == w1["history"] and [h["step"] for h in w0["history"]] == [3, 6]
    assert [p.name for p in C.list_checkpoints(ck)] == ["ckpt_00000003.pt", "ckpt_00000006.pt"]
    state = C.load_checkpoint(C.latest_checkpoint(ck))
    assert state["world_size"] == 2 and len(state["rng"]) == 2 and len(state["objective"]) == 2
    assert _equal_states(state["model"], w0["model"])


@pytest.mark.slow
def test_ddp_matches_single_process_and_resumes(tmp_path):
    port = _free_port()
    procs = []
    for rank in range(2):
        env = _env()
        env.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1",
                   MASTER_PORT=str(port))
        procs.append(subprocess.Popen([sys.executable, str(TESTS / "ddp_worker.py"), str(tmp_path / "w"),
                                       str(tmp_path / "ck")], env=env, cwd=tmp_path,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    # meanwhile: the single-process run with the same global batch (same script settings)
    import ddp_worker as W

    single = train(W.make_model(), ToyObjective(toy_data(), W.BATCH), W.config(),
                   schedule=make_schedule("linear", 1.0, W.STEPS))
    for p in procs:
        _, err = p.communicate(timeout=240)
        assert p.returncode == 0, err[-4000:]
    load = lambda tag, r: torch.load(tmp_path / f"w.{tag}.rank{r}.pt", weights_only=True)  # noqa: E731
    a0, a1, b0, b1 = load("A", 0), load("A", 1), load("B", 0), load("B", 1)
    for key in ("model", "ema"):
        assert _equal_states(a0[key], a1[key]), f"ranks disagree on {key}"
        assert _equal_states(b0[key], a0[key]), f"DDP resume changed {key}"
        assert _equal_states(b1[key], a0[key])
    ref = {"model": single.model.state_dict(), "ema": single.ema_model.state_dict()}
    for key in ("model", "ema"):
        ddp = torch.cat([v.flatten() for v in a0[key].values()])
        one = torch.cat([v.flatten() for v in ref[key].values()])
        rel = ((ddp - one).norm() / one.norm()).item()
        assert rel < 1e-5, (key, rel)
        torch.testing.assert_close(ddp, one, rtol=1e-5, atol=1e-6)
    assert a0["history"] == b0["history"]
    for h_ddp, h_one in zip(a0["history"], single.history, strict=True):
        assert h_ddp["step"] == h_one["step"] and h_ddp["beta"] == h_one["beta"]
        for k in ("total", "target", "pretrained"):
            assert h_ddp[k] == pytest.approx(h_one[k], rel=1e-5)
    # (C) the library's FlowMatchingObjective + UNet: ranks identical, equal to one process
    c0, c1 = load("C", 0), load("C", 1)
    single_c = train(W.make_unet(), W.image_objective(), W.image_config())
    for key, ref_state in (("model", single_c.model.state_dict()), ("ema", single_c.ema_model.state_dict())):
        assert _equal_states(c0[key], c1[key]), f"ranks disagree on the UNet's {key}"
        ddp = torch.cat([v.flatten().double() for v in c0[key].values()])
        one = torch.cat([v.flatten().double() for v in ref_state.values()])
        assert ((ddp - one).norm() / one.norm()).item() < 1e-5, key
    for h_ddp, h_one in zip(c0["history"], single_c.history, strict=True):
        assert h_ddp["total"] == pytest.approx(h_one["total"], rel=1e-5)
