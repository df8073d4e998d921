"""Tests for gftlib.theory.analytic: Gaussian-mixture paths against Monte Carlo, PDEs, autograd and quadrature."""

from __future__ import annotations

import math

import pytest
import torch

from gftlib.theory.analytic import (
    GaussianMixture,
    GaussianMixturePath,
    gft_mixture_drift,
    kl_divergence_quadrature,
    tv_distance_quadrature,
)
from gftlib.paths.interpolants import Interpolant

F64 = torch.float64
KS_999 = 1.95  # Kolmogorov 99.9% critical value, times 1/sqrt(n)


pytestmark = pytest.mark.usefixtures("single_thread")


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


Q1 = GaussianMixture.from_dict({"weights": [0.3, 0.7], "means": [-2.0, 1.5], "stds": [0.5, 0.8]})
P1 = GaussianMixture.from_dict({"weights": [1.0], "means": [0.5], "stds": [1.2]})
Q2 = GaussianMixture.from_dict({"weights": [0.2, 0.5, 0.3], "means": [[-2, 0], [1.5, 1], [0, -2.5]],
                                "stds": [0.5, 0.8, 0.3]})
P2 = GaussianMixture.from_dict({"weights": [0.6, 0.4], "means": [[0.5, -1], [-1, 2]], "stds": [1.2, 0.6]})


def _ks(samples, cdf_values_sorted):
    n = samples.shape[0]
    i = torch.arange(1, n + 1, dtype=F64)
    return float(torch.maximum(i / n - cdf_values_sorted, cdf_values_sorted - (i - 1) / n).max())


# ---------------------------------------------------------------- GaussianMixture
def test_from_dict_shapes_and_normalisation():
    assert Q1.dim == 1 and Q1.means.shape == (2, 1) and Q1.n_components == 2
    assert Q2.dim == 2 and Q2.means.dtype == F64
    g = GaussianMixture.from_dict({"weights": [0.5, 0.5], "means": [[0, 0, 0], [1, 1, 1]], "stds": 0.3})
    assert g.stds.tolist() == [0.3, 0.3] and g.dim == 3
    assert GaussianMixture.from_dict(Q2.to_dict()).to_dict() == Q2.to_dict()


def _norm_pdf(x, m, s):
    return torch.exp(-0.5 * ((x - m) / s) ** 2) / (s * math.sqrt(2 * math.pi))


def _norm_cdf(x):
    return 0.5 * math.erfc(-x / math.sqrt(2))


def test_log_prob_integrates_to_one_and_matches_closed_form():
    x = torch.linspace(-12, 12, 48001, dtype=F64)
    for m in (Q1, P1, GaussianMixturePath(Q1, 0.7).marginal(0.35)):
        assert abs(float(torch.trapezoid(m.log_prob(x).exp(), x)) - 1.0) < 1e-9
    ref = 0.3 * _norm_pdf(x, -2, 0.5) + 0.7 * _norm_pdf(x, 1.5, 0.8)
    torch.testing.assert_close(Q1.log_prob(x[:, None]).exp(), ref, rtol=1e-12, atol=1e-300)
    # 2-D: product form of an isotropic component
    y = torch.tensor([[0.3, -0.4]], dtype=F64)
    one = GaussianMixture.from_dict({"weights": [1.0], "means": [[1.0, 2.0]], "stds": [0.7]})
    expected = math.log(_norm_pdf(torch.tensor(0.3, dtype=F64), 1.0, 0.7) * _norm_pdf(torch.tensor(-0.4, dtype=F64), 2.0, 0.7))
    assert abs(float(one.log_prob(y)) - expected) < 1e-12


def test_cdf_projected_closed_form_and_samples():
    # 1-D: the CDF is the integral of the density
    x = torch.linspace(-8, 8, 32001, dtype=F64)
    dens = Q1.log_prob(x).exp()
    cum = torch.cat([torch.zeros(1, dtype=F64), torch.cumulative_trapezoid(dens, x)])
    torch.testing.assert_close(Q1.cdf_projected(x), cum, rtol=0, atol=1e-8)
    # 2-D: KS of projected samples against the closed form
    n = 20_000
    u = torch.tensor([0.6, 0.8], dtype=F64)
    y = (Q2.sample(n, _gen(0)) @ u).sort().values
    assert _ks(y, Q2.cdf_projected(y, u)) < KS_999 / math.sqrt(n)
    # the test has power: a wrong direction is rejected
    v = torch.tensor([0.8, 0.6], dtype=F64)
    assert _ks(y, Q2.cdf_projected(y, v)) > 3 * KS_999 / math.sqrt(n)


def test_mix_is_the_weighted_density():
    x = torch.linspace(-6, 6, 101, dtype=F64)[:, None]
    for beta in (0.0, 0.5, 3.0):
        m = Q1.mix(P1, beta)
        expected = (Q1.log_prob(x).exp() + beta * P1.log_prob(x).exp()) / (1 + beta)
        torch.testing.assert_close(m.log_prob(x).exp(), expected, rtol=1e-13, atol=1e-300)
        assert abs(float(m.weights.sum()) - 1.0) < 1e-15


# ---------------------------------------------------------------- GaussianMixturePath
@pytest.mark.parametrize("sigma", [0.0, 0.9])
@pytest.mark.parametrize("t", [0.0, 0.3, 0.8, 1.0])
def test_marginals_match_path_samples_ks(sigma, t):
    """Samples of x_t = (1-t) x0 + t x1 + sigma sqrt(t(1-t)) z projected on u: KS against p_t's CDF."""
    n = 20_000
    g = _gen(1)
    x0 = torch.randn(n, 2, generator=g, dtype=F64)
    x1 = Q2.sample(n, g)
    z = torch.randn(n, 2, generator=g, dtype=F64)
    xt = (1 - t) * x0 + t * x1 + sigma * math.sqrt(t * (1 - t)) * z
    u = torch.tensor([-0.28, 0.96], dtype=F64)
    y = (xt @ u).sort().values
    marginal = GaussianMixturePath(Q2, sigma).marginal(t)
    assert _ks(y, marginal.cdf_projected(y, u)) < KS_999 / math.sqrt(n)
    if 0 < t < 1 and sigma > 0:  # power: forgetting the bridge variance is detected
        wrong = GaussianMixturePath(Q2, 0.0).marginal(t)
        assert _ks(y, wrong.cdf_projected(y, u)) > KS_999 / math.sqrt(n)


def _bin_regression_check(path, mix, t, sigma, diffusion, n, seed, edges):
    """E[conditional target | x_t in bin] from samples vs the exact bin average of the analytic field
    (weighted by p_t, by quadrature: no bin-width bias), within 5 standard errors per bin."""
    g = _gen(seed)
    x0 = torch.randn(n, 1, generator=g, dtype=F64)
    x1 = mix.sample(n, g)
    ps = Interpolant(sigma).sample(x0, x1, t=t, generator=g, diffusion=diffusion)
    x, y = ps.xt[:, 0], ps.target[:, 0]
    idx = torch.bucketize(x.contiguous(), edges) - 1
    worst = 0.0
    for j in range(len(edges) - 1):
        m = idx == j
        cnt = int(m.sum())
        assert cnt > 200, "bins must be populated"
        emp = float(y[m].mean())
        se = float(y[m].std()) / math.sqrt(cnt)
        q = torch.linspace(float(edges[j]), float(edges[j + 1]), 201, dtype=F64)[:, None]
        w = path.log_prob(q, t).exp()
        field = path.velocity(q, t) if diffusion == 0 else path.drift(q, t, diffusion)
        exact = float(torch.trapezoid(w * field[:, 0], q[:, 0]) / torch.trapezoid(w, q[:, 0]))
        worst = max(worst, abs(emp - exact) / se)
    return worst


@pytest.mark.parametrize("sigma,diffusion,t", [(0.0, 0.0, 0.6), (0.0, 0.0, 0.25), (0.8, 0.0, 0.5),
                                               (0.8, 0.8, 0.5), (1.0, 0.4, 0.7)])
def test_velocity_and_drift_equal_conditional_expectation(sigma, diffusion, t):
    """The analytic marginal velocity / SDE drift is E[conditional target | x_t] (1-D Monte Carlo)."""
    path = GaussianMixturePath(Q1, sigma)
    edges = torch.linspace(-1.6, 1.6, 17, dtype=F64) if t < 0.5 else torch.linspace(-2.2, 2.2, 23, dtype=F64)
    worst = _bin_regression_check(path, Q1, t, sigma, diffusion, 150_000, 2, edges)
    assert worst < 5.0


def test_bin_regression_has_power():
    """The same check rejects a drift that uses the wrong diffusion (0.4 instead of 0.8)."""

    class Wrong(GaussianMixturePath):
        def drift(self, x, t, diffusion):
            return super().drift(x, t, 0.4)

    edges = torch.linspace(-1.6, 1.6, 17, dtype=F64)
    assert _bin_regression_check(Wrong(Q1, 0.8), Q1, 0.5, 0.8, 0.8, 150_000, 2, edges) > 8.0


@pytest.mark.parametrize("sigma,diffusion", [(0.0, 0.0), (0.7, 0.0), (0.7, 0.7), (0.5, 1.2)])
def test_feature_orthogonality_2d(sigma, diffusion):
    """In 2-D, E[(target - b(x_t)) phi(x_t)] = 0 for features phi (regression residual orthogonality)."""
    n, t = 100_000, 0.55
    g = _gen(3)
    x0 = torch.randn(n, 2, generator=g, dtype=F64)
    x1 = Q2.sample(n, g)
    ps = Interpolant(sigma).sample(x0, x1, t=t, generator=g, diffusion=diffusion)
    path = GaussianMixturePath(Q2, sigma)
    field = path.velocity(ps.xt, t) if diffusion == 0 else path.drift(ps.xt, t, diffusion)
    resid = ps.target - field  # (n, 2)
    x = ps.xt
    feats = torch.stack([torch.ones(n, dtype=F64), x[:, 0], x[:, 1], x[:, 0] * x[:, 1], torch.tanh(2 * x[:, 0]),
                         torch.exp(-0.5 * (x ** 2).sum(1))], 1)  # (n, F)
    prod = resid[:, :, None] * feats[:, None, :]  # (n, 2, F)
    z = prod.mean(0) / (prod.std(0) / math.sqrt(n))
    assert float(z.abs().max()) < 5.0


@pytest.mark.parametrize("sigma", [0.0, 0.6])
@pytest.mark.parametrize("g", [0.0, 0.5, 1.1])
def test_fokker_planck_1d(sigma, g):
    """d_t p_t = -d_x (p_t b) + g^2/2 d_xx p_t for b = drift(., ., g) (finite differences)."""
    path = GaussianMixturePath(Q1, sigma)
    x = torch.linspace(-4, 4, 81, dtype=F64)[:, None]
    h, ht = 1e-3, 1e-5

    def p(xx, tt):
        return path.log_prob(xx, tt).exp()

    for t in (0.1, 0.5, 0.9):
        dpdt = (p(x, t + ht) - p(x, t - ht)) / (2 * ht)
        flux = lambda xx: p(xx, t) * path.drift(xx, t, g)[:, 0]  # noqa: E731
        dflux = (flux(x + h) - flux(x - h)) / (2 * h)
        lap = (p(x + h, t) - 2 * p(x, t) + p(x - h, t)) / h**2
        resid = dpdt + dflux - 0.5 * g**2 * lap
        assert float(resid.abs().max()) < 1e-5 * (1 + float(dpdt.abs().max()))


@pytest.mark.parametrize("sigma", [0.0, 0.8])
def test_score_is_autograd_of_log_prob(sigma):
    path = GaussianMixturePath(Q2, sigma)
    x = torch.randn(50, 2, generator=_gen(4), dtype=F64) * 2
    for t in (0.0, 0.3, torch.rand(50, generator=_gen(5), dtype=F64), 1.0):
        xr = x.clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(path.log_prob(xr, t).sum(), xr)
        torch.testing.assert_close(path.score(x, t), grad, rtol=1e-10, atol=1e-12)
        if not isinstance(t, torch.Tensor):
            torch.testing.assert_close(path.log_prob(x, t), path.marginal(t).log_prob(x), rtol=1e-13, atol=1e-13)


def test_drift_is_velocity_plus_half_g2_score():
    path = GaussianMixturePath(Q2, 0.5)
    x = torch.randn(20, 2, generator=_gen(6), dtype=F64)
    t = torch.linspace(0.05, 0.95, 20, dtype=F64)
    torch.testing.assert_close(path.drift(x, t, 0.9), path.velocity(x, t) + 0.405 * path.score(x, t),
                               rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(path.drift(x, t, 0.0), path.velocity(x, t), rtol=0, atol=0)


def test_end_points():
    """t = 0: p_0 = N(0, I) and the velocity is E[x1] - x (sigma = 0); t = 1: p_1 = the target."""
    path = GaussianMixturePath(Q2, 0.0)
    x = torch.randn(10, 2, generator=_gen(7), dtype=F64)
    std_normal = -0.5 * (x**2).sum(1) - math.log(2 * math.pi)
    torch.testing.assert_close(path.log_prob(x, 0.0), std_normal, rtol=1e-13, atol=1e-13)
    mean1 = (Q2.weights[:, None] * Q2.means).sum(0)
    torch.testing.assert_close(path.velocity(x, 0.0), mean1 - x, rtol=1e-13, atol=1e-13)
    torch.testing.assert_close(path.log_prob(x, 1.0), Q2.log_prob(x), rtol=1e-13, atol=1e-13)


# ---------------------------------------------------------------- the GFT mixture drift (THEORY T2)
@pytest.mark.parametrize("sigma", [0.0, 0.6])
@pytest.mark.parametrize("diffusion", [0.0, 0.8])
@pytest.mark.parametrize("beta", [0.0, 0.25, 1.0, 7.0])
def test_gft_mixture_drift_is_drift_of_mixture_path(sigma, diffusion, beta):
    """The mixture of two independent-coupling paths is the path of the mixed target, so b*_beta equals
    that path's drift exactly."""
    tp, pp = GaussianMixturePath(Q2, sigma), GaussianMixturePath(P2, sigma)
    star = gft_mixture_drift(tp, pp, beta, diffusion)
    mixed = GaussianMixturePath(Q2.mix(P2, beta), sigma)
    x = 3 * torch.randn(200, 2, generator=_gen(8), dtype=F64)
    for t in (0.0, 0.5, 0.97, torch.rand(200, generator=_gen(9), dtype=F64)):
        torch.testing.assert_close(star(x, t), mixed.drift(x, t, diffusion), rtol=1e-11, atol=1e-11)
    if beta == 0:
        torch.testing.assert_close(star(x, 0.4), tp.drift(x, 0.4, diffusion), rtol=0, atol=0)


def test_gft_mixture_drift_stable_far_in_the_tails():
    """Both densities underflow far away; the log-space weights keep the result finite."""
    tp, pp = GaussianMixturePath(Q1), GaussianMixturePath(P1)
    star = gft_mixture_drift(tp, pp, 2.0)
    x = torch.tensor([[-60.0], [45.0], [200.0]], dtype=F64)
    assert float(tp.log_prob(x, 0.9).exp().max()) == 0.0  # underflow in linear space
    out = star(x, 0.9)
    assert bool(torch.isfinite(out).all())
    # exact via logaddexp: the weight of the wider (pretrained) density dominates far out
    lam = star.weight_target(x, 0.9)
    assert float(lam.max()) < 1e-6


def test_output_dtype_follows_input():
    tp, pp = GaussianMixturePath(Q2), GaussianMixturePath(P2)
    x = torch.randn(5, 2, generator=_gen(10))
    assert gft_mixture_drift(tp, pp, 1.0)(x, torch.full((5,), 0.5)).dtype == torch.float32


# ---------------------------------------------------------------- quadrature (THEORY T3)
def test_kl_and_tv_quadrature_against_closed_forms():
    a = GaussianMixture.from_dict({"weights": [1.0], "means": [0.3], "stds": [0.7]})
    b = GaussianMixture.from_dict({"weights": [1.0], "means": [-1.0], "stds": [1.6]})
    kl = math.log(1.6 / 0.7) + (0.7**2 + 1.3**2) / (2 * 1.6**2) - 0.5
    assert abs(kl_divergence_quadrature(a, b) - kl) < 1e-9
    assert abs(kl_divergence_quadrature(a, a)) < 1e-12
    c = GaussianMixture.from_dict({"weights": [1.0], "means": [1.1], "stds": [0.7]})
    tv = 2 * _norm_cdf(0.8 / (2 * 0.7)) - 1
    assert abs(tv_distance_quadrature(a, c) - tv) < 1e-7


@pytest.mark.parametrize("beta", [0.1, 0.5, 1.0, 4.0])
def test_t3_bounds(beta):
    """KL(q || m_beta) <= log(1 + beta) and TV(q, m_beta) = beta/(1+beta) TV(q, p)."""
    m = Q1.mix(P1, beta)
    assert 0 < kl_divergence_quadrature(Q1, m) <= math.log1p(beta)
    assert abs(tv_distance_quadrature(Q1, m) - beta / (1 + beta) * tv_distance_quadrature(Q1, P1)) < 1e-8


# ---------------------------------------------------------------- rejected inputs
def test_from_dict_validation():
    ok = {"weights": [0.5, 0.5], "means": [[0.0, 0.0], [1.0, 1.0]], "stds": [1.0, 1.0]}
    with pytest.raises(ValueError, match="weights must sum to 1"):
        GaussianMixture.from_dict({**ok, "weights": [0.5, 0.6]})
    with pytest.raises(ValueError, match="weights must contain finite non-negative weights"):
        GaussianMixture.from_dict({**ok, "weights": [1.5, -0.5]})
    with pytest.raises(ValueError, match=r"means must have shape \(K, d\) or \(K,\) for d = 1 with K = 2"):
        GaussianMixture.from_dict({**ok, "means": [[0.0, 0.0]]})
    with pytest.raises(ValueError, match=r"means must have shape"):
        GaussianMixture.from_dict({**ok, "means": [0.0, 1.0, 2.0]})
    with pytest.raises(ValueError, match="means must be finite"):
        GaussianMixture.from_dict({**ok, "means": [[0.0, float("nan")], [1.0, 1.0]]})
    with pytest.raises(ValueError, match=r"stds must be finite and > 0"):
        GaussianMixture.from_dict({**ok, "stds": [1.0, 0.0]})
    with pytest.raises(ValueError, match=r"stds must be finite and > 0"):
        GaussianMixture.from_dict({**ok, "stds": [1.0, float("inf")]})
    with pytest.raises(ValueError, match=r"stds must have shape \(2,\)"):
        GaussianMixture.from_dict({**ok, "stds": [1.0, 1.0, 1.0]})
    with pytest.raises(ValueError, match="missing \\['stds'\\]"):
        GaussianMixture.from_dict({"weights": [1.0], "means": [0.0]})
    with pytest.raises(ValueError, match="unknown \\['cov'\\]"):
        GaussianMixture.from_dict({**ok, "cov": 1})
    with pytest.raises(TypeError, match="spec must be a dict"):
        GaussianMixture.from_dict([1, 2])


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="direction must be a unit vector"):
        Q2.cdf_projected(torch.zeros(3, dtype=F64), [1.0, 1.0])
    with pytest.raises(ValueError, match="direction is required for a 2-D mixture"):
        Q2.cdf_projected(torch.zeros(3, dtype=F64))
    with pytest.raises(ValueError, match="beta must be a finite number >= 0, got -0.5"):
        Q1.mix(P1, -0.5)
    with pytest.raises(ValueError, match="other must have the same dimension 1, got 2"):
        Q1.mix(P2, 1.0)
    with pytest.raises(ValueError, match="sigma must be a finite number >= 0"):
        GaussianMixturePath(Q1, -1.0)
    with pytest.raises(ValueError, match=r"t must be a finite number >= 0 and <= 1, got 1.5"):
        GaussianMixturePath(Q1).velocity(torch.zeros(2, 1, dtype=F64), 1.5)
    with pytest.raises(ValueError, match=r"t must lie in \[0, 1\]"):
        GaussianMixturePath(Q1).score(torch.zeros(2, 1, dtype=F64), torch.tensor([0.5, -0.1], dtype=F64))
    with pytest.raises(ValueError, match=r"x must have shape \(n, 2\)"):
        GaussianMixturePath(Q2).velocity(torch.zeros(3, 3, dtype=F64), 0.5)
    with pytest.raises(ValueError, match="diffusion must be a finite number >= 0"):
        GaussianMixturePath(Q2).drift(torch.zeros(3, 2, dtype=F64), 0.5, -1.0)
    with pytest.raises(ValueError, match="beta must be a finite number >= 0, got nan"):
        gft_mixture_drift(GaussianMixturePath(Q1), GaussianMixturePath(P1), float("nan"))
    with pytest.raises(ValueError, match="same dimension"):
        gft_mixture_drift(GaussianMixturePath(Q1), GaussianMixturePath(P2), 1.0)
    with pytest.raises(ValueError, match="p must be a 1-D mixture for quadrature"):
        kl_divergence_quadrature(Q2, P2)
    with pytest.raises(ValueError, match="hi must be > lo"):
        tv_distance_quadrature(Q1, P1, lo=1.0, hi=0.0)
    with pytest.raises(TypeError, match="sample needs generator=torch.Generator"):
        Q1.sample(10, None)


def test_from_dict_names_the_parameter():
    with pytest.raises(TypeError, match=r"target_mixture must be a dict with keys 'weights', 'means', "
                                        r"'stds', got '<bad>' \(str\)"):
        GaussianMixture.from_dict("<bad>", name="target_mixture")
    with pytest.raises(ValueError, match=r"p_pre must have exactly the keys .*missing \['stds'\]"):
        GaussianMixture.from_dict({"weights": [1.0], "means": [0.0]}, name="p_pre")
    with pytest.raises(TypeError, match="spec must be a dict"):  # the default name
        GaussianMixture.from_dict([1.0])
