"""Wall time of training at each evaluation (gftlib.experiments.walltime, run_method, the runner).

No real clock is raced: the module's clock is a fake one whose time moves only when a test says so
(a forward pass of the network "takes" 1 s, an evaluation 100 s), so every expected number is exact.
"""

from __future__ import annotations

import copy
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

import gftlib.experiments.walltime as W
from gftlib.experiments import methods as M
from gftlib.experiments.tasks.runner import timing_fields
from gftlib.models import MLPVelocity
from gftlib.training.config import TrainConfig

torch.set_num_threads(1)

FORWARD, EVALUATION = 1.0, 100.0


class FakeTime:
    """Stands in for the ``time`` module inside gftlib.experiments.walltime."""

    def __init__(self) -> None:
        self.now = 1000.0

    def perf_counter(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch) -> FakeTime:
    fake = FakeTime()
    monkeypatch.setattr(W, "time", fake)
    return fake


def test_clock_excludes_evaluations_and_records_each_one(clock) -> None:
    run = W.RunClock()
    clock.now += 3.0  # building the method
    run.mark_setup()

    def evaluate(model, step):
        clock.now += EVALUATION + step  # evaluations of different lengths
        return {"q": float(step)}

    timed = run.timed(evaluate)
    assert timed(None, 0) == {"q": 0.0}
    clock.now += 5.0  # training
    timed(None, 10)
    clock.now += 7.0
    timed(None, 20)
    clock.now += 1.0  # after the last evaluation
    t = run.finish()
    assert t.steps.tolist() == [0, 10, 20]
    assert t.seconds.tolist() == [3.0, 8.0, 15.0]
    assert t.durations.tolist() == [100.0, 110.0, 120.0] and t.evaluation_seconds == 330.0
    assert t.setup_seconds == 3.0 and t.train_seconds == 16.0
    assert t.at([20, 0]).tolist() == [15.0, 3.0]
    with pytest.raises(ValueError, match=r"steps must be evaluated steps of the run \[0, 10, 20\], got \[5\]"):
        t.at([0, 5])


def test_an_evaluation_that_raises_is_still_timed(clock) -> None:
    run = W.RunClock()

    def broken(model, step):
        clock.now += EVALUATION
        raise RuntimeError("evaluation failed")

    with pytest.raises(RuntimeError, match="evaluation failed"):
        run.timed(broken)(None, 0)
    clock.now += 2.0
    assert run.training_seconds() == 2.0


# ------------------------------------------------------------------------ run_method, fake clock
def _ticking_problem(clock: FakeTime, state: dict):
    """Target data and a pretrained MLP whose every forward pass advances the fake clock by 1 s
    (the class closes over ``clock``, so deep copies (EMA, frozen network) tick the same clock)."""

    class Ticking(nn.Module):
        def __init__(self, net: nn.Module) -> None:
            super().__init__()
            self.net = net

        def forward(self, x, t):
            clock.now += FORWARD
            if not state["inside"]:
                state["outside"] += FORWARD
            return self.net(x, t)

    data = torch.randn(64, 2, generator=torch.Generator().manual_seed(1)) * 0.3 + 1.0
    torch.manual_seed(0)
    return data, Ticking(MLPVelocity(2, hidden=8, depth=2, time_features=4))


def _run(method: str, clock: FakeTime, state: dict, **options):
    data, pretrained = _ticking_problem(clock, state)
    expected: list[float] = []  # training seconds (forwards outside evaluations) at each evaluation

    def evaluate(model, step):
        state["inside"] = True
        expected.append(state["outside"])
        clock.now += EVALUATION
        model(data[:4], torch.full((4,), 0.5))  # the evaluation's own forwards are excluded too
        state["inside"] = False
        return {"q": float(step)}

    cfg = TrainConfig(steps=6, lr=1e-2, log_every=2, eval_every=2, device="cpu", progress=False, seed=0)
    run = M.run_method(method, target_data=data, pretrained_model=pretrained,
                       new_model=lambda: copy.deepcopy(pretrained), evaluate=evaluate, eval_key="q",
                       train_config=cfg, device=torch.device("cpu"), batch_size=8, steps=6, cache_size=32,
                       n_trajectories=8, time_grid=4, solver_steps=4, **options)
    return run, expected


@pytest.mark.parametrize("method", ["ft", "gft-coupling", "gft-drift", "reflow"])
def test_run_method_times_training_only(clock, method) -> None:
    state = {"inside": False, "outside": 0.0}
    run, expected = _run(method, clock, state)
    t = run.timing
    assert t.steps.tolist() == [0, 2, 4, 6] == [r["step"] for r in run.evals]
    assert t.seconds.tolist() == expected  # exactly the training forwards before each evaluation
    assert t.durations.tolist() == [EVALUATION + FORWARD] * 4
    assert t.setup_seconds == expected[0] and t.train_seconds == state["outside"]
    forwards_per_step = (expected[2] - expected[1]) / 2
    assert expected[3] - expected[2] == 2 * forwards_per_step  # the same work per update
    if method == "ft":
        assert t.setup_seconds == 0.0  # nothing to build before the first update
    else:  # the pretrained-term cache is built (and paid) before step 0, not in the first update
        assert t.setup_seconds > 0.0
        assert expected[1] == 2 * forwards_per_step + expected[0]


@pytest.mark.parametrize("method", ["gft-coupling", "gft-drift", "reflow"])
def test_building_the_cache_before_step_0_changes_no_number(monkeypatch, method) -> None:
    """The first-update caches are built eagerly (run_method); the lazy build gives the same run."""
    def run_once():
        data = torch.randn(64, 2, generator=torch.Generator().manual_seed(1)) * 0.3 + 1.0
        torch.manual_seed(0)
        pre = MLPVelocity(2, hidden=8, depth=2, time_features=4)
        cfg = TrainConfig(steps=6, lr=1e-2, log_every=1, eval_every=3, device="cpu", progress=False, seed=0)
        ev = lambda m, s: {"q": float(sum(p.detach().sum() for p in m.parameters()))}  # noqa: E731
        return M.run_method(method, target_data=data, pretrained_model=pre, new_model=lambda: None,
                            evaluate=ev, eval_key="q", train_config=cfg, device=torch.device("cpu"),
                            batch_size=8, steps=6, cache_size=32, n_trajectories=8, time_grid=4,
                            solver_steps=4, time_jitter=True)

    eager = run_once()
    monkeypatch.setattr(M, "first_update_caches", lambda spec: [])
    lazy = run_once()
    assert [r["q"] for r in eager.evals] == [r["q"] for r in lazy.evals]
    assert [r["total"] for r in eager.logs] == [r["total"] for r in lazy.logs]
    for p, q in zip(eager.result.ema_model.parameters(), lazy.result.ema_model.parameters()):
        assert torch.equal(p, q)


def test_first_update_caches_only_when_the_first_update_uses_them() -> None:
    data = torch.randn(16, 2, generator=torch.Generator().manual_seed(1))
    pre = MLPVelocity(2, hidden=8, depth=2, time_features=4)
    kw = dict(target_data=data, pretrained_model=pre, batch_size=8, steps=4, cache_size=8, n_trajectories=4,
              time_grid=2, solver_steps=2, device="cpu")
    assert M.first_update_caches(M.build_method("ft-ot", **kw)) == []
    assert M.first_update_caches(M.build_method("l2-reg", **kw)) == []  # no cache: the target path
    spec = M.build_method("gft-coupling", **kw)
    assert M.first_update_caches(spec) == [spec.objective.pretrained]
    spec = M.build_method("reflow", **kw)
    assert M.first_update_caches(spec) == [spec.objective.cache]
    # beta0 = 0: the pretrained batch is never drawn at the first update, so nothing is built early
    assert M.first_update_caches(M.build_method("gft-drift", beta0=0.0, **kw)) == []


# ------------------------------------------------------------------------ the runner's record
def _method_run(steps, seconds):
    timing = W.RunTiming(steps=np.asarray(steps), seconds=np.asarray(seconds, float),
                         durations=np.ones(len(steps)), setup_seconds=0.5, train_seconds=9.0)
    return SimpleNamespace(evals=[{"step": s, "q": 1.0} for s in steps], timing=timing)


def test_timing_fields_align_with_the_evaluation_rows() -> None:
    run = _method_run([0, 5, 10], [0.5, 4.0, 8.5])
    f = timing_fields(run)
    assert f["train_seconds_at_eval"].tolist() == [0.5, 4.0, 8.5]
    assert (f["setup_seconds"], f["train_seconds"], f["evaluation_seconds"]) == (0.5, 9.0, 3.0)
    # a task that keeps only some rows (the scenarios keep the rows with a W2) gets their seconds
    assert timing_fields(run, [{"step": 10}, {"step": 5}])["train_seconds_at_eval"].tolist() == [8.5, 4.0]
    with pytest.raises(ValueError, match="steps must be evaluated steps"):
        timing_fields(run, [{"step": 3}])
