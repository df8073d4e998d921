"""Tests of gftlib.gft.drift_cache: points follow the pretrained marginals along the sampler's own chain."""

from __future__ import annotations

import math

import pytest
import torch

from gftlib.losses import DriftBatch
from gftlib.gft.drift_cache import PretrainedDriftCache
from gftlib.solvers.ode import sample_ode

from gft_helpers import MEAN, gaussian_path, velocity_of, drift_of, marginal_var, gen, roundtrip

torch.set_num_threads(1)


def _check_marginals(cache: PretrainedDriftCache, field, sigma: float, extra_tol: float) -> None:
    n = cache.n_trajectories
    for k, t in enumerate(cache.times.tolist()):
        x, b = cache.points(k)
        v = marginal_var(t, sigma)
        se_mean = math.sqrt(v / n)
        se_var = v * math.sqrt(2 / (n - 1))
        assert torch.allclose(x.mean(0), t * MEAN, atol=5 * se_mean + extra_tol), (t, x.mean(0))
        assert torch.allclose(x.var(0), torch.full((2,), v), atol=5 * se_var + extra_tol), (t, x.var(0), v)
        # the stored target is the frozen drift at the stored point and time
        torch.testing.assert_close(b, field(x, torch.full((n,), t)), atol=1e-5, rtol=1e-5)


def test_drift_cache_ode_points_follow_pretrained_marginals():
    field = velocity_of(gaussian_path())
    cache = PretrainedDriftCache(field, (2,), n_trajectories=3000, time_grid=4, solver_method="rk4",
                                 solver_steps=16, seed=3)
    torch.testing.assert_close(cache.times, torch.tensor([0.125, 0.375, 0.625, 0.875], dtype=torch.float64))
    _check_marginals(cache, field, 0.0, extra_tol=1e-3)  # RK4 error is negligible


def test_drift_cache_sde_points_follow_pretrained_marginals():
    g = 0.8
    field = drift_of(gaussian_path(sigma=g), g)
    cache = PretrainedDriftCache(field, (2,), n_trajectories=3000, time_grid=torch.tensor([0.25, 0.5, 0.9]),
                                 solver_steps=100, diffusion=g, seed=5)
    # Euler–Maruyama has weak error O(h); h = 1/100 with O(1) drift Lipschitz constants -> 0.03 allowance.
    # (Without the noise the variance at t = 0.5 would be short by g^2/4 = 0.16.)
    _check_marginals(cache, field, g, extra_tol=0.03)


def test_drift_cache_batches_and_state():
    field = velocity_of(gaussian_path())
    kw = dict(n_trajectories=20, time_grid=8, t_eps=0.05, solver_steps=8, refresh_every=2, seed=1)
    a = PretrainedDriftCache(field, (2,), **kw)
    assert float(a.times.min()) > 0.05 and float(a.times.max()) < 0.95
    ga = gen(2)
    batch = a.batch(16, ga)
    assert isinstance(batch, DriftBatch) and batch.x.shape == (16, 2) and batch.t.shape == (16,)
    grid = a.times.float()
    assert all(bool((grid - t).abs().min() < 1e-6) for t in batch.t)  # exact grid times
    torch.testing.assert_close(batch.target, field(batch.x, batch.t), atol=1e-5, rtol=1e-5)
    a.batch(16, ga)  # triggers a refresh
    assert a.generation == 1
    state = roundtrip(a.state_dict())
    b = PretrainedDriftCache(field, (2,), **kw)
    b.load_state_dict(state)
    gb = gen(0)
    gb.set_state(ga.get_state())
    for _ in range(3):
        pa, pb = a.batch(16, ga), b.batch(16, gb)
        assert torch.equal(pa.x, pb.x) and torch.equal(pa.t, pb.t) and torch.equal(pa.target, pb.target)


def test_drift_cache_jitter_draws_stratified_times_per_build():
    field = velocity_of(gaussian_path())
    kw = dict(n_trajectories=3000, time_grid=4, t_eps=0.05, solver_method="rk4", solver_steps=16,
              refresh_every=1, seed=3, jitter=True)
    cache = PretrainedDriftCache(field, (2,), **kw)
    seen = []
    g = gen(4)
    for generation in range(3):
        cache.prepare()
        times = cache.times.clone()
        lo = 0.05 + 0.9 * torch.arange(4, dtype=torch.float64) / 4
        assert bool((times >= lo).all() and (times < lo + 0.9 / 4).all())  # one time per stratum
        # the stored points follow the pretrained marginals at the jittered times (same check as the grid)
        _check_marginals(cache, field, 0.0, extra_tol=1e-3)
        seen.append(times)
        cache.batch(8, g)  # refresh_every=1: the next build is a new generation
        assert cache.generation == generation + 1
    assert not torch.equal(seen[0], seen[1]) and not torch.equal(seen[1], seen[2])
    # the same seed and generation give the same times (exact resume)
    again = PretrainedDriftCache(field, (2,), **kw)
    torch.testing.assert_close(again.prepare().times, seen[0], rtol=0, atol=0)


def test_drift_cache_jitter_is_uniform_within_strata():
    # u_k = (t_k - stratum start) / width must be U(0, 1): over 400 builds its mean is 1/2 within 5 SE
    field = velocity_of(gaussian_path())
    us = []
    for seed in range(400):
        c = PretrainedDriftCache(field, (2,), n_trajectories=1, time_grid=2, solver_steps=1, seed=seed, jitter=True)
        us.append((c.prepare().times - torch.tensor([0.0, 0.5], dtype=torch.float64)) / 0.5)
    u = torch.stack(us)
    assert bool(((u >= 0) & (u < 1)).all())
    se = math.sqrt(1 / 12 / u.shape[0])
    assert (u.mean(0) - 0.5).abs().max().item() < 5 * se


def test_drift_cache_rejects_bad_input():
    field = velocity_of(gaussian_path())
    with pytest.raises(ValueError, match="n_trajectories"):
        PretrainedDriftCache(field, (2,), n_trajectories=0)
    with pytest.raises(ValueError, match="strictly increasing"):
        PretrainedDriftCache(field, (2,), n_trajectories=4, time_grid=torch.tensor([0.5, 0.2]))
    with pytest.raises(ValueError, match="lie in"):
        PretrainedDriftCache(field, (2,), n_trajectories=4, time_grid=torch.tensor([0.5, 1.2]))
    with pytest.raises(ValueError, match="time_grid"):
        PretrainedDriftCache(field, (2,), n_trajectories=4, time_grid=0)
    with pytest.raises(ValueError, match="t_eps"):
        PretrainedDriftCache(field, (2,), n_trajectories=4, t_eps=0.5)
    with pytest.raises(ValueError, match="diffusion"):
        PretrainedDriftCache(field, (2,), n_trajectories=4, diffusion=-1.0)
    with pytest.raises(ValueError, match="jitter=True needs an int time_grid"):
        PretrainedDriftCache(field, (2,), n_trajectories=4, time_grid=torch.tensor([0.2, 0.5]), jitter=True)
    with pytest.raises(TypeError, match="jitter must be True or False"):
        PretrainedDriftCache(field, (2,), n_trajectories=4, jitter="yes")
    cache = PretrainedDriftCache(field, (2,), n_trajectories=4, time_grid=3)
    with pytest.raises(ValueError, match="k must be"):
        cache.points(3)


def test_drift_cache_euler_chain_is_the_pretrained_sampler():
    """Euler on the sampler's own grid (solver_steps uniform steps on [0, 1]); a cache time t in
    [t_j, t_j+1) holds the partial Euler step x_j + b(x_j, t_j)(t - t_j); t = 1 holds p_pre's sample."""
    field = velocity_of(gaussian_path())
    steps = 8
    times = torch.tensor([0.05, 0.3, 0.5, 0.9, 1.0], dtype=torch.float64)
    cache = PretrainedDriftCache(field, (2,), n_trajectories=50, time_grid=times, solver_steps=steps, seed=2)
    cache.prepare()
    x0 = cache._noise(50, 0)
    pre = sample_ode(field, x0, method="euler", steps=steps, return_trajectory=True)
    for k, t in enumerate(times.tolist()):
        j = min(int(math.floor(t * steps)), steps)
        xj, tj = pre.trajectory[j], j / steps
        want = xj if t == tj else xj + field(xj, torch.full((50,), tj)) * (t - tj)
        x, _ = cache.points(k)
        torch.testing.assert_close(x, want, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(cache.points(len(times) - 1)[0], pre.x, rtol=0, atol=0)
