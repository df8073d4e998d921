"""Girsanov path-space KL: closed forms for affine drifts, exact chain densities, bad inputs."""

from __future__ import annotations

import math

import pytest
import torch

from gftlib.theory.analytic import GaussianMixture
from gftlib.theory.girsanov import (
    affine_drift_path_kl,
    linear_drift,
    log_likelihood_ratios,
    mean_and_se,
    mixture_sde_stiffness,
    path_kls_from_marginals,
    simulate_log_likelihood_ratios,
    stiffness_adjusted_steps,
)
from gftlib.solvers.sde import sample_sde

torch.set_num_threads(1)
Z = 4.0  # two-sided 4-sigma acceptance (false alarm ~6e-5 per comparison)


affine = linear_drift


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_constant_drifts_match_closed_form() -> None:
    # b1 = c1, b2 = c2: KL = d |c1 - c2|^2 T / (2 g^2) exactly, also for the discrete chains.
    g, d = 0.7, 3
    c1, c2 = 0.4, -0.2
    x0 = torch.randn(4000, d, generator=gen(1), dtype=torch.float64)
    r = simulate_log_likelihood_ratios(affine(0.0, c1), [affine(0.0, c2)], x0, diffusion=g, steps=20,
                                      generator=gen(2))[0]
    exact = d * (c1 - c2) ** 2 / (2 * g * g)
    # The along-path integral is deterministic here.
    assert torch.allclose(r.kl_integral, torch.full_like(r.kl_integral, exact), rtol=1e-12, atol=1e-12)
    assert abs(r.kl_log_ratio - exact) <= Z * r.se_log_ratio
    assert r.se_log_ratio == pytest.approx(math.sqrt(2 * exact / r.n), rel=0.1)  # Var L = 2 KL


def test_log_ratio_is_exact_chain_density_ratio() -> None:
    # Reference: sum of Gaussian transition log densities N(x_k + b_i dt, g^2 dt) of both chains.
    g, steps = 0.9, 8
    b1 = lambda x, t: -x + torch.sin(3 * t)[:, None]
    b2 = lambda x, t: 0.5 * x ** 2 - 1.0
    x0 = torch.randn(50, 2, generator=gen(3), dtype=torch.float64)
    res = sample_sde(b1, x0, diffusion=g, steps=steps, generator=gen(4), return_trajectory=True)
    times = torch.linspace(0, 1, steps + 1, dtype=torch.float64)
    r = log_likelihood_ratios(res.trajectory, times, b1, [b2], diffusion=g)[0]
    ref = torch.zeros(50, dtype=torch.float64)
    for k in range(steps):
        dt = float(times[k + 1] - times[k])
        x, xn = res.trajectory[k], res.trajectory[k + 1]
        tk = torch.full((50,), float(times[k]), dtype=torch.float64)
        sd = g * math.sqrt(dt)
        lp1 = torch.distributions.Normal(x + b1(x, tk) * dt, sd).log_prob(xn).sum(1)
        lp2 = torch.distributions.Normal(x + b2(x, tk) * dt, sd).log_prob(xn).sum(1)
        ref += lp1 - lp2
    assert torch.allclose(r.log_ratio, ref, rtol=1e-9, atol=1e-9)


def test_likelihood_ratio_has_unit_mean_under_p2() -> None:
    # E_{P^2}[dP^1/dP^2] = 1 (change of measure); constant drifts keep the weights' variance small.
    g, c1, c2 = 1.0, 0.3, 0.0
    x0 = torch.randn(20000, 1, generator=gen(5), dtype=torch.float64)
    res = sample_sde(affine(0.0, c2), x0, diffusion=g, steps=10, generator=gen(6), return_trajectory=True)
    r = log_likelihood_ratios(res.trajectory, torch.linspace(0, 1, 11, dtype=torch.float64),
                             affine(0.0, c1), [affine(0.0, c2)], diffusion=g)[0]
    m, se = mean_and_se(r.log_ratio.exp())
    assert abs(m - 1.0) <= Z * se


def test_ou_processes_match_discrete_and_continuous_closed_forms() -> None:
    a1, c1, a2, c2, g, d, steps = -1.0, 0.5, 0.5, -0.3, 0.8, 2, 50
    x0 = torch.randn(8000, d, generator=gen(7), dtype=torch.float64)
    r = simulate_log_likelihood_ratios(affine(a1, c1), [affine(a2, c2)], x0, diffusion=g, steps=steps,
                                      generator=gen(8))[0]
    exact_chain = affine_drift_path_kl(a1, c1, a2, c2, diffusion=g, dim=d, steps=steps)
    assert abs(r.kl_log_ratio - exact_chain) <= Z * r.se_log_ratio
    assert abs(r.kl_path_integral - exact_chain) <= Z * r.se_path_integral
    assert abs(r.mean_difference) <= Z * r.se_difference
    # Euler–Maruyama weak order 1: the chain KL converges to the continuous one like 1/steps.
    cont = affine_drift_path_kl(a1, c1, a2, c2, diffusion=g, dim=d)
    e1 = abs(affine_drift_path_kl(a1, c1, a2, c2, diffusion=g, dim=d, steps=200) - cont)
    e2 = abs(affine_drift_path_kl(a1, c1, a2, c2, diffusion=g, dim=d, steps=400) - cont)
    assert 1.8 <= e1 / e2 <= 2.2


def test_affine_closed_form_special_cases() -> None:
    # a1 = 0 limit; pure constant drifts; equal drifts give 0.
    assert affine_drift_path_kl(1e-9, 0.3, 1.0, 0.0, diffusion=0.5) == pytest.approx(
        affine_drift_path_kl(0.0, 0.3, 1.0, 0.0, diffusion=0.5), rel=1e-6)
    assert affine_drift_path_kl(0.0, 1.0, 0.0, -1.0, diffusion=2.0, dim=3) == pytest.approx(3 * 4 / 8)
    assert affine_drift_path_kl(-0.4, 0.2, -0.4, 0.2, diffusion=1.0) == 0.0
    # OU started in its stationary law N(0, 1): a1 = -g^2/2, c1 = 0, so E X^2 = 1 at all times.
    g = 1.3
    assert affine_drift_path_kl(-g * g / 2, 0.0, 0.4, 0.0, diffusion=g) == pytest.approx(
        (-g * g / 2 - 0.4) ** 2 / (2 * g * g), rel=1e-12)


def test_time_dependent_diffusion() -> None:
    # Constant drifts, g(t) = 0.5 + t: the integral is |dc|^2/2 * Riemann sum of 1/g^2 (exact per path).
    steps, dc = 40, 0.6
    gfn = lambda t: 0.5 + t
    x0 = torch.zeros(100, 1, dtype=torch.float64)
    r = simulate_log_likelihood_ratios(affine(0.0, dc), [affine(0.0, 0.0)], x0, diffusion=gfn, steps=steps,
                                      generator=gen(9))[0]
    grid = torch.linspace(0, 1, steps + 1, dtype=torch.float64)[:-1]
    riemann = float((dc * dc / (2 * (0.5 + grid) ** 2)).sum() / steps)
    assert torch.allclose(r.kl_integral, torch.full_like(r.kl_integral, riemann), rtol=1e-12)
    continuous = dc * dc / 2 * (1 / 0.5 - 1 / 1.5)
    assert abs(riemann - continuous) <= dc * dc / 2 * (1 / 0.25 - 1 / 2.25) / steps  # monotone Riemann bound


def test_path_kl_from_marginals_stationary_ou() -> None:
    # P^1: stationary OU (marginals N(0, I)); P^2: b2 = a2 x + c2. KL = d ((a1-a2)^2 + c2^2) / (2 g^2).
    g, a2, c2, d = 1.2, 0.3, 0.5, 2
    a1 = -g * g / 2
    est = path_kls_from_marginals(affine(a1, 0.0), [affine(a2, c2)],
                                 lambda t, n, gg: torch.randn(n, d, generator=gg, dtype=torch.float64),
                                 diffusion=g, steps=10, n=4000, generator=gen(10))[0]
    exact = d * ((a1 - a2) ** 2 + c2 ** 2) / (2 * g * g)
    assert abs(est.value - exact) <= Z * est.se
    assert est.times.shape == (10,) and est.per_time.shape == (10,)
    # and it agrees with the path estimator
    x0 = torch.randn(8000, d, generator=gen(11), dtype=torch.float64)
    r = simulate_log_likelihood_ratios(affine(a1, 0.0), [affine(a2, c2)], x0, diffusion=g, steps=100,
                                      generator=gen(12))[0]
    chain = affine_drift_path_kl(a1, 0.0, a2, c2, diffusion=g, dim=d, steps=100)
    assert abs(chain - exact) < 0.02 * exact  # O(dt) chain bias is small at 100 steps
    assert abs(r.kl_log_ratio - est.value) <= Z * math.hypot(r.se_log_ratio, est.se) + abs(chain - exact)


def test_wrong_drift_is_detected() -> None:
    # A log ratio computed against the wrong reference drift misses the closed form by many SEs.
    g, c1, c2 = 1.0, 0.5, 0.0
    x0 = torch.randn(4000, 1, generator=gen(13), dtype=torch.float64)
    r = simulate_log_likelihood_ratios(affine(0.0, c1), [affine(0.0, c2 + 0.3)], x0, diffusion=g, steps=10,
                                      generator=gen(14))[0]
    assert abs(r.kl_log_ratio - (c1 - c2) ** 2 / 2) > Z * r.se_log_ratio


def test_several_drifts_at_once_equal_one_at_a_time() -> None:
    g, steps = 0.8, 6
    b1, b2, b3 = affine(-0.5, 0.2), affine(0.3, 0.0), lambda x, t: torch.cos(x) * t[:, None]
    x0 = torch.randn(64, 2, generator=gen(15), dtype=torch.float64)
    res = sample_sde(b1, x0, diffusion=g, steps=steps, generator=gen(16), return_trajectory=True)
    times = torch.linspace(0, 1, steps + 1, dtype=torch.float64)
    many = log_likelihood_ratios(res.trajectory, times, b1, [b2, b3], diffusion=g)
    for r, b in zip(many, (b2, b3)):
        one = log_likelihood_ratios(res.trajectory, times, b1, [b], diffusion=g)[0]
        assert torch.equal(r.log_ratio, one.log_ratio) and torch.equal(r.kl_integral, one.kl_integral)
    # chunked simulation = one call per chunk, consuming the generator chunk after chunk
    chunked = simulate_log_likelihood_ratios(b1, [b2, b3], x0, diffusion=g, steps=steps, generator=gen(18),
                                             chunk_size=16)
    g18 = gen(18)
    manual = [simulate_log_likelihood_ratios(b1, [b2, b3], x0[i:i + 16], diffusion=g, steps=steps,
                                             generator=g18) for i in range(0, 64, 16)]
    for j in range(2):
        assert torch.equal(chunked[j].log_ratio, torch.cat([m[j].log_ratio for m in manual]))
        assert chunked[j].n == 64
    sampler = lambda t, n, gg: torch.randn(n, 2, generator=gg, dtype=torch.float64)
    pair = path_kls_from_marginals(b1, [b2, b3], sampler, diffusion=g, steps=4, n=50, generator=gen(17))
    for r, b in zip(pair, (b2, b3)):
        one = path_kls_from_marginals(b1, [b], sampler, diffusion=g, steps=4, n=50, generator=gen(17))[0]
        assert r.value == one.value and r.se == one.se


def test_stiffness_and_adjusted_steps() -> None:
    q = GaussianMixture.from_dict({"weights": [0.5, 0.5], "means": [-1.0, 1.0], "stds": [0.5, 2.0]})
    p = GaussianMixture.from_dict({"weights": [1.0], "means": [0.0], "stds": [1.0]})
    # v_min = min_k s_k^2 / (1 + s_k^2) = 0.25 / 1.25 = 0.2 (the 0.5 component); g = 2 -> 4 / 0.4 = 10.
    assert mixture_sde_stiffness(2.0, q, p) == pytest.approx(10.0, rel=1e-12)
    # brute force over t of the smallest component variance (1 - t)^2 + t^2 s^2
    t = torch.linspace(0, 1, 100001, dtype=torch.float64)
    v = ((1 - t) ** 2 + t ** 2 * 0.25).min()
    assert mixture_sde_stiffness(1.0, q) == pytest.approx(1 / (2 * float(v)), rel=1e-6)
    assert mixture_sde_stiffness(0.0, q) == 0.0
    assert stiffness_adjusted_steps(100, 3.0, reference=5.0) == 100
    assert stiffness_adjusted_steps(100, 10.0, reference=5.0) == 200
    assert stiffness_adjusted_steps(100, 10.1, reference=5.0, multiple=2) == 202
    assert stiffness_adjusted_steps(101, 1.0, reference=5.0, multiple=2) == 102


# ---- bad inputs ---------------------------------------------------------------------------------

def test_rejects_bad_inputs() -> None:
    b = affine(0.0, 0.0)
    x0 = torch.zeros(4, 1, dtype=torch.float64)
    with pytest.raises(ValueError, match="diffusion must be a finite number > 0"):
        simulate_log_likelihood_ratios(b, [b], x0, diffusion=0.0, steps=5, generator=gen())[0]
    with pytest.raises(ValueError, match=r"diffusion\(t\) must be a finite number > 0"):
        simulate_log_likelihood_ratios(b, [b], x0, diffusion=lambda t: 1.0 - t, steps=5, generator=gen(),
                                      t1=1.5)[0]
    with pytest.raises(ValueError, match="steps must be an integer >= 1"):
        simulate_log_likelihood_ratios(b, [b], x0, diffusion=1.0, steps=0, generator=gen())[0]
    with pytest.raises(ValueError, match="chunk_size must be an integer >= 1"):
        simulate_log_likelihood_ratios(b, [b], x0, diffusion=1.0, steps=2, generator=gen(), chunk_size=0)[0]
    traj = torch.zeros(3, 4, 1, dtype=torch.float64)
    with pytest.raises(ValueError, match="times must have one entry per trajectory state"):
        log_likelihood_ratios(traj, torch.tensor([0.0, 1.0], dtype=torch.float64), b, [b], diffusion=1.0)[0]
    with pytest.raises(ValueError, match="times must be strictly increasing"):
        log_likelihood_ratios(traj, torch.tensor([0.0, 0.5, 0.5], dtype=torch.float64), b, [b], diffusion=1.0)[0]
    with pytest.raises(ValueError, match="trajectory must have at least 3 dimensions"):
        log_likelihood_ratios(torch.zeros(3, 4), torch.linspace(0, 1, 3), b, [b], diffusion=1.0)[0]
    with pytest.raises(ValueError, match=r"drifts_2\[0\] must return a tensor of shape"):
        log_likelihood_ratios(traj, torch.linspace(0, 1, 3, dtype=torch.float64), b, [lambda x, t: t],
                             diffusion=1.0)[0]
    with pytest.raises(TypeError, match=r"drifts_2\[0\] must be callable"):
        log_likelihood_ratios(traj, torch.linspace(0, 1, 3, dtype=torch.float64), b, [3.0], diffusion=1.0)[0]
    with pytest.raises(TypeError, match="drifts_2 must be a non-empty list"):
        log_likelihood_ratios(traj, torch.linspace(0, 1, 3, dtype=torch.float64), b, [], diffusion=1.0)
    with pytest.raises(TypeError, match="drifts_2 must be a non-empty list"):
        path_kls_from_marginals(b, b, lambda t, n, g: torch.zeros(n, 1), diffusion=1.0, steps=2, n=5,
                                generator=gen())
    with pytest.raises(TypeError, match=r"drifts_2\[1\] must be callable"):
        log_likelihood_ratios(traj, torch.linspace(0, 1, 3, dtype=torch.float64), b, [b, None], diffusion=1.0)
    with pytest.raises(ValueError, match="n must be an integer >= 2"):
        path_kls_from_marginals(b, [b], lambda t, n, g: torch.zeros(n, 1), diffusion=1.0, steps=2, n=1,
                               generator=gen())[0]
    with pytest.raises(ValueError, match="sample_marginal must return a tensor of shape"):
        path_kls_from_marginals(b, [b], lambda t, n, g: torch.zeros(n), diffusion=1.0, steps=2, n=5,
                               generator=gen())[0]
    with pytest.raises(ValueError, match="t0 must be < t1"):
        path_kls_from_marginals(b, [b], lambda t, n, g: torch.zeros(n, 1), diffusion=1.0, steps=2, n=5,
                               generator=gen(), t0=1.0, t1=0.5)[0]
    with pytest.raises(ValueError, match="dim must be an integer >= 1"):
        affine_drift_path_kl(0.0, 0.0, 1.0, 0.0, diffusion=1.0, dim=0)
    with pytest.raises(ValueError, match="diffusion must be a finite number > 0"):
        affine_drift_path_kl(0.0, 0.0, 1.0, 0.0, diffusion=-1.0)
    with pytest.raises(ValueError, match="a1 must be a finite number"):
        affine_drift_path_kl(float("nan"), 0.0, 1.0, 0.0, diffusion=1.0)
    with pytest.raises(ValueError, match="needs at least one GaussianMixture"):
        mixture_sde_stiffness(1.0)
    with pytest.raises(TypeError, match=r"mixtures\[0\] must be a GaussianMixture"):
        mixture_sde_stiffness(1.0, {"weights": [1.0]})
    with pytest.raises(ValueError, match="reference must be a finite number > 0"):
        stiffness_adjusted_steps(10, 1.0, reference=0.0)
    with pytest.raises(ValueError, match="stiffness must be a finite number >= 0"):
        stiffness_adjusted_steps(10, -1.0, reference=1.0)
    with pytest.raises(ValueError, match="need at least 2 values"):
        mean_and_se(torch.ones(1))


def test_linear_drift() -> None:
    x = torch.tensor([[1.0, -2.0], [0.5, 0.0]], dtype=torch.float64)
    t = torch.tensor([0.1, 0.9], dtype=torch.float64)
    assert torch.equal(linear_drift(-0.5, 1.0)(x, t), -0.5 * x + 1.0)
    with pytest.raises(ValueError, match="c must be a finite number"):
        linear_drift(1.0, float("inf"))
