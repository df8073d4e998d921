"""Tests for gftlib.paths.couplings against POT's exact OT and the Sinkhorn plan."""

from __future__ import annotations

import itertools
import math

import numpy as np
import ot
import pytest
import torch

from gftlib.paths.couplings import (
    COUPLINGS,
    CoupledBatch,
    ExactOTCoupling,
    IndependentCoupling,
    SinkhornCoupling,
    make_coupling,
    ot_permutation,
    squared_cost_matrix,
)

F64 = torch.float64


pytestmark = pytest.mark.usefixtures("single_thread")


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _batches(shape, seed=0, shift=2.0):
    g = _gen(seed)
    return torch.randn(shape, generator=g, dtype=F64), shift + 1.5 * torch.randn(shape, generator=g, dtype=F64)


def _mean_cost(x0, x1):
    return float((x0 - x1).reshape(x0.shape[0], -1).pow(2).sum(1).mean())


def _emd_mean_cost(x0, x1):
    n = x0.shape[0]
    w = np.full(n, 1.0 / n)
    return float(ot.emd2(w, w, squared_cost_matrix(x0, x1)))


def _is_perm(index, n):
    return sorted(index.tolist()) == list(range(n))


def test_cost_matrix_matches_direct():
    x0, x1 = _batches((7, 2, 3, 3), seed=1)
    c = squared_cost_matrix(x0, x1)
    direct = ((x0.reshape(7, 1, -1) - x1.reshape(1, 7, -1)) ** 2).sum(-1).numpy()
    # GEMM-form round-off bound: 4 d eps (|a_i|^2 + |b_j|^2) for the centred rows
    a, b = x0.reshape(7, -1), x1.reshape(7, -1)
    centre = torch.cat([a, b]).mean(0)
    bound = 4 * a.shape[1] * np.finfo(np.float64).eps * (
        ((a - centre) ** 2).sum(1)[:, None] + ((b - centre) ** 2).sum(1)[None, :]).numpy()
    assert (np.abs(c - direct) <= bound).all()
    assert (c >= 0).all()


def test_cost_matrix_far_from_origin_keeps_precision():
    # a common offset of 1e6 would wipe out the uncentred GEMM form (|a|^2 ~ 1e13 * d); centring
    # makes the result independent of the offset up to the same round-off bound
    x0, x1 = _batches((9, 4), seed=11)
    c = squared_cost_matrix(x0 + 1e6, x1 + 1e6)
    direct = ((x0.reshape(9, 1, -1) - x1.reshape(1, 9, -1)) ** 2).sum(-1).numpy()
    np.testing.assert_allclose(c, direct, rtol=0, atol=1e-6)


@pytest.mark.parametrize("shape", [(64, 2), (40, 5), (32, 3, 4, 4)])
def test_exact_ot_is_permutation_with_pot_optimal_cost(shape):
    x0, x1 = _batches(shape, seed=2)
    cb = ExactOTCoupling()(x0, x1)
    assert isinstance(cb, CoupledBatch)
    n = shape[0]
    assert _is_perm(cb.index, n)
    assert torch.equal(cb.x0, x0) and torch.equal(cb.x1, x1[cb.index])
    ours = _mean_cost(cb.x0, cb.x1)
    ref = _emd_mean_cost(x0, x1)
    assert abs(ours - ref) <= 1e-6 * ref
    # independent pairing cannot beat the optimum
    ind = IndependentCoupling()(x0, x1, generator=_gen(3))
    assert _mean_cost(ind.x0, ind.x1) >= ours - 1e-12


def test_exact_ot_matches_brute_force():
    x0, x1 = _batches((6, 2), seed=4)
    c = squared_cost_matrix(x0, x1)
    best = min(sum(c[i, p[i]] for i in range(6)) for p in itertools.permutations(range(6)))
    perm = ot_permutation(x0, x1)
    assert abs(sum(c[i, int(perm[i])] for i in range(6)) - best) <= 1e-12 * best


def test_exact_ot_identity_on_identical_sets():
    x0, _ = _batches((20, 3), seed=5)
    shuffle = torch.randperm(20, generator=_gen(6))
    perm = ot_permutation(x0, x0[shuffle])
    # x1[perm[i]] == x0[i]
    torch.testing.assert_close(x0[shuffle][perm], x0, rtol=0, atol=0)


def test_float32_and_dtype_preserved():
    x0, x1 = (v.float() for v in _batches((16, 3), seed=7))
    for name in COUPLINGS:
        cb = make_coupling(name)(x0, x1, generator=_gen(8))
        assert cb.x0.dtype == torch.float32 and cb.x1.dtype == torch.float32
        assert cb.index.dtype == torch.long


def test_independent_is_uniform_permutation_and_reproducible():
    x0, x1 = _batches((4, 2), seed=9)
    coup = IndependentCoupling()
    a = coup(x0, x1, generator=_gen(10))
    b = coup(x0, x1, generator=_gen(10))
    assert torch.equal(a.index, b.index) and _is_perm(a.index, 4)
    g = _gen(11)
    draws = 4000
    counts = torch.zeros(4, 4)
    for _ in range(draws):
        idx = coup(x0, x1, generator=g).index
        counts[torch.arange(4), idx] += 1
    freq = counts / draws
    se = math.sqrt(0.25 * 0.75 / draws)
    assert float((freq - 0.25).abs().max()) < 5 * se


def test_sinkhorn_each_source_once_and_pairs_follow_the_plan():
    x0, x1 = _batches((5, 2), seed=12)
    coup = SinkhornCoupling(reg=0.3, method="sinkhorn")
    plan = coup.plan(x0, x1)
    np.testing.assert_allclose(plan.sum(1), np.full(5, 0.2), atol=1e-8)
    np.testing.assert_allclose(plan.sum(0), np.full(5, 0.2), atol=1e-8)
    # the plan agrees with POT's log-domain solver called directly on the normalised cost
    c = squared_cost_matrix(x0, x1)
    ref = ot.sinkhorn(np.full(5, 0.2), np.full(5, 0.2), c / c.max(), 0.3, method="sinkhorn_log", stopThr=1e-12)
    np.testing.assert_allclose(plan, ref, atol=1e-8)
    cond = plan / plan.sum(1, keepdims=True)  # P(j | i)
    assert np.abs(cond - cond.T).max() > 0.05  # a transposed plan would be detected
    g = _gen(13)
    draws = 800
    counts = np.zeros((5, 5))
    for _ in range(draws):
        cb = coup(x0, x1, generator=g)
        assert torch.equal(cb.x0, x0)  # every source point used exactly once, in order
        torch.testing.assert_close(cb.x1, x1[cb.index], rtol=0, atol=0)
        counts[np.arange(5), cb.index.numpy()] += 1
    se = np.sqrt(cond * (1 - cond) / draws) + 1e-12
    assert np.all(np.abs(counts / draws - cond) < 5 * se + 1e-9)


@pytest.mark.filterwarnings("ignore:Sinkhorn did not converge")
def test_sinkhorn_cost_approaches_exact_ot_for_small_reg():
    """<P, C> - OT <= reg_abs * (H(P) - H(P_ot)) <= reg_abs * log n for the entropic optimum; the sampled
    pairs' mean cost is an unbiased estimate of <P, C>."""
    n = 64
    x0, x1 = _batches((n, 2), seed=14, shift=3.0)
    c = squared_cost_matrix(x0, x1)
    exact = _emd_mean_cost(x0, x1)
    indep = float(c.mean())
    costs, plan_costs = {}, {}
    for reg in (2e-3, 0.05):
        coup = SinkhornCoupling(reg=reg)
        plan = coup.plan(x0, x1)
        plan_costs[reg] = float((plan * c).sum())
        cond = plan / plan.sum(1, keepdims=True)
        row_mean = (cond * c).sum(1)
        row_var = (cond * c**2).sum(1) - row_mean**2
        se = math.sqrt(row_var.sum()) / n
        cb = coup(x0, x1, generator=_gen(15))
        costs[reg] = _mean_cost(cb.x0, cb.x1)
        bound = reg * c.max() * math.log(n)
        assert costs[reg] <= exact + bound + 5 * se + 1e-9
        assert costs[reg] >= exact - 5 * se - 1e-9
    assert abs(costs[2e-3] - exact) < 0.02 * exact  # close to the optimum
    # the entropic plan's cost increases with reg and stays below the independent (max-entropy) cost
    assert exact <= plan_costs[2e-3] < plan_costs[0.05] < indep


def test_make_coupling_types():
    assert isinstance(make_coupling("independent"), IndependentCoupling)
    assert isinstance(make_coupling("ot"), ExactOTCoupling)
    s = make_coupling("sinkhorn", reg=0.1)
    assert isinstance(s, SinkhornCoupling) and s.reg == 0.1
    assert COUPLINGS == ("independent", "ot", "sinkhorn")


# ---------------------------------------------------------------- rejected inputs
def test_degenerate_inputs_raise():
    x0, x1 = _batches((4, 2))
    with pytest.raises(ValueError, match="batch size must be >= 2"):
        ExactOTCoupling()(x0[:1], x1[:1])
    with pytest.raises(ValueError, match="batch size must be >= 2"):
        SinkhornCoupling(0.1)(x0[:1], x1[:1], generator=_gen(0))
    with pytest.raises(ValueError, match="same batch size, got 4 and 3"):
        ExactOTCoupling()(x0, x1[:3])
    with pytest.raises(ValueError, match="same batch size"):
        IndependentCoupling()(x0, x1[:3], generator=_gen(0))
    with pytest.raises(ValueError, match="same shape"):
        ExactOTCoupling()(x0, torch.zeros(4, 3, dtype=F64))
    bad = x1.clone()
    bad[1, 0] = float("nan")
    for name in COUPLINGS:
        with pytest.raises(ValueError, match="x1 must contain only finite values"):
            make_coupling(name)(x0, bad, generator=_gen(0))
    inf = x0.clone()
    inf[0, 1] = float("inf")
    with pytest.raises(ValueError, match="x0 must contain only finite values"):
        ot_permutation(inf, x1)
    with pytest.raises(ValueError, match="cost matrix is zero"):
        SinkhornCoupling(0.1)(torch.zeros(3, 2), torch.zeros(3, 2), generator=_gen(0))


def test_bad_parameters_raise():
    with pytest.raises(ValueError, match="coupling must be one of 'independent', 'ot', 'sinkhorn'; got 'emd'"):
        make_coupling("emd")
    with pytest.raises(ValueError, match="reg must be a finite number > 0"):
        SinkhornCoupling(reg=0.0)
    with pytest.raises(ValueError, match="reg must be a finite number > 0"):
        make_coupling("sinkhorn", reg=float("nan"))
    with pytest.raises(ValueError, match="method must be one of"):
        SinkhornCoupling(reg=0.1, method="greedy")
    with pytest.raises(TypeError, match="invalid options for coupling 'ot'"):
        make_coupling("ot", reg=0.1)
    x0, x1 = _batches((4, 2))
    with pytest.raises(TypeError, match="IndependentCoupling needs generator=torch.Generator"):
        IndependentCoupling()(x0, x1)
    with pytest.raises(TypeError, match="SinkhornCoupling needs generator=torch.Generator"):
        SinkhornCoupling(0.1)(x0, x1)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_sinkhorn_nonfinite_plan_raises_instead_of_falling_back():
    # plain (non-log) Sinkhorn underflows for a tiny reg: the coupling must raise, not fall back
    x0, x1 = _batches((8, 2), seed=16, shift=4.0)
    coup = SinkhornCoupling(reg=1e-4, method="sinkhorn", num_iter_max=50)
    with pytest.warns(UserWarning), pytest.raises(ValueError, match="Sinkhorn plan has"):
        coup(x0, x1, generator=_gen(0))
