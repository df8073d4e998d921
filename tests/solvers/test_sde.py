"""Tests of gftlib.solvers.sde: Euler–Maruyama moments against closed forms, determinism, bad input, and
sde_states_at (the chain read off at given times)."""

from __future__ import annotations

import math

import pytest
import torch

from gftlib.solvers.ode import sample_ode
from gftlib.solvers.sde import sample_sde, sde_states_at
from gftlib.theory.analytic import GaussianMixture, GaussianMixturePath

from solver_helpers import linear_field

torch.set_num_threads(1)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def gaussian_sde_drift(g: float):
    """SDE drift (velocity + g^2/2 score) of the path from N(0, I) to N((2, -1), 0.25 I) with sigma = g."""
    path = GaussianMixturePath(GaussianMixture(weights=[1.0], means=[[2.0, -1.0]], stds=[0.5]), sigma=g)
    return lambda x, t: path.drift(x, t, g).to(x.dtype)


def test_sde_ornstein_uhlenbeck_moments():
    theta, sigma, x_start, steps, n = 1.0, 0.8, 2.0, 200, 40_000
    x0 = torch.full((n, 1), x_start, dtype=torch.float64)
    res = sample_sde(lambda x, t: -theta * x, x0, diffusion=sigma, steps=steps,
                     generator=torch.Generator().manual_seed(4))
    x1 = res.x[:, 0]
    mean, var = float(x1.mean()), float(x1.var())
    # Euler-Maruyama is exact in law for this linear SDE as a discrete recursion:
    # x_{k+1} = a x_k + sigma sqrt(dt) z, a = 1 - theta dt.
    dt = 1.0 / steps
    a = 1.0 - theta * dt
    mean_em = a ** steps * x_start
    var_em = sigma ** 2 * dt * (1 - a ** (2 * steps)) / (1 - a ** 2)
    se_mean = math.sqrt(var_em / n)
    se_var = var_em * math.sqrt(2.0 / (n - 1))
    assert abs(mean - mean_em) < 4 * se_mean
    assert abs(var - var_em) < 4 * se_var
    # Continuous-time closed form; EM's weak error is O(dt) (|mean_em - mean_ct| bounds it here).
    mean_ct = math.exp(-theta) * x_start
    var_ct = sigma ** 2 * (1 - math.exp(-2 * theta)) / (2 * theta)
    assert abs(mean - mean_ct) < 4 * se_mean + abs(mean_em - mean_ct)
    assert abs(var - var_ct) < 4 * se_var + abs(var_em - var_ct)
    assert res.nfe == steps


def test_sde_brownian_with_drift_time_dependent_diffusion():
    mu, steps, n = torch.tensor([1.0, -2.0], dtype=torch.float64), 50, 40_000
    x0 = torch.zeros(n, 2, dtype=torch.float64)
    res = sample_sde(lambda x, t: mu.expand_as(x), x0, diffusion=lambda t: t, steps=steps,
                     generator=torch.Generator().manual_seed(5))
    dt = 1.0 / steps
    var_em = sum((k * dt) ** 2 * dt for k in range(steps))  # g evaluated at the left end points
    se_mean = math.sqrt(var_em / n)
    se_var = var_em * math.sqrt(2.0 / (n - 1))
    assert (res.x.mean(0) - mu).abs().max() < 4 * se_mean
    assert (res.x.var(0) - var_em).abs().max() < 4 * se_var
    assert abs(var_em - 1.0 / 3.0) < 1.0 / steps  # -> int_0^1 t^2 dt
    # drift part: constant drift -> length |mu| exactly, straightness 1
    torch.testing.assert_close(res.path_length, torch.full((n,), float(mu.norm()), dtype=torch.float64))
    torch.testing.assert_close(res.straightness, torch.ones(n, dtype=torch.float64))


def test_sde_deterministic_given_generator_and_images():
    x0 = torch.zeros(4, 3, 2, 2)
    kw = dict(diffusion=0.5, steps=10, return_trajectory=True)
    r1 = sample_sde(lambda x, t: -x, x0, generator=torch.Generator().manual_seed(7), **kw)
    r2 = sample_sde(lambda x, t: -x, x0, generator=torch.Generator().manual_seed(7), **kw)
    r3 = sample_sde(lambda x, t: -x, x0, generator=torch.Generator().manual_seed(8), **kw)
    assert torch.equal(r1.x, r2.x) and not torch.equal(r1.x, r3.x)
    assert r1.x.dtype == torch.float32 and r1.trajectory.shape == (11, 4, 3, 2, 2)
    assert r1.times.shape == (11,)
    # zero diffusion reduces to the Euler ODE sampler
    z = torch.randn(5, 2, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    sde = sample_sde(linear_field, z, diffusion=0.0, steps=10)
    ode = sample_ode(linear_field, z, method="euler", steps=10)
    torch.testing.assert_close(sde.x, ode.x)
    torch.testing.assert_close(sde.path_length, ode.path_length)


@pytest.mark.parametrize(
    "kwargs,exc,match",
    [
        ({"diffusion": -1.0}, ValueError, "diffusion must be a finite number >= 0"),
        ({"diffusion": lambda t: -1.0}, ValueError, r"diffusion\(t\) must be a finite number >= 0"),
        ({"diffusion": 1.0, "steps": 0}, ValueError, "steps must be an integer >= 1"),
        ({"diffusion": 1.0, "t0": 0.5, "t1": 0.5}, ValueError, "t0 must be < t1"),
        ({"diffusion": 1.0, "generator": 3}, TypeError, "generator must be a torch.Generator"),
    ],
)
def test_sample_sde_rejects_bad_arguments(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        sample_sde(lambda x, t: x, torch.zeros(2, 2), **kwargs)


def test_sde_states_at_law_and_chain():
    """Zero drift: the state at any t is x0 + g W_t (variance 1 + g^2 t, exact for Euler–Maruyama);
    constant drift c: mean c t. Asking for t = 1 only reproduces sample_sde with the same generator."""
    n, g = 20000, 0.7
    x0 = torch.randn(n, 2, generator=gen(1), dtype=torch.float64)
    c = torch.tensor([1.0, -2.0], dtype=torch.float64)
    times = [0.13, 0.5, 0.77]
    states = sde_states_at(lambda x, t: c.expand_as(x), x0, times, diffusion=g, steps=10, generator=gen(2))
    for k, t in enumerate(times):
        se_m, var = math.sqrt((1 + g**2 * t) / n), 1 + g**2 * t
        assert torch.allclose(states[k].mean(0), c * t, atol=5 * se_m)
        assert torch.allclose(states[k].var(0), torch.full((2,), var, dtype=torch.float64),
                              atol=5 * var * math.sqrt(2 / (n - 1)))
    field = gaussian_sde_drift(g)
    x0f = x0.float()
    end = sde_states_at(field, x0f, [1.0], diffusion=g, steps=10, generator=gen(3))[0]
    ref = sample_sde(field, x0f, diffusion=g, steps=10, generator=gen(3)).x
    assert torch.equal(end, ref)
