"""Tests of gftlib.gft.coupling_cache: the pairs are the pretrained ODE / SDE map; batches, refresh, state."""

from __future__ import annotations

import math
import warnings

import pytest
import torch

from gftlib.paths.interpolants import Interpolant, PathSample
from gftlib.gft.coupling_cache import PretrainedCouplingCache
from gftlib.gft.drift_cache import PretrainedDriftCache
from gftlib.solvers.ode import sample_ode

from gft_helpers import MEAN, STD, gaussian_path, velocity_of, drift_of, gen, roundtrip

torch.set_num_threads(1)


def test_coupling_cache_pairs_are_the_pretrained_ode_map():
    field = velocity_of(gaussian_path())
    cache = PretrainedCouplingCache(field, (2,), size=300, solver_method="rk4", solver_steps=16, seed=4,
                                    chunk_size=128)
    x0, x1 = cache.pairs
    assert x0.shape == x1.shape == (300, 2)
    # closed-form ODE map of the Gaussian path; RK4 with h = 1/16 on this smooth field errs ~1e-5
    torch.testing.assert_close(x1, MEAN + STD * x0, atol=1e-3, rtol=0)
    # exactly the sampler's output on the same noise
    torch.testing.assert_close(x1, sample_ode(field, x0, method="rk4", steps=16).x, atol=1e-6, rtol=0)
    # x0 ~ N(0, I): mean within 5 standard errors (1/sqrt(300))
    assert float(x0.mean(0).abs().max()) < 5 / math.sqrt(300)


def test_coupling_cache_batches_and_refresh():
    field = velocity_of(gaussian_path())
    cache = PretrainedCouplingCache(field, (2,), size=64, solver_method="rk4", solver_steps=16,
                                    refresh_every=2, seed=0)
    g = gen(1)
    first = cache.pairs[0].clone()
    for k in range(5):
        p = cache.batch(32, g)
        assert isinstance(p, PathSample)
        torch.testing.assert_close(p.x1, MEAN + STD * p.x0, atol=1e-3, rtol=0)  # rows are cache pairs
        torch.testing.assert_close(p.target, p.x1 - p.x0)
        assert cache.generation == (k + 1) // 2
    assert not torch.equal(cache.pairs[0], first)  # refreshed with fresh noise
    x0, x1 = cache.pairs
    torch.testing.assert_close(x1, MEAN + STD * x0, atol=1e-3, rtol=0)


def test_coupling_cache_state_round_trip_and_fingerprint_warning():
    field = velocity_of(gaussian_path())
    kw = dict(size=50, solver_method="euler", solver_steps=8, refresh_every=3, seed=2)
    a = PretrainedCouplingCache(field, (2,), **kw)
    ga = gen(9)
    for _ in range(4):
        a.batch(10, ga)
    state = roundtrip(a.state_dict())
    gb = gen(0)
    gb.set_state(ga.get_state())
    b = PretrainedCouplingCache(field, (2,), **kw)
    b.load_state_dict(state)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for _ in range(4):  # crosses a refresh
            pa, pb = a.batch(10, ga), b.batch(10, gb)
            assert torch.equal(pa.xt, pb.xt) and torch.equal(pa.target, pb.target)
    # a cache rebuilt with other pretrained weights is detected
    other = PretrainedCouplingCache(lambda x, t: 1.01 * field(x, t), (2,), **kw)
    other.load_state_dict(a.state_dict())
    with pytest.warns(RuntimeWarning, match="differs from the saved one"):
        other.batch(10, gen())


def test_coupling_cache_rejects_bad_input():
    field = velocity_of(gaussian_path())
    with pytest.raises(ValueError, match="size"):
        PretrainedCouplingCache(field, (2,), size=0)
    with pytest.raises(ValueError, match="solver_method"):
        PretrainedCouplingCache(field, (2,), size=4, solver_method="heun")
    with pytest.raises(ValueError, match="shape"):
        PretrainedCouplingCache(field, (), size=4)
    with pytest.raises(TypeError, match="pretrained_field must be callable"):
        PretrainedCouplingCache(3, (2,), size=4)
    with pytest.raises(ValueError, match="sigma > 0"):
        PretrainedCouplingCache(field, (2,), size=4, diffusion=0.5)
    with pytest.raises(ValueError, match="refresh_every"):
        PretrainedCouplingCache(field, (2,), size=4, refresh_every=0)
    c = PretrainedCouplingCache(field, (2,), size=4, seed=1)
    with pytest.raises(ValueError, match="seed=1"):
        PretrainedCouplingCache(field, (2,), size=4, seed=2).load_state_dict(c.state_dict())
    with pytest.raises(ValueError, match="cannot load a 'coupling' state"):
        PretrainedDriftCache(field, (2,), n_trajectories=4).load_state_dict(c.state_dict())


def _ks_to_target(x: torch.Tensor) -> float:
    """Largest KS distance of the two coordinates of x to the target N(MEAN, STD^2)."""
    from scipy import stats as st

    return max(st.kstest(x[:, i].double().numpy(), "norm", args=(float(MEAN[i]), STD)).statistic
               for i in range(2))


def test_coupling_cache_with_diffusion_samples_the_pretrained_sde():
    """g > 0: the pairs' x1 follow p_pre when the SDE drift is simulated by Euler–Maruyama; the same
    drift integrated as an ODE (the old behaviour) misses p_pre (negative control)."""
    g, n = 0.8, 4000
    field = drift_of(gaussian_path(sigma=g), g)
    cache = PretrainedCouplingCache(field, (2,), size=n, interpolant=Interpolant(g), diffusion=g,
                                    solver_steps=200, seed=4)
    x0, x1 = cache.pairs
    # KS critical value at level 1e-3 for n points (1.95 / sqrt(n)), plus 0.01 for the O(h) weak error
    bound = 1.95 / math.sqrt(n) + 0.01
    assert _ks_to_target(x1) <= bound
    wrong = sample_ode(field, x0, method="euler", steps=200).x
    assert _ks_to_target(wrong) > bound
    with pytest.raises(ValueError, match="solver_method must be 'euler', got 'rk4'"):
        PretrainedCouplingCache(field, (2,), size=8, interpolant=Interpolant(g), diffusion=g, solver_method="rk4")
    with pytest.raises(ValueError, match="solver_method must be 'euler', got 'dopri5'"):
        PretrainedDriftCache(field, (2,), n_trajectories=8, diffusion=g, solver_method="dopri5")
