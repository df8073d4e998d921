"""Fast unit tests of gftlib.training.loop / gftlib.training.checkpoint / gftlib.training.distributed (single
process, CPU). The configuration, EMA, guard and checkpointed state have their own test files."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from gftlib.training import checkpoint as C
from gftlib.training import distributed as D
from gftlib.schedules import make_schedule
from gftlib.training.config import TrainConfig, TrainResult
from gftlib.training.loop import train

from train_helpers import ConstantField, ToyObjective, toy_data
from train_helpers import seeded_tiny_mlp as _model

torch.set_num_threads(1)


def _cfg(**kw) -> TrainConfig:
    base = dict(steps=20, lr=1e-2, device="cpu", progress=False, log_every=10)
    base.update(kw)
    return TrainConfig(**base)


# ----------------------------------------------------------------------------------------- the loop
def _reference(model, objective, *, steps, lr, clip, ema_decay, warmup, seed):
    """Plain loop written from the definitions: AdamW (foreach), warm-up, clip, EMA with warm-up."""
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0, foreach=True)
    ema = [p.detach().clone() for p in model.parameters()]
    for k in range(1, steps + 1):
        opt.param_groups[0]["lr"] = lr * min(1.0, k / warmup)
        opt.zero_grad()
        objective.loss(model, 0.0, gen).total.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        opt.step()
        d = min(ema_decay, (1 + k) / (10 + k))
        with torch.no_grad():
            for e, p in zip(ema, model.parameters()):
                e.mul_(d).add_(p, alpha=1 - d)
    return model, ema


def test_train_matches_reference_loop():
    data = toy_data()
    kw = dict(steps=30, lr=5e-3, clip=0.05, ema_decay=0.9, warmup=7, seed=3)
    ref_model, ref_ema = _reference(_model(), ToyObjective(data, 64), **kw)
    res = train(_model(), ToyObjective(data, 64),
                _cfg(steps=30, lr=5e-3, grad_clip=0.05, ema_decay=0.9, warmup_steps=7, seed=3))
    assert isinstance(res, TrainResult) and res.resumed_from is None
    for p, q in zip(res.model.parameters(), ref_model.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-7)
    for p, q in zip(res.ema_model.parameters(), ref_ema):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)
    # the clip was active (so the comparison covers it): logged pre-clip norms exceed it
    assert all(h["grad_norm"] > 0.05 for h in res.history)
    assert all(not p.requires_grad for p in res.ema_model.parameters())


def test_constant_field_reaches_the_cfm_minimiser():
    # b(x, t) = c minimises E|c - (x1 - x0)|^2 at c = E[x1] (x0 has mean 0). Adam moves c by ~lr per
    # step, so after convergence the EMA iterate sits within a few lr of the minimiser; the Monte
    # Carlo error of the 256-sample data mean of the 4000 samples seen is ~2.2 / sqrt(4000) ~ 0.035.
    data = toy_data(2048)
    torch.manual_seed(0)
    res = train(ConstantField(), ToyObjective(data, 256), _cfg(steps=400, lr=0.05, ema_decay=0.99))
    err = (res.ema_model.bias - data.mean(0)).abs().max().item()
    assert err < 0.15, err
    assert res.history[-1]["total"] < res.history[0]["total"]


def test_history_schedule_and_warmup():
    steps, log_every = 25, 10
    sched = make_schedule("linear", 2.0, steps)
    obj = ToyObjective(toy_data(), 32)
    cfg = _cfg(steps=steps, log_every=log_every, warmup_steps=8, lr=1e-3)
    res = train(_model(), obj, cfg, schedule=sched)
    np.testing.assert_array_equal(np.array(obj.betas), sched.values())
    assert [h["step"] for h in res.history] == [10, 20, 25]
    bounds = [(0, 10), (10, 20), (20, 25)]
    for h, (a, b) in zip(res.history, bounds):
        assert h["beta"] == sched(b - 1)
        assert math.isclose(h["total"], float(np.mean(obj.totals[a:b])), rel_tol=1e-5)
        assert math.isclose(h["target"], float(np.mean(obj.targets[a:b])), rel_tol=1e-5)
        assert h["lr"] == pytest.approx(1e-3 * min(1.0, b / 8))
        assert set(h) >= {"step", "beta", "total", "target", "pretrained", "lr", "grad_norm"}


def test_schedule_must_match_steps_and_be_valid():
    obj = ToyObjective(toy_data(), 16)
    with pytest.raises(ValueError, match="total_steps"):
        train(_model(), obj, _cfg(steps=10), schedule=make_schedule("linear", 1.0, 11))
    with pytest.raises(ValueError, match="beta"):
        train(_model(), obj, _cfg(steps=5), schedule=lambda k: 1.0 - k)
    with pytest.raises(TypeError, match="schedule"):
        train(_model(), obj, _cfg(steps=5), schedule=3.0)


def test_evaluate_runs_on_the_ema_model():
    calls = []

    def evaluate(model, step):
        calls.append((model, step, model.training))
        return {"metric": torch.tensor(float(step))}

    res = train(_model(), ToyObjective(toy_data(), 16), _cfg(steps=25, eval_every=10, log_every=5),
                evaluate=evaluate)
    assert [c[1] for c in calls] == [10, 20, 25]
    assert all(c[0] is res.ema_model and c[2] is False for c in calls)
    with_metric = [h for h in res.history if "metric" in h]
    assert [(h["step"], h["metric"]) for h in with_metric] == [(10, 10.0), (20, 20.0), (25, 25.0)]
    assert all("total" in h for h in with_metric)  # merged into the log entry of the same step

    res = train(_model(), ToyObjective(toy_data(), 16), _cfg(steps=4, eval_every=3, log_every=4),
                evaluate=lambda m, s: {"m": 1})
    assert [h["step"] for h in res.history] == [3, 4] and "total" not in res.history[0]

    with pytest.raises(TypeError, match="evaluate must return a dict"):
        train(_model(), ToyObjective(toy_data(), 16), _cfg(steps=2, eval_every=1), evaluate=lambda m, s: 1.0)


def test_bad_arguments_raise():
    obj = ToyObjective(toy_data(), 16)
    with pytest.raises(TypeError, match="model"):
        train(lambda x, t: x, obj, _cfg())
    with pytest.raises(TypeError, match="config"):
        train(_model(), obj, {"steps": 3})
    with pytest.raises(TypeError, match="loss"):
        train(_model(), object(), _cfg())
    with pytest.raises(TypeError, match="evaluate"):
        train(_model(), obj, _cfg(), evaluate=3)
    with pytest.raises(TypeError, match="fingerprint"):
        train(_model(), obj, _cfg(), fingerprint=[1, 2])
    frozen = _model().requires_grad_(False)
    with pytest.raises(ValueError, match="trainable"):
        train(frozen, obj, _cfg())


class _BadTerms:
    def __init__(self, total):
        self.total, self.target, self.pretrained = total, total, 0.0


class _BadObjective(ToyObjective):
    def __init__(self, kind):
        super().__init__(toy_data(), 8)
        self.kind = kind

    def loss(self, model, beta, generator):
        terms = super().loss(model, beta, generator)
        if self.kind == "vector":
            return _BadTerms(terms.total.repeat(3))
        return _BadTerms(terms.total.detach())


def test_objective_must_return_a_differentiable_scalar():
    with pytest.raises(ValueError, match="scalar"):
        train(_model(), _BadObjective("vector"), _cfg(steps=2))
    with pytest.raises(ValueError, match="require grad"):
        train(_model(), _BadObjective("detached"), _cfg(steps=2))


def test_bf16_autocast_trains_with_fp32_state():
    res = train(_model(), ToyObjective(toy_data(), 64), _cfg(steps=40, amp="bf16", lr=1e-2, log_every=20))
    assert all(p.dtype == torch.float32 for p in res.model.parameters())
    assert all(p.dtype == torch.float32 for p in res.ema_model.parameters())
    assert all(math.isfinite(h["total"]) for h in res.history)
    assert res.history[-1]["total"] < res.history[0]["total"]


def test_progress_bar_does_not_break_training(capsys):
    res = train(_model(), ToyObjective(toy_data(), 16), _cfg(steps=5, progress=True))
    assert res.history[-1]["step"] == 5


# ----------------------------------------------------------------------------------------- checkpoints
def test_checkpoint_rotation_latest_and_contents(tmp_path):
    ck = tmp_path / "ck"
    res = train(_model(), ToyObjective(toy_data(), 16),
                _cfg(steps=20, checkpoint_every=3, checkpoint_dir=ck, keep_checkpoints=2))
    files = C.list_checkpoints(ck)
    assert [f.name for f in files] == ["ckpt_00000018.pt", "ckpt_00000020.pt"]
    assert C.latest_checkpoint(ck) == files[-1] and res.last_checkpoint == str(files[-1])
    state = C.load_checkpoint(files[-1])
    assert state["step"] == 20 and state["format_version"] == C.FORMAT_VERSION
    assert {"model", "ema", "optimizer", "generator", "rng", "objective", "history", "config",
            "fingerprint", "beta"} <= set(state)
    assert {"python", "numpy", "torch"} <= set(state["rng"][0])
    for name, p in res.model.state_dict().items():
        assert torch.equal(state["model"][name], p)
    for name, p in res.ema_model.state_dict().items():
        assert torch.equal(state["ema"][name], p)
    assert state["objective"][0]["calls"] == 20
    assert [p.name for p in ck.glob(".*")] == [".gftlib.lock"]  # no temporary files, only the lock


def test_checkpoint_helpers_validate(tmp_path):
    assert C.latest_checkpoint(tmp_path / "missing") is None
    assert C.list_checkpoints(tmp_path) == []
    (tmp_path / "ckpt_12.pt").write_bytes(b"x")  # wrong pattern (8 digits required): ignored
    assert C.latest_checkpoint(tmp_path) is None
    with pytest.raises(FileNotFoundError, match="does not exist"):
        C.load_checkpoint(tmp_path / "nope.pt")
    torch.save({"a": 1}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="format_version"):
        C.load_checkpoint(tmp_path / "other.pt")
    torch.save({"format_version": 999}, tmp_path / "future.pt")
    with pytest.raises(ValueError, match="format_version 999"):
        C.load_checkpoint(tmp_path / "future.pt")
    with pytest.raises(ValueError, match="step"):
        C.save_checkpoint({}, tmp_path, -1)
    with pytest.raises(ValueError, match="keep"):
        C.save_checkpoint({}, tmp_path, 1, keep=0)
    with pytest.raises(TypeError, match="state"):
        C.save_checkpoint([1], tmp_path, 1)
    for step in (1, 2, 3):
        C.save_checkpoint({"v": step}, tmp_path, step, keep=2)
    assert [C.load_checkpoint(p)["v"] for p in C.list_checkpoints(tmp_path)] == [2, 3]
    stale = tmp_path / ".ckpt_00000004.pt.x1y2.tmp.pt"  # what a writer killed mid-write leaves
    stale.write_bytes(b"partial")
    (tmp_path / ".keep.tmp.pt").write_bytes(b"not ours")
    assert C.latest_checkpoint(tmp_path).name == "ckpt_00000003.pt"
    assert C.remove_stale_temporary_files(tmp_path) == 1
    assert not stale.exists() and (tmp_path / ".keep.tmp.pt").exists()
    assert C.remove_stale_temporary_files(tmp_path / "missing") == 0


def test_resume_after_crash_is_bit_exact_in_process(tmp_path):
    # Dropout uses the global torch RNG, so this also checks that the global RNG state is restored.
    data = toy_data()
    cfg = _cfg(steps=23, checkpoint_every=5, checkpoint_dir=tmp_path / "ck", warmup_steps=4,
               log_every=4)
    sched = make_schedule("cosine", 1.5, 23)
    ref = train(_model(dropout=0.2), ToyObjective(data, 32),
                _cfg(steps=23, warmup_steps=4, log_every=4), schedule=sched)
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(_model(dropout=0.2), ToyObjective(data, 32, fail_at=13), cfg, schedule=sched)
    assert C.latest_checkpoint(tmp_path / "ck").name == "ckpt_00000010.pt"
    torch.manual_seed(123)  # a different global RNG state before resuming must not matter
    obj = ToyObjective(data, 32)
    res = train(_model(seed=99, dropout=0.2), obj, cfg, schedule=sched)  # other init: weights are loaded
    assert res.resumed_from == 10 and obj.calls == 23
    for p, q in zip(res.model.parameters(), ref.model.parameters()):
        assert torch.equal(p, q)
    for p, q in zip(res.ema_model.parameters(), ref.ema_model.parameters()):
        assert torch.equal(p, q)
    assert res.history == ref.history

    # a finished run is not repeated: the final checkpoint is loaded, no step is taken
    obj = ToyObjective(data, 32)
    again = train(_model(seed=5, dropout=0.2), obj, cfg, schedule=sched)
    assert again.resumed_from == 23 and obj.calls == 23 and again.history == ref.history
    for p, q in zip(again.model.parameters(), ref.model.parameters()):
        assert torch.equal(p, q)


# ----------------------------------------------------------------------------------------- distributed
def test_distributed_helpers_single_process(monkeypatch):
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)
    ctx = D.init_from_env("cpu")
    assert (ctx.rank, ctx.world_size, ctx.backend, ctx.is_main) == (0, 1, None, True)
    assert not D.is_distributed() and D.is_main_process() and D.get_world_size() == 1
    m = _model()
    assert D.wrap_model(m) is m and D.unwrap_model(m) is m
    x = torch.tensor([1.0, 2.0])
    assert D.all_reduce_(x, "max") is x and x.tolist() == [1.0, 2.0]
    assert D.all_gather_objects({"a": 1}) == [{"a": 1}]
    D.barrier()
    D.cleanup()
    with pytest.raises(ValueError, match="op"):
        D.all_reduce_(x, "mean")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "5")
    with pytest.raises(ValueError, match="RANK"):
        D.init_from_env("cpu")
    monkeypatch.setenv("RANK", "x")
    with pytest.raises(ValueError, match="RANK"):
        D.init_from_env("cpu")


# ----------------------------------------------------------------------------------------- end to end
def test_gft_method_end_to_end_resume_is_exact(tmp_path):
    from gftlib.data.datasets import make_2d
    from gftlib.experiments.methods import build_method
    from gftlib.models import MLPVelocity

    from train_helpers import CrashAt

    data = make_2d("moons", 256, generator=torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    pretrained = MLPVelocity(2, hidden=32, depth=2, time_features=8)

    def run(crash_at=None, ckpt=None):
        spec = build_method("gft-coupling", target_data=data, pretrained_model=pretrained, batch_size=32,
                            steps=14, beta0=1.0, schedule_kind="linear", solver_steps=4, cache_size=64)
        model = MLPVelocity(2, hidden=32, depth=2, time_features=8)
        model.load_state_dict(pretrained.state_dict())
        obj = spec.objective if crash_at is None else CrashAt(spec.objective, crash_at)
        cfg = _cfg(steps=14, log_every=5, checkpoint_every=None if ckpt is None else 4, checkpoint_dir=ckpt)
        return train(model, obj, cfg, schedule=spec.schedule), spec

    ref, spec = run()
    assert [h["beta"] for h in ref.history] == [spec.schedule(k - 1) for k in (5, 10, 14)]
    assert ref.history[0]["pretrained"] > 0 and ref.history[-1]["beta"] == 0.0
    with pytest.raises(RuntimeError, match="simulated crash"):
        run(crash_at=11, ckpt=tmp_path)
    res, _ = run(ckpt=tmp_path)
    assert res.resumed_from == 8
    for p, q in zip(res.model.parameters(), ref.model.parameters()):
        assert torch.equal(p, q)
    assert res.history == ref.history


def test_cli_in_process(tmp_path, capsys):
    from gftlib.experiments import train_cli

    common = ["--task", "2d", "--steps", "4", "--batch-size", "16", "--n-data", "64", "--hidden", "16",
              "--device", "cpu", "--no-progress", "--log-every", "2"]
    out_a, hist = str(tmp_path / "a.pt"), str(tmp_path / "h.json")
    assert train_cli.main([*common, "--out", out_a, "--history", hist]) == 0
    a = torch.load(tmp_path / "a.pt", weights_only=True)
    assert a["format"] == train_cli.WEIGHTS_FORMAT and a["args"]["method"] == "scratch"
    assert [h["step"] for h in a["history"]] == [2, 4] and (tmp_path / "h.json").exists()
    assert _equal(train_cli.load_weights(tmp_path / "a.pt"), a["ema"])

    ft = [*common, "--method", "gft-coupling", "--pretrained", str(tmp_path / "a.pt"), "--beta0", "2",
          "--schedule", "linear", "--checkpoint-dir", str(tmp_path / "ck")]
    assert train_cli.main([*ft, "--out", str(tmp_path / "b.pt")]) == 0
    b = torch.load(tmp_path / "b.pt", weights_only=True)
    assert [h["beta"] for h in b["history"]] == [2.0 * (1 - 1 / 3), 0.0]
    with pytest.raises(ValueError, match="cannot resume.*method"):
        train_cli.main([*ft, "--method", "gft-drift"])
    with pytest.raises(ValueError, match="neither"):
        train_cli.load_weights(_bad_file(tmp_path))


def test_cli_images_task_runs(tmp_path):
    from gftlib.experiments import train_cli

    assert train_cli.main(["--task", "images", "--steps", "2", "--batch-size", "4", "--n-data", "8",
                           "--device", "cpu", "--no-progress", "--out", str(tmp_path / "u.pt")]) == 0
    u = torch.load(tmp_path / "u.pt", weights_only=True)
    assert len(u["history"]) == 1 and math.isfinite(u["history"][0]["total"])


def _equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _bad_file(tmp_path: Path) -> Path:
    path = tmp_path / "bad.pt"
    torch.save({"model": 3}, path)
    return path
