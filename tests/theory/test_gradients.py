"""Tests for gftlib.theory.gradients: per-sample gradients of a linear field, the conditional/marginal
comparison statistics, the 1-D quantile (OT) map and the exact marginal field of a monotone coupling."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.stats
import torch

from gftlib.theory.analytic import GaussianMixture, GaussianMixturePath
from gftlib.theory.gradients import (GradientTerms, LinearField, MonotoneCoupling, PerSampleGradients,
                              combined_gradient_norm, default_features_1d, hotelling_critical, loglog_slope,
                              monotone_grid, quantile_map, regression_gradients)
from gftlib.paths.interpolants import Interpolant
from gftlib.losses import regression_loss

F64 = torch.float64
BIMODAL = GaussianMixture.from_dict({"weights": [0.4, 0.6], "means": [-2.0, 2.0], "stds": [0.35, 0.5]})


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ----------------------------------------------------------------------------------------- linear field
def test_linear_field_gradients_match_autograd_of_regression_loss() -> None:
    g = gen(1)
    field = LinearField(torch.randn(6, generator=g, dtype=F64))
    x = torch.randn(300, 1, generator=g, dtype=F64)
    t = torch.rand(300, generator=g, dtype=F64)
    y = torch.randn(300, 1, generator=g, dtype=F64)
    per_sample = regression_gradients(field, x, t, y)
    assert per_sample.shape == (300, 6)
    regression_loss(field, x, t, y).backward()
    torch.testing.assert_close(per_sample.mean(0), field.theta.grad, rtol=1e-12, atol=1e-12)


def test_linear_field_rejects_bad_features_and_inputs() -> None:
    field = LinearField(torch.zeros(3, dtype=F64))           # default features give F = 6
    x, t = torch.zeros(4, 1, dtype=F64), torch.zeros(4, dtype=F64)
    with pytest.raises(ValueError, match=r"features\(x, t\) must return shape \(4, 1, 3\)"):
        field(x, t)
    with pytest.raises(TypeError, match="features must be callable"):
        LinearField(torch.zeros(6, dtype=F64), features=3)
    with pytest.raises(ValueError, match=r"t must have shape \(4,\)"):
        LinearField(torch.zeros(6, dtype=F64))(x, torch.zeros(5, dtype=F64))
    with pytest.raises(ValueError, match="target must have the shape of x"):
        regression_gradients(LinearField(torch.zeros(6, dtype=F64)), x, t, torch.zeros(4, 2, dtype=F64))
    assert default_features_1d(x, t).shape == (4, 1, 6)


# ----------------------------------------------------------------------------------------- comparison stats
def test_combine_and_compare_formulas() -> None:
    g = gen(2)
    a = PerSampleGradients(torch.randn(50, 3, generator=g, dtype=F64), torch.randn(50, 3, generator=g, dtype=F64))
    b = PerSampleGradients(torch.randn(50, 3, generator=g, dtype=F64), torch.randn(50, 3, generator=g, dtype=F64))
    c = a.combine(b, 2.0)
    torch.testing.assert_close(c.conditional, (a.conditional + 2 * b.conditional) / 3)
    torch.testing.assert_close(a.combine(b, 2.0, normalize=False).marginal, a.marginal + 2 * b.marginal)
    cmp_ = c.compare()
    diff = (c.conditional - c.marginal).numpy()
    mean = diff.mean(0)
    cov = np.cov(diff, rowvar=False)
    assert cmp_.hotelling == pytest.approx(50 * mean @ np.linalg.solve(cov, mean), rel=1e-10)
    np.testing.assert_allclose(cmp_.difference_se.numpy(), np.sqrt(np.diag(cov) / 50), rtol=1e-12)
    assert cmp_.relative_difference == pytest.approx(np.linalg.norm(mean) / np.linalg.norm(c.marginal.numpy().mean(0)))
    same = PerSampleGradients(a.conditional, a.conditional).compare()
    assert same.hotelling == 0.0 and same.relative_difference == 0.0


def test_hotelling_is_chi2_for_zero_mean_differences() -> None:
    """Mean of T^2 over 300 independent zero-mean draws is F within 5 standard errors (Var chi^2_F = 2F)."""
    g = gen(3)
    f, reps = 3, 300
    t2 = [PerSampleGradients(torch.randn(400, f, generator=g, dtype=F64) @ torch.tensor([[1.0, 0.3, 0], [0, 1, 0.5],
                                                                                     [0, 0, 2]], dtype=F64),
                             torch.zeros(400, f, dtype=F64)).compare().hotelling for _ in range(reps)]
    assert abs(np.mean(t2) - f) <= 5 * math.sqrt(2 * f / reps)
    shifted = PerSampleGradients(torch.randn(400, f, generator=g, dtype=F64) + 0.5, torch.zeros(400, f, dtype=F64))
    assert shifted.compare().hotelling > scipy.stats.chi2.ppf(0.999, f)


def test_per_sample_gradients_reject_bad_shapes() -> None:
    z = torch.zeros(5, 2, dtype=F64)
    with pytest.raises(ValueError, match="conditional and marginal must have the same shape"):
        PerSampleGradients(z, torch.zeros(5, 3, dtype=F64))
    with pytest.raises(ValueError, match=r"other must have shape \(5, 2\)"):
        PerSampleGradients(z, z).combine(PerSampleGradients(torch.zeros(4, 2, dtype=F64), torch.zeros(4, 2, dtype=F64)), 1.0)
    with pytest.raises(ValueError, match="beta must be a finite number >= 0"):
        PerSampleGradients(z, z).combine(PerSampleGradients(z, z), -1.0)
    with pytest.raises(ValueError, match=r"compare needs more samples than features \(n > F = 2\), got n=2"):
        PerSampleGradients(torch.zeros(2, 2, dtype=F64), torch.zeros(2, 2, dtype=F64)).compare()


# ----------------------------------------------------------------------------------------- quantile map
def test_quantile_map_gaussian_is_affine_and_mixture_matches_levels_in_both_tails() -> None:
    x0 = torch.linspace(-8, 8, 161, dtype=F64)
    gauss = GaussianMixture.from_dict({"weights": [1.0], "means": [0.7], "stds": [1.6]})
    torch.testing.assert_close(quantile_map(gauss, x0), 0.7 + 1.6 * x0, rtol=0, atol=1e-12)
    y = quantile_map(BIMODAL, x0)
    lower = x0 <= 0
    cdf = BIMODAL.cdf_projected(y[lower])
    want = 0.5 * torch.erfc(-x0[lower] / math.sqrt(2))              # (torch.special.ndtr loses the far tail)
    assert float(((cdf - want).abs() / want).max()) < 1e-9        # relative, deep in the lower tail too
    sf = 1 - BIMODAL.cdf_projected(y[~lower & (x0 < 3)])
    want = 0.5 * torch.erfc(x0[~lower & (x0 < 3)] / math.sqrt(2))
    assert float(((sf - want).abs() / want).max()) < 1e-9
    assert bool((y[1:] > y[:-1]).all())


def test_quantile_map_and_grid_reject_bad_input() -> None:
    two_d = GaussianMixture.from_dict({"weights": [1.0], "means": [[0.0, 0.0]], "stds": [1.0]})
    with pytest.raises(ValueError, match="mixture must be 1-D, got dimension 2"):
        quantile_map(two_d, torch.zeros(3, dtype=F64))
    with pytest.raises(TypeError, match="mixture must be a GaussianMixture"):
        quantile_map({"weights": [1.0]}, torch.zeros(3, dtype=F64))
    with pytest.raises(TypeError, match="mixture must be a 1-D GaussianMixture"):
        monotone_grid(two_d)
    with pytest.raises(ValueError, match="tol must be a finite number > 0"):
        monotone_grid(BIMODAL, tol=0.0)


def test_monotone_grid_keeps_the_piecewise_linear_graph_within_tol() -> None:
    tol = 1e-3
    knots = monotone_grid(BIMODAL, tol=tol)
    assert bool((knots[1:] > knots[:-1]).all()) and len(knots) < 200
    coupling = MonotoneCoupling(knots, quantile_map(BIMODAL, knots), sigma=0.5)
    x0 = torch.linspace(-6, 6, 20001, dtype=F64)
    exact = quantile_map(BIMODAL, x0)
    approx = coupling.map(x0)
    k = torch.clamp(torch.searchsorted(knots, x0) - 1, 0, len(knots) - 2)
    perpendicular = (approx - exact).abs() / torch.sqrt(1 + coupling.slopes[k] ** 2)
    assert float(perpendicular.max()) <= 2 * tol          # checked at the fine resolution in between


# ----------------------------------------------------------------------------------------- monotone coupling
@pytest.mark.parametrize("m, s, sigma", [(0.7, 1.6, 0.5), (-1.0, 0.3, 1.0)])
def test_velocity_of_affine_map_matches_gaussian_closed_form(m: float, s: float, sigma: float) -> None:
    """T(x0) = m + s x0: x_t = t m + c x0 + sigma_t z with c = 1 - t + t s is Gaussian, so
    E[x0 | x_t = x] = c (x - t m) / (c^2 + sigma_t^2) and b = m + (s - 1) E[x0|x] + a_t (x - t m - c E[x0|x])."""
    gauss = GaussianMixture.from_dict({"weights": [1.0], "means": [m], "stds": [s]})
    coupling = MonotoneCoupling.from_mixture(gauss, sigma)
    g = gen(4)
    x = 2 * torch.randn(4000, 1, generator=g, dtype=F64)
    t = 0.001 + 0.998 * torch.rand(4000, generator=g, dtype=F64)
    c = 1 - t + t * s
    var_t = sigma**2 * t * (1 - t)
    e0 = c * (x[:, 0] - t * m) / (c**2 + var_t)
    a_t = (1 - 2 * t) / (2 * t * (1 - t))
    exact = m + (s - 1) * e0 + a_t * (x[:, 0] - t * m - c * e0)
    torch.testing.assert_close(coupling.velocity(x, t)[:, 0], exact, rtol=0, atol=1e-9)


def test_velocity_matches_brute_force_quadrature_over_x0() -> None:
    """Reference: E[u | x_t = x] by a dense trapezoid rule over x0 of phi(x0) N(x; mu_t(x0), sigma_t^2)
    (4e5 points), for the same piecewise-linear map, at points in the bulk and in the gap."""
    sigma = 0.5
    coupling = MonotoneCoupling.from_mixture(BIMODAL, sigma)
    x0 = torch.linspace(-9, 9, 400001, dtype=F64)
    x1 = coupling.map(x0)
    for x, t in [(-2.0, 0.9), (-0.3, 0.05), (0.2, 0.5), (1.1, 0.97), (0.0, 0.98), (3.0, 0.3)]:
        var_t = sigma**2 * t * (1 - t)
        mu = (1 - t) * x0 + t * x1
        logw = -0.5 * x0**2 - 0.5 * (x - mu) ** 2 / var_t
        w = torch.exp(logw - logw.max())
        u = x1 - x0 + (1 - 2 * t) / (2 * t * (1 - t)) * (x - mu)
        ref = float(torch.trapezoid(w * u, x0) / torch.trapezoid(w, x0))
        got = float(coupling.velocity(torch.tensor([[x]], dtype=F64), torch.tensor([t], dtype=F64)))
        assert got == pytest.approx(ref, abs=1e-6), (x, t)


def test_conditional_targets_average_to_the_marginal_velocity() -> None:
    """E[phi(x_t, t) (u - b(x_t, t))] = 0 for the OT pairs of a bimodal target: z-scores within 5."""
    sigma = 0.5
    coupling = MonotoneCoupling.from_mixture(BIMODAL, sigma)
    g = gen(5)
    x0 = torch.randn(20000, 1, generator=g, dtype=F64)
    path = Interpolant(sigma=sigma, t_eps=0.02).sample(x0, coupling.map(x0), generator=g)
    resid = path.target - coupling.velocity(path.xt, path.t)
    stats = default_features_1d(path.xt, path.t)[:, 0, :] * resid
    z = stats.mean(0) / (stats.std(0) / math.sqrt(len(stats)))
    assert float(z.abs().max()) < 5.0
    # the independent coupling's field is a different field: strongly rejected
    wrong = path.target - GaussianMixturePath(BIMODAL, sigma).velocity(path.xt, path.t)
    stats = default_features_1d(path.xt, path.t)[:, 0, :] * wrong
    assert float((stats.mean(0) / (stats.std(0) / math.sqrt(len(stats)))).abs().max()) > 10.0


def test_monotone_coupling_rejects_bad_input() -> None:
    g = torch.linspace(-1, 1, 5, dtype=F64)
    with pytest.raises(ValueError, match=r"x1_grid must be strictly increasing \(a monotone map\)"):
        MonotoneCoupling(g, torch.tensor([0.0, 1.0, 0.5, 2.0, 3.0], dtype=F64), 0.5)
    with pytest.raises(ValueError, match="x0_grid must be strictly increasing"):
        MonotoneCoupling(g.flip(0), g, 0.5)
    with pytest.raises(ValueError, match="sigma must be a finite number > 0"):
        MonotoneCoupling(g, g, 0.0)
    with pytest.raises(ValueError, match=r"x0_grid and x1_grid must have the same shape"):
        MonotoneCoupling(g, g[:4], 0.5)
    coupling = MonotoneCoupling(g, g, 0.5)
    with pytest.raises(ValueError, match=r"t must lie strictly inside \(0, 1\)"):
        coupling.velocity(torch.zeros(2, 1, dtype=F64), torch.tensor([0.5, 1.0], dtype=F64))
    with pytest.raises(ValueError, match=r"t must have shape \(2,\)"):
        coupling.velocity(torch.zeros(2, 1, dtype=F64), torch.tensor([0.5], dtype=F64))


# ----------------------------------------------------------------------------------------- slope fit
def test_loglog_slope_recovers_power_law_and_matches_scipy_stderr() -> None:
    n = np.repeat([100, 400, 1600, 6400], 3)
    fit = loglog_slope(n, 3.0 * n**-0.5)
    assert fit.slope == pytest.approx(-0.5, abs=1e-12) and fit.se == pytest.approx(0.0, abs=1e-12)
    rng = np.random.default_rng(0)
    y = n**-0.5 * np.exp(0.3 * rng.standard_normal(n.size))
    fit = loglog_slope(n, y)
    ref = scipy.stats.linregress(np.log(n), np.log(y))
    assert fit.slope == pytest.approx(ref.slope) and fit.se == pytest.approx(ref.stderr) and fit.dof == n.size - 2


def test_loglog_slope_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="same length >= 3"):
        loglog_slope([1, 2], [1, 2])
    with pytest.raises(ValueError, match="values > 0"):
        loglog_slope([1, 2, 3], [1, 0, 2])
    with pytest.raises(ValueError, match="at least two distinct values"):
        loglog_slope([5, 5, 5], [1, 2, 3])


# ----------------------------------------------------------------------------------------- T4 terms, statistics
def test_hotelling_critical_is_the_t_quantile_squared_for_one_feature_and_tends_to_chi2() -> None:
    # F = 1: T^2 = t_{n-1}^2, so its upper-level quantile is the two-sided t quantile squared
    for n in (5, 30, 400):
        t = scipy.stats.t.ppf(1 - 0.01 / 2, n - 1)
        assert hotelling_critical(n, 1, 0.01) == pytest.approx(t * t, rel=1e-10)
    assert hotelling_critical(10**7, 6, 1e-3) == pytest.approx(scipy.stats.chi2.ppf(1 - 1e-3, 6), rel=1e-5)
    with pytest.raises(ValueError, match="n must exceed n_features = 6"):
        hotelling_critical(6, 6, 0.01)
    with pytest.raises(ValueError, match=r"level must lie in \(0, 1\)"):
        hotelling_critical(60, 6, 1.0)


def _terms(sigma: float = 0.5) -> GradientTerms:
    pre = GaussianMixture.from_dict({"weights": [1.0], "means": [0.0], "stds": [1.0]})
    return GradientTerms(field=LinearField(torch.randn(6, generator=gen(3), dtype=F64)),
                         interpolant=Interpolant(sigma=sigma, t_eps=0.02), target=BIMODAL,
                         target_path=GaussianMixturePath(BIMODAL, sigma=sigma),
                         ot=MonotoneCoupling.from_mixture(BIMODAL, sigma), pretrained=pre,
                         pretrained_path=GaussianMixturePath(pre, sigma=0.0),
                         pretrained_coupling=MonotoneCoupling.from_mixture(pre, sigma))


def test_gradient_terms_are_reproducible_unbiased_and_the_control_is_not() -> None:
    terms = _terms()
    a, b = terms.draw(3000, gen(7)), terms.draw(3000, gen(7))
    assert tuple(a) == GradientTerms.KEYS
    for key in GradientTerms.KEYS:
        assert a[key].conditional.shape == (3000, 6)
        assert torch.equal(a[key].conditional, b[key].conditional)
        assert torch.equal(a[key].marginal, b[key].marginal)
    assert torch.equal(a["pre_drift"].conditional, a["pre_drift"].marginal)   # drift form: already marginal
    assert torch.equal(a["control"].conditional, a["tgt_ot"].conditional)     # the control shares the OT draw
    # T4: conditional and marginal gradients differ by mean-zero noise (Hotelling at level 1e-6 over 3 tests);
    # the control regresses OT pairs on the wrong (independent) field and is biased
    crit = hotelling_critical(3000, 6, 1e-6 / 3)
    for key in ("tgt_independent", "tgt_ot", "pre_coupling"):
        assert a[key].compare().hotelling < crit, key
    assert a["control"].compare().hotelling > 10 * crit


def test_gradient_terms_and_combined_norm_reject_bad_input() -> None:
    with pytest.raises(TypeError, match="ot must be a MonotoneCoupling"):
        GradientTerms(**{**_terms().__dict__, "ot": BIMODAL})
    with pytest.raises(ValueError, match="n must be an integer >= 2"):
        _terms().draw(1, gen())
    g_t, g_p = torch.tensor([3.0, 0.0], dtype=F64), torch.tensor([0.0, 4.0], dtype=F64)
    assert combined_gradient_norm(g_t, g_p, 1.0) == pytest.approx(2.5)     # |(3, 4)| / 2
    assert combined_gradient_norm(g_t, g_p, 0.0) == pytest.approx(3.0)
    with pytest.raises(ValueError, match="beta must be a finite number >= 0"):
        combined_gradient_norm(g_t, g_p, -1.0)
    with pytest.raises(ValueError, match="same shape"):
        combined_gradient_norm(g_t, g_p[:1], 1.0)
