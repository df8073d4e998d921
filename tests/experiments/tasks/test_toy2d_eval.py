"""Evaluation helpers of the 2-D task (gftlib.experiments.tasks.toy2d_eval)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from gftlib.data.datasets import make_2d
from gftlib.eval.metrics import wasserstein2
from gftlib.eval.stability import early_degradation, max_upward_jump
from gftlib.experiments.checks import Z_999, difference_margin, gain_is_resolvable
from gftlib.experiments.tasks import toy2d as T2
from gftlib.experiments.tasks import toy2d_eval as T2E

TINY = dict(n_target=64, n_target_pool=128, n_heldout=64, n_eval=64, n_source=256, hidden=8, depth=2,
            time_features=4, pretrain_steps=15, pretrain_batch=32, eval_steps=4)


def tiny_task(**kw) -> T2.Task2D:
    return T2.Task2D(**{**TINY, **kw})


class LinearField(nn.Module):
    """b(x, t) = a x: the ODE solution is x0 exp(a t); Euler with N steps gives x0 (1 + a/N)^N."""

    def __init__(self, a: float) -> None:
        super().__init__()
        self.a = a

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.a * x


# ------------------------------------------------------------------------------------------ metrics
def test_max_upward_jump_and_early_degradation() -> None:
    assert max_upward_jump([3.0, 2.0, 1.0]) == 0.0
    assert max_upward_jump([1.0, 0.5, 0.9, 0.7, 1.0]) == pytest.approx(0.4)
    steps = [0, 10, 20, 30, 40, 100]
    assert early_degradation(steps, [1.0, 1.2, 0.9, 1.5, 2.0, 0.1]) == pytest.approx(0.2)  # steps <= 25
    assert early_degradation(steps, [1.0, 1.2, 0.9, 1.5, 2.0, 0.1], fraction=0.3) == pytest.approx(0.5)
    assert early_degradation(steps, [1.0, 0.8, 0.7, 0.6, 0.5, 0.1]) == pytest.approx(-0.2)
    # no evaluation inside the window: the first one after 0 is used
    assert early_degradation([0, 50, 100], [1.0, 1.3, 0.2], fraction=0.25) == pytest.approx(0.3)
    with pytest.raises(ValueError, match="steps must start at 0"):
        early_degradation([1, 2], [1.0, 2.0])
    with pytest.raises(ValueError, match="at least 2 finite numbers"):
        max_upward_jump([1.0])
    with pytest.raises(ValueError, match="fraction must be a finite number > 0 and < 1"):
        early_degradation([0, 1], [1.0, 2.0], fraction=1.0)


def _fake_run(w2, seed=0) -> T2.FinetuneRun:
    n = len(w2)
    z = np.zeros(n)
    return T2.FinetuneRun(method="ft", seed=seed, eval_steps=np.arange(n) * 10, w2=np.asarray(w2, float),
                          path_length=z, straightness=z, dopri_steps=z[:1], dopri_nfe=z[:1], dopri_w2=z[:1],
                          log_steps=z, beta=z, loss_total=z, loss_target=z, loss_pretrained=z,
                          schedule_final_beta=None, train_seconds_at_eval=np.arange(n) * 1.0, setup_seconds=0.0,
                          train_seconds=float(n), evaluation_seconds=0.0, ema_state={})


def test_stability_spread_is_mean_across_seed_std() -> None:
    curves = np.array([[1.0, 0.8, 0.9, 0.5], [1.0, 0.6, 0.7, 0.6], [1.0, 0.7, 0.4, 0.4]])
    st = T2E.stability([_fake_run(c, i) for i, c in enumerate(curves)])
    assert st.seed_spread == pytest.approx(curves[:, 1:].std(axis=0, ddof=1).mean())
    assert st.max_jump.tolist() == pytest.approx([0.1, 0.1, 0.0])
    assert T2E.stability([_fake_run(curves[0])]).seed_spread == 0.0
    with pytest.raises(ValueError, match="at least one FinetuneRun"):
        T2E.stability([])


def test_nfe_to_reach() -> None:
    c = T2E.QualityCurve(euler_steps=np.array([1, 2, 4, 8]), euler_w2=np.array([0.9, 0.5, 0.3, 0.31]),
                        euler_path_length=np.zeros(4), euler_error=np.zeros(4), dopri_nfe=20, dopri_w2=0.3)
    assert T2E.nfe_to_reach(c, 0.5) == 2.0
    assert T2E.nfe_to_reach(c, 0.305) == 4.0
    assert math.isinf(T2E.nfe_to_reach(c, 0.1))


def test_coverage_against_brute_force() -> None:
    g = torch.Generator().manual_seed(0)
    ref = torch.randn(80, 2, generator=g)
    smp = torch.randn(60, 2, generator=g) + 0.5
    k = 3
    expected = 0.0
    for i in range(ref.shape[0]):
        dists = sorted(float((ref[i] - ref[j]).norm()) for j in range(ref.shape[0]) if j != i)
        radius = dists[k - 1]
        expected += any(float((ref[i] - s).norm()) <= radius for s in smp)
    assert T2E.coverage(smp, ref, k=k) == pytest.approx(expected / ref.shape[0])
    assert T2E.coverage(ref, ref) == 1.0
    assert T2E.coverage(ref + 100.0, ref) == 0.0
    with pytest.raises(ValueError, match="more than k=5 points"):
        T2E.coverage(smp, ref[:5])


def test_quality_vs_nfe_euler_error_matches_closed_form() -> None:
    task = tiny_task()
    a = -0.7
    curve = T2E.quality_vs_nfe(task, LinearField(a), euler_steps=(1, 2, 8, 32))
    x0 = task.eval_noise().double()
    mean_norm = float(x0.norm(dim=1).mean())
    for n, err in zip(curve.euler_steps, curve.euler_error):
        exact = abs(math.exp(a) - (1 + a / n) ** n) * mean_norm
        assert err == pytest.approx(exact, rel=1e-3, abs=1e-5)
    # W2 of Euler samples against the held-out set, recomputed directly
    x1 = x0.float() * (1 + a) ** 1
    assert curve.euler_w2[0] == pytest.approx(wasserstein2(x1, task.target_heldout()), rel=1e-5)
    # path length of the one-step Euler path is |a x0|
    assert curve.euler_path_length[0] == pytest.approx(abs(a) * mean_norm, rel=1e-5)


def test_margins_and_jensen_bound() -> None:
    ref = T2E.W2Reference(floor=0.2, floor_se=0.03, source_floor=0.2, source_floor_se=0.03, source_target=0.7,
                          pretrained_target=0.65, pretrained_source=0.25)
    margin = difference_margin(ref.floor_se)
    assert margin == Z_999 * math.sqrt(2) * 0.03 and Z_999 == pytest.approx(3.090232306)
    assert gain_is_resolvable(ref.pretrained_target - ref.floor, margin)  # 0.45 > 2 x 0.131
    assert not gain_is_resolvable(0.25 - ref.floor, margin)
    task = tiny_task()
    x0, x1 = task.eval_noise().double(), task.target_train().double()
    brute = np.mean([[float((a - b).norm()) for b in x1] for a in x0])
    assert T2E.independent_coupling_distance(task) == pytest.approx(brute, rel=1e-9)


def test_w2_floors_draw_target_then_source_samples() -> None:
    task = tiny_task()
    gen = lambda: torch.Generator().manual_seed(5)  # noqa: E731
    shared = T2E.w2_floors(task, 3, g := gen(), g)
    g2 = gen()
    tgt = [make_2d(task.target, task.n_eval, generator=g2) for _ in range(3)]
    src = [make_2d(task.source, task.n_eval, generator=g2) for _ in range(3)]
    w_t = [wasserstein2(x, task.target_heldout()) for x in tgt]
    assert shared["floor"] == float(np.mean(w_t)) and shared["floor_se"] == float(np.std(w_t, ddof=1))
    assert shared["source_target"] == wasserstein2(src[0], task.target_heldout())
    apart = T2E.w2_floors(task, 3, gen(), gen())  # the source stream restarts: other source samples
    assert apart["floor"] == shared["floor"] and apart["source_floor"] != shared["source_floor"]
