"""Tests for gftlib.paths.interpolants: conditional paths, velocities, scores and SDE drifts."""

from __future__ import annotations

import math

import pytest
import torch

from gftlib.paths.interpolants import Interpolant, PathSample

F64 = torch.float64


pytestmark = pytest.mark.usefixtures("single_thread")


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _pair(shape, seed=0):
    g = _gen(seed)
    return torch.randn(shape, generator=g, dtype=F64), 2 + torch.randn(shape, generator=g, dtype=F64)


@pytest.mark.parametrize("shape", [(7, 3), (5, 2, 4, 4)])
def test_straight_line_exact(shape):
    x0, x1 = _pair(shape)
    t = torch.linspace(0, 1, shape[0], dtype=F64)
    ps = Interpolant().sample(x0, x1, t=t)
    te = t.reshape(-1, *[1] * (len(shape) - 1))
    assert isinstance(ps, PathSample)
    torch.testing.assert_close(ps.xt, (1 - te) * x0 + te * x1, rtol=0, atol=1e-15)
    torch.testing.assert_close(ps.target, x1 - x0, rtol=0, atol=0)
    assert ps.t.shape == (shape[0],) and ps.xt.shape == shape
    # a float t is broadcast to (n,)
    ps2 = Interpolant().sample(x0, x1, t=0.25)
    torch.testing.assert_close(ps2.xt, 0.75 * x0 + 0.25 * x1)
    assert ps2.t.shape == (shape[0],)


@pytest.mark.parametrize("shape", [(6, 2), (4, 3, 2, 2)])
@pytest.mark.parametrize("sigma", [0.0, 0.3, 1.5])
def test_velocity_is_time_derivative_of_path(shape, sigma):
    """For fixed (x0, x1, z), d/dt [mu_t + sigma_t z] equals the conditional velocity at x_t."""
    x0, x1 = _pair(shape, seed=1)
    z = torch.randn(shape, generator=_gen(2), dtype=F64)
    it = Interpolant(sigma)
    h = 1e-6
    for tv in (0.1, 0.37, 0.5, 0.9):
        t = torch.full((shape[0],), tv, dtype=F64)

        def path(s):
            return it.mean(x0, x1, s) + it.std(s).reshape(-1, *[1] * (len(shape) - 1)) * z

        fd = (path(t + h) - path(t - h)) / (2 * h)
        u = it.conditional_velocity(x0, x1, t, path(t))
        # central difference error ~ h^2 |x'''| plus rounding ~ 1e-16 / h
        torch.testing.assert_close(u, fd, rtol=0, atol=1e-7)


@pytest.mark.parametrize("sigma", [0.4, 1.0])
def test_bridge_drift_equals_x1_minus_xt_over_1_minus_t(sigma):
    x0, x1 = _pair((9, 2, 3, 3), seed=3)
    it = Interpolant(sigma)
    ps = it.sample(x0, x1, generator=_gen(4), diffusion=sigma)
    te = ps.t.reshape(-1, 1, 1, 1)
    torch.testing.assert_close(ps.target, (x1 - ps.xt) / (1 - te), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("g", [0.0, 0.3, 0.8, 2.0])
def test_drift_is_velocity_plus_half_g2_score(g):
    sigma = 0.8
    x0, x1 = _pair((11, 3), seed=5)
    it = Interpolant(sigma)
    ps = it.sample(x0, x1, generator=_gen(6), diffusion=g)
    u = it.conditional_velocity(x0, x1, ps.t, ps.xt)
    s = it.conditional_score(x0, x1, ps.t, ps.xt)
    torch.testing.assert_close(ps.target, u + 0.5 * g**2 * s, rtol=1e-12, atol=1e-12)


def test_score_is_gradient_of_conditional_log_density():
    sigma = 0.6
    x0, x1 = _pair((8, 4), seed=7)
    it = Interpolant(sigma)
    t = torch.rand(8, generator=_gen(8), dtype=F64) * 0.9 + 0.05
    xt = (it.mean(x0, x1, t) + 0.3).requires_grad_(True)
    var = it.std(t)[:, None] ** 2
    logp = (-0.5 * (xt - it.mean(x0, x1, t)) ** 2 / var - 0.5 * torch.log(2 * math.pi * var)).sum()
    (grad,) = torch.autograd.grad(logp, xt)
    torch.testing.assert_close(it.conditional_score(x0, x1, t, xt.detach()), grad, rtol=1e-12, atol=1e-12)


def test_bridge_marginal_moments():
    """x_t - mu_t ~ N(0, sigma^2 t (1 - t)): sample mean and variance within 5 standard errors."""
    sigma, n, tv = 1.3, 200_000, 0.3
    x0 = torch.zeros(n, 1, dtype=F64)
    x1 = torch.ones(n, 1, dtype=F64)
    ps = Interpolant(sigma).sample(x0, x1, t=tv, generator=_gen(9))
    r = (ps.xt - tv)[:, 0]
    var = sigma**2 * tv * (1 - tv)
    assert abs(float(r.mean())) < 5 * math.sqrt(var / n)
    assert abs(float(r.var()) - var) < 5 * var * math.sqrt(2 / n)


@pytest.mark.parametrize("g", [0.0, 0.5, 1.0, 1.7])
def test_conditional_drift_solves_fokker_planck(g):
    """The conditional density N(mu_t, sigma_t^2) and drift b satisfy
    d_t p = -d_x (p b) + g^2/2 d_xx p (finite differences, 1-D)."""
    sigma = 1.0
    it = Interpolant(sigma)
    x0v, x1v = -0.7, 1.9
    xs = torch.linspace(-3, 4, 61, dtype=F64)
    n = xs.shape[0]
    x0 = torch.full((n, 1), x0v, dtype=F64)
    x1 = torch.full((n, 1), x1v, dtype=F64)

    def dens(x, tv):
        m, s = (1 - tv) * x0v + tv * x1v, sigma * math.sqrt(tv * (1 - tv))
        return torch.exp(-0.5 * ((x - m) / s) ** 2) / (s * math.sqrt(2 * math.pi))

    h, ht = 1e-3, 1e-5
    for tv in (0.2, 0.5, 0.75):
        dpdt = (dens(xs, tv + ht) - dens(xs, tv - ht)) / (2 * ht)

        def flux(x):
            b = it.conditional_drift(x0, x1, tv, x[:, None], diffusion=g)[:, 0]
            return dens(x, tv) * b

        dflux = (flux(xs + h) - flux(xs - h)) / (2 * h)
        lap = (dens(xs + h, tv) - 2 * dens(xs, tv) + dens(xs - h, tv)) / h**2
        resid = dpdt + dflux - 0.5 * g**2 * lap
        assert float(resid.abs().max()) < 1e-4 * float(dpdt.abs().max() + 1)


def test_sampled_times_in_range_and_reproducible():
    x0, x1 = _pair((4000, 2), seed=10)
    it = Interpolant(sigma=0.5, t_eps=0.1)
    a = it.sample(x0, x1, generator=_gen(11))
    b = it.sample(x0, x1, generator=_gen(11))
    c = it.sample(x0, x1, generator=_gen(12))
    assert torch.equal(a.t, b.t) and torch.equal(a.xt, b.xt)
    assert not torch.equal(a.t, c.t)
    assert float(a.t.min()) >= 0.1 and float(a.t.max()) <= 0.9
    # uniform on [0.1, 0.9]: mean 0.5 within 5 standard errors
    assert abs(float(a.t.mean()) - 0.5) < 5 * (0.8 / math.sqrt(12)) / math.sqrt(4000)


def test_dtype_preserved_float32():
    x0, x1 = (v.float() for v in _pair((16, 3), seed=13))
    ps = Interpolant(0.2, t_eps=1e-3).sample(x0, x1, generator=_gen(14), diffusion=0.2)
    assert ps.xt.dtype == torch.float32 and ps.target.dtype == torch.float32 and ps.t.dtype == torch.float32
    assert bool(torch.isfinite(ps.target).all())


# ---------------------------------------------------------------- rejected inputs
def test_diffusion_without_sigma_raises():
    x0, x1 = _pair((4, 2))
    it = Interpolant(0.0)
    with pytest.raises(ValueError, match="needs a stochastic interpolant"):
        it.sample(x0, x1, t=0.5, diffusion=0.1)
    with pytest.raises(ValueError, match="needs a stochastic interpolant"):
        it.conditional_drift(x0, x1, 0.5, x0, diffusion=1.0)
    with pytest.raises(ValueError, match="conditional score needs sigma > 0"):
        it.conditional_score(x0, x1, 0.5, x0)


def test_bad_parameters_raise():
    with pytest.raises(ValueError, match="sigma must be a finite number >= 0"):
        Interpolant(-0.1)
    with pytest.raises(ValueError, match="sigma must be a finite number"):
        Interpolant(float("nan"))
    with pytest.raises(ValueError, match="t_eps must be a finite number >= 0 and < 0.5"):
        Interpolant(0.1, t_eps=0.5)
    with pytest.raises(ValueError, match="t_eps must be a finite number >= 0"):
        Interpolant(0.1, t_eps=-0.1)
    with pytest.raises(ValueError, match="diffusion must be a finite number >= 0"):
        Interpolant(1.0).sample(*_pair((3, 2)), t=0.5, generator=_gen(0), diffusion=-1.0)


def test_bad_inputs_raise():
    x0, x1 = _pair((4, 2))
    it = Interpolant(0.5)
    with pytest.raises(ValueError, match="x0 and x1 must have the same shape"):
        it.sample(x0, x1[:3], t=0.5, generator=_gen(0))
    with pytest.raises(ValueError, match=r"t must lie in \[0, 1\]"):
        Interpolant().sample(x0, x1, t=torch.tensor([0.1, 0.2, 1.5, 0.3], dtype=F64))
    with pytest.raises(ValueError, match=r"t must be a finite number >= 0 and <= 1"):
        Interpolant().sample(x0, x1, t=2.0)
    with pytest.raises(ValueError, match="strictly inside"):
        it.sample(x0, x1, t=0.0, generator=_gen(0))
    with pytest.raises(ValueError, match="strictly inside"):
        it.conditional_velocity(x0, x1, 1.0, x1)
    with pytest.raises(ValueError, match=r"t must be a float or a tensor of shape \(4,\)"):
        it.sample(x0, x1, t=torch.full((3,), 0.5), generator=_gen(0))
    with pytest.raises(ValueError, match="must contain only finite values"):
        it.sample(x0 * float("nan"), x1, t=0.5, generator=_gen(0))
    with pytest.raises(TypeError, match="needs generator=torch.Generator"):
        it.sample(x0, x1)
    with pytest.raises(TypeError, match="needs generator=torch.Generator"):
        it.sample(x0, x1, t=0.5)
