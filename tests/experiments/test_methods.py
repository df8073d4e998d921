"""Tests of gftlib.experiments.methods: every method builds and trains one step; method semantics."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from scipy.optimize import linear_sum_assignment

from gftlib.theory.analytic import GaussianMixture, GaussianMixturePath
from gftlib.paths.couplings import ExactOTCoupling, IndependentCoupling, squared_cost_matrix
from gftlib.experiments.methods import METHOD_DESCRIPTIONS, METHODS, MethodSpec, build_method
from gftlib.paths.interpolants import PathSample
from gftlib.losses import DriftBatch
from gftlib.models import MLPVelocity
from gftlib.gft.objective import FlowMatchingObjective, Objective
from gftlib.gft.coupling_cache import PretrainedCouplingCache
from gftlib.gft.drift_cache import PretrainedDriftCache
from gftlib.gft.reflow import ReflowObjective
from gftlib.gft.regularizer import TargetPathRegularizer
from gftlib.training.config import TrainConfig
from gftlib.training.loop import train

torch.set_num_threads(1)

MEAN = torch.tensor([2.0, -1.0])
STD = 0.5


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def tiny_problem(n: int = 64):
    data = torch.randn(n, 2, generator=gen(1)) * 0.3 + torch.tensor([1.0, 1.0])
    torch.manual_seed(0)  # MLP init only
    pretrained = MLPVelocity(2, hidden=16, depth=2, time_features=8)
    return data, pretrained


def rounding_bound(model: torch.nn.Module, data: torch.Tensor, ulps: int = 64) -> float:
    """Largest mean squared difference of two float32 evaluations of ``model`` that differ only by rounding.

    Each output component may move by ``ulps`` units of float32 roundoff of the largest output magnitude
    seen on ``data`` (shifted towards noise too) at times in [0, 1]; the squared norm sums ``d`` of them.
    """
    eps = torch.finfo(torch.float32).eps
    points = torch.cat([data, torch.randn(data.shape, generator=gen(7)), torch.zeros_like(data)])
    with torch.no_grad():
        scale = max(float(model(points, torch.full((len(points),), t)).abs().max()) for t in torch.linspace(0, 1, 11))
    return data.shape[1] * (ulps * eps * max(scale, 1.0)) ** 2


def analytic_pretrained():
    path = GaussianMixturePath(GaussianMixture(weights=[1.0], means=[MEAN.tolist()], stds=[STD]))
    return lambda x, t: path.velocity(x, t).to(x.dtype)


SMALL = dict(batch_size=8, steps=10, cache_size=32, n_trajectories=8, time_grid=4, solver_steps=4,
             device="cpu")

EXPECTED = {
    # name: (init_from_pretrained, has schedule, coupling type, pretrained term type)
    "scratch": (False, False, IndependentCoupling, type(None)),
    "ft": (True, False, IndependentCoupling, type(None)),
    "ft-ot": (True, False, ExactOTCoupling, type(None)),
    "l2-reg": (True, True, ExactOTCoupling, TargetPathRegularizer),
    "gft-drift": (True, True, ExactOTCoupling, PretrainedDriftCache),
    "gft-coupling": (True, True, ExactOTCoupling, PretrainedCouplingCache),
}


def test_method_names():
    assert METHODS == ("scratch", "ft", "ft-ot", "l2-reg", "gft-drift", "gft-coupling", "reflow")
    assert set(METHOD_DESCRIPTIONS) == set(METHODS)


@pytest.mark.parametrize("name", METHODS)
def test_every_method_builds_and_takes_a_loss_step(name):
    data, pretrained = tiny_problem()
    spec = build_method(name, target_data=data, pretrained_model=None if name == "scratch" else pretrained,
                        beta0=2.0, **SMALL)
    assert isinstance(spec, MethodSpec) and spec.name == name and spec.description
    assert isinstance(spec.objective, Objective)
    init, has_schedule, coupling, term = EXPECTED.get(name, (True, False, None, None))
    assert spec.init_from_pretrained is init
    assert (spec.schedule is not None) is has_schedule
    if has_schedule:
        assert spec.schedule.kind == "cosine" and spec.schedule.total_steps == 10
        assert spec.schedule(0) == 2.0 and spec.schedule(9) == 0.0
    if name == "reflow":
        assert isinstance(spec.objective, ReflowObjective)
    else:
        assert isinstance(spec.objective, FlowMatchingObjective)
        assert isinstance(spec.objective.coupling, coupling)
        assert isinstance(spec.objective.pretrained, term)

    model = copy.deepcopy(pretrained) if spec.init_from_pretrained else MLPVelocity(2, hidden=16, depth=2,
                                                                                   time_features=8)
    beta = spec.schedule(0) if spec.schedule is not None else 0.0
    terms = spec.objective.loss(model, beta, gen(2))
    terms.total.backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and bool(torch.isfinite(g).all()) for g in grads)
    assert sum(float(g.abs().sum()) for g in grads) > 0
    if term in (TargetPathRegularizer, PretrainedDriftCache):
        # the model starts at the pretrained weights, so the drift-form / L2 term is 0 there up to float32
        # rounding: the two evaluations may see different batch shapes, hence different GEMM blockings
        # (AVX2 vs AVX-512 kernels differ in the last bits), so each output agrees to a few ulp of its scale
        assert 0.0 <= float(terms.pretrained.detach()) <= rounding_bound(pretrained, data)
    elif term is PretrainedCouplingCache:
        assert float(terms.pretrained.detach()) > 0  # conditional targets have positive variance
    if term not in (None, type(None)):
        torch.testing.assert_close(terms.total, (terms.target + beta * terms.pretrained) / (1 + beta))
    # the frozen pretrained copy receives no gradient and is independent of the original
    frozen = getattr(getattr(spec.objective, "pretrained", None), "field", None)
    if name == "reflow":
        frozen = spec.objective.cache.field
    if frozen is not None:
        assert frozen is not pretrained and not frozen.training
        assert all(p.grad is None and not p.requires_grad for p in frozen.parameters())


def test_l2_reg_uses_the_gft_schedule():
    data, pretrained = tiny_problem()
    kw = dict(target_data=data, pretrained_model=pretrained, schedule_kind="step",
              schedule_options={"n_stages": 3}, beta0=3.0, **SMALL)
    a, b = build_method("l2-reg", **kw), build_method("gft-coupling", **kw)
    np.testing.assert_array_equal(a.schedule.values(), b.schedule.values())
    assert a.schedule.kind == "step"


def test_ft_ot_pairs_are_optimal_assignments():
    data, pretrained = tiny_problem()
    spec = build_method("ft-ot", target_data=data, pretrained_model=pretrained, **{**SMALL, "batch_size": 16})
    path = spec.objective.sample_batch(0.0, gen(3)).target
    cost = squared_cost_matrix(path.x0, path.x1)
    rows, cols = linear_sum_assignment(cost)
    np.testing.assert_allclose(np.trace(cost), cost[rows, cols].sum(), rtol=1e-10)


@pytest.mark.parametrize("name", ["gft-coupling", "reflow"])
def test_cached_pairs_come_from_the_pretrained_flow(name):
    data, _ = tiny_problem()
    spec = build_method(name, target_data=data, pretrained_model=analytic_pretrained(), solver_method="rk4",
                        **{**SMALL, "solver_steps": 16})
    batch = spec.objective.sample_batch(1.0 if name == "gft-coupling" else 0.0, gen(4))
    pairs = batch.pretrained if name == "gft-coupling" else batch.target
    assert isinstance(pairs, PathSample)
    # closed-form ODE map of the Gaussian pretrained law: x0 -> MEAN + STD x0 (RK4 error ~1e-5)
    torch.testing.assert_close(pairs.x1, MEAN + STD * pairs.x0, atol=1e-3, rtol=0)


@pytest.mark.parametrize("name", ["gft-coupling", "reflow", "gft-drift"])
def test_diffusion_gives_every_cache_the_sde_drift(name):
    """build_method(diffusion=g > 0): the one pretrained field is the SDE drift for g, and each
    cache simulates it by Euler–Maruyama (pairs' x1 ~ p_pre, not the ODE of the drift); other
    solver methods are refused with a clear error."""
    from gftlib.paths.interpolants import Interpolant
    from scipy import stats as st

    g = 0.8
    path = GaussianMixturePath(GaussianMixture(weights=[1.0], means=[MEAN.tolist()], stds=[STD]), sigma=g)
    drift = lambda x, t: path.drift(x, t, g).to(x.dtype)  # noqa: E731
    data, _ = tiny_problem()
    n = 2000
    kw = {**SMALL, "cache_size": n, "solver_steps": 100, "n_trajectories": 8}
    spec = build_method(name, target_data=data, pretrained_model=drift, interpolant=Interpolant(g),
                        diffusion=g, **kw)
    cache = spec.objective.pretrained if name != "reflow" else spec.objective.cache
    assert cache.diffusion == g
    if name != "gft-drift":
        x1 = cache.pairs[1].double()
        ks = max(st.kstest(x1[:, i].numpy(), "norm", args=(float(MEAN[i]), STD)).statistic for i in range(2))
        assert ks <= 1.95 / n**0.5 + 0.02  # KS critical value (level 1e-3) + O(h) weak error
    with pytest.raises(ValueError, match="solver_method must be 'euler', got 'rk4'"):
        build_method(name, target_data=data, pretrained_model=drift, interpolant=Interpolant(g),
                     diffusion=g, solver_method="rk4", **SMALL)


def test_gft_drift_batch_is_the_frozen_drift():
    data, pretrained = tiny_problem()
    spec = build_method("gft-drift", target_data=data, pretrained_model=pretrained, **SMALL)
    pre = spec.objective.sample_batch(1.0, gen(5)).pretrained
    assert isinstance(pre, DriftBatch)
    with torch.no_grad():
        torch.testing.assert_close(pre.target, pretrained(pre.x, pre.t), atol=1e-6, rtol=1e-5)


def test_gft_drift_time_jitter_reaches_the_cache():
    data, pretrained = tiny_problem()
    plain = build_method("gft-drift", target_data=data, pretrained_model=pretrained, **SMALL)
    jit = build_method("gft-drift", target_data=data, pretrained_model=pretrained, time_jitter=True, **SMALL)
    assert plain.objective.pretrained.jitter is False and jit.objective.pretrained.jitter is True
    t_plain = plain.objective.pretrained.prepare().times
    t_jit = jit.objective.pretrained.prepare().times
    assert t_plain.shape == t_jit.shape and not torch.equal(t_plain, t_jit)


def test_build_method_rejects_bad_input():
    data, pretrained = tiny_problem()
    kw = dict(target_data=data, pretrained_model=pretrained, **SMALL)
    with pytest.raises(ValueError, match="name must be one of 'scratch', 'ft', 'ft-ot'"):
        build_method("gft", **kw)
    with pytest.raises(ValueError, match="needs pretrained_model"):
        build_method("ft", **{**kw, "pretrained_model": None})
    with pytest.raises(TypeError, match="pretrained_model must be an nn.Module or a callable"):
        build_method("ft", **{**kw, "pretrained_model": 3})
    with pytest.raises(ValueError, match="beta0"):
        build_method("gft-drift", beta0=-1.0, **kw)
    with pytest.raises(ValueError, match="kind must be one of"):
        build_method("gft-drift", schedule_kind="warm", **kw)
    with pytest.raises(ValueError, match="does not apply"):
        build_method("gft-drift", schedule_options={"rate": 2.0}, **kw)
    with pytest.raises(ValueError, match="coupling must be one of"):
        build_method("gft-coupling", target_coupling="nearest", **kw)
    with pytest.raises(ValueError, match="cache_size"):
        build_method("gft-coupling", **{**kw, "cache_size": 0})
    with pytest.raises(ValueError, match="steps"):
        build_method("ft", **{**kw, "steps": 0})
    reflow = build_method("reflow", **kw)
    with pytest.raises(ValueError, match="beta must be 0"):
        reflow.objective.loss(copy.deepcopy(pretrained), 0.5, gen())


def test_training_resumes_bit_for_bit_with_cached_pretrained_term(tmp_path):
    """Interrupt a gft-drift run (cache refreshes every 2 pretrained batches) after its step-3
    checkpoint and resume: the result equals the uninterrupted run exactly (CPU)."""
    data, pretrained = tiny_problem()

    def run(ckpt_dir, evaluate=None):
        spec = build_method("gft-drift", target_data=data, pretrained_model=pretrained, refresh_every=2,
                            **{**SMALL, "steps": 6})
        cfg = TrainConfig(steps=6, lr=1e-2, log_every=1, checkpoint_every=3, checkpoint_dir=str(ckpt_dir),
                          eval_every=4, device="cpu", progress=False, seed=1)
        return train(copy.deepcopy(pretrained), spec.objective, cfg, schedule=spec.schedule,
                     evaluate=evaluate or (lambda m, k: {}))

    full = run(tmp_path / "full")

    def crash(model, step):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "cut", evaluate=crash)
    resumed = run(tmp_path / "cut")
    assert resumed.resumed_from == 3
    for p, q in zip(full.model.parameters(), resumed.model.parameters()):
        assert torch.equal(p, q)
