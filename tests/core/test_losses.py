"""Tests for gftlib.losses: exact values, beta = 0 reduction, and the GFT minimizer (THEORY T2/T4)."""

from __future__ import annotations

import math

import pytest
import torch

from gftlib.theory.analytic import GaussianMixture, GaussianMixturePath, gft_mixture_drift
from gftlib.paths.interpolants import Interpolant, PathSample
from gftlib.losses import DriftBatch, LossTerms, cfm_loss, gft_loss, regression_loss

F64 = torch.float64


pytestmark = pytest.mark.usefixtures("single_thread")


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


class Linear(torch.nn.Module):
    """model(x, t) = a * x + c * t (broadcast over trailing dims)."""

    def __init__(self, a=0.5, c=-1.0):
        super().__init__()
        self.a = torch.nn.Parameter(torch.tensor(a, dtype=F64))
        self.c = torch.nn.Parameter(torch.tensor(c, dtype=F64))

    def forward(self, x, t):
        return self.a * x + self.c * t.reshape(-1, *[1] * (x.ndim - 1))


class Histogram(torch.nn.Module):
    """1-D piecewise-constant field: theta[j] on bin j (bin 0 / B+1: outside [edges[0], edges[-1]])."""

    def __init__(self, edges):
        super().__init__()
        self.edges = edges
        self.theta = torch.nn.Parameter(torch.zeros(len(edges) + 1, dtype=F64))

    def forward(self, x, t):
        return self.theta[torch.bucketize(x[:, 0].contiguous(), self.edges)][:, None]


def _path(shape, seed, sigma=0.0, diffusion=0.0, t=None):
    g = _gen(seed)
    x0 = torch.randn(shape, generator=g, dtype=F64)
    x1 = 1.0 + torch.randn(shape, generator=g, dtype=F64)
    return Interpolant(sigma, t_eps=0.01).sample(x0, x1, t=t, generator=g, diffusion=diffusion)


# ---------------------------------------------------------------- exact values
def test_regression_loss_closed_form():
    g = _gen(0)
    x = torch.randn(6, 2, 3, generator=g, dtype=F64)
    t = torch.rand(6, generator=g, dtype=F64)
    target = torch.randn(6, 2, 3, generator=g, dtype=F64)
    w = torch.rand(6, generator=g, dtype=F64)
    model = Linear()
    pred = 0.5 * x - t[:, None, None]
    per = ((pred - target) ** 2).sum(dim=(1, 2))
    torch.testing.assert_close(regression_loss(model, x, t, target), per.mean(), rtol=1e-14, atol=0)
    torch.testing.assert_close(regression_loss(model, x, t, target, weight=w), (w * per).mean(), rtol=1e-14, atol=0)
    torch.testing.assert_close(regression_loss(model, x, t, target, weight=lambda s: 1 + s), ((1 + t) * per).mean(),
                               rtol=1e-14, atol=0)
    # a perfect model has zero loss
    torch.testing.assert_close(regression_loss(model, x, t, pred), torch.zeros((), dtype=F64))


def test_cfm_loss_is_regression_on_path():
    ps = _path((32, 3), seed=1, sigma=0.5, diffusion=0.5)
    model = Linear(0.3, 0.7)
    expected = ((model(ps.xt, ps.t) - ps.target) ** 2).sum(1).mean()
    torch.testing.assert_close(cfm_loss(model, ps), expected, rtol=1e-14, atol=0)


def test_gft_at_beta_zero_equals_cfm_exactly():
    tgt = _path((64, 2, 4, 4), seed=2)
    pre = _path((64, 2, 4, 4), seed=3)
    model = Linear(0.2, 0.4)
    cfm = cfm_loss(model, tgt)
    for pretrained in (None, pre, DriftBatch(x=pre.xt, t=pre.t, target=pre.target)):
        for normalize in (True, False):
            terms = gft_loss(model, tgt, 0.0, pretrained, normalize=normalize)
            assert isinstance(terms, LossTerms) and terms.beta == 0.0
            assert torch.equal(terms.total, cfm) and torch.equal(terms.target, cfm)
    none = gft_loss(model, tgt, 0.0, None)
    assert none.pretrained.shape == () and float(none.pretrained) == 0.0
    logged = gft_loss(model, tgt, 0.0, pre)
    torch.testing.assert_close(logged.pretrained, cfm_loss(model, pre))
    assert not logged.pretrained.requires_grad


@pytest.mark.parametrize("beta", [0.3, 4.0])
def test_gft_total_formula(beta):
    tgt = _path((50, 3), seed=4)
    pre = _path((70, 3), seed=5)
    model = Linear(-0.1, 0.9)
    w = lambda s: 2.0 - s  # noqa: E731
    a, b = cfm_loss(model, tgt, w), cfm_loss(model, pre, w)
    terms = gft_loss(model, tgt, beta, pre, weight=w)
    torch.testing.assert_close(terms.target, a, rtol=1e-14, atol=0)
    torch.testing.assert_close(terms.pretrained, b, rtol=1e-14, atol=0)
    torch.testing.assert_close(terms.total, (a + beta * b) / (1 + beta), rtol=1e-14, atol=0)
    raw = gft_loss(model, tgt, beta, pre, weight=w, normalize=False)
    torch.testing.assert_close(raw.total, a + beta * b, rtol=1e-14, atol=0)
    drift = DriftBatch(x=pre.xt, t=pre.t, target=pre.target)
    torch.testing.assert_close(gft_loss(model, tgt, beta, drift, weight=w).total, terms.total, rtol=1e-14, atol=0)
    terms.total.backward()
    assert model.a.grad is not None and math.isfinite(float(model.a.grad))


class CountingMLP(torch.nn.Module):
    """A small per-sample MLP field that counts its forward calls and the rows it saw."""

    def __init__(self, dim=3):
        super().__init__()
        torch.manual_seed(0)
        self.net = torch.nn.Sequential(torch.nn.Linear(dim + 1, 16), torch.nn.Tanh(), torch.nn.Linear(16, dim))
        self.net.double()
        self.calls: list[int] = []

    def forward(self, x, t):
        self.calls.append(x.shape[0])
        return self.net(torch.cat([x, t[:, None]], dim=1))


@pytest.mark.parametrize("drift_form", [False, True])
def test_fused_forward_equals_two_passes(drift_form):
    # one forward pass on the concatenated batch gives the same terms and gradients as two passes
    # (per-sample network: only floating-point reassociation can differ, float64 -> 1e-12)
    tgt, pre = _path((40, 3), seed=14), _path((24, 3), seed=15)
    if drift_form:
        pre = DriftBatch(x=pre.xt, t=pre.t, target=pre.target)
    w = lambda s: 1.5 - s  # noqa: E731
    grads = {}
    for fused in (True, False):
        model = CountingMLP()
        terms = gft_loss(model, tgt, 0.7, pre, weight=w, fused=fused)
        terms.total.backward()
        assert model.calls == ([64] if fused else [40, 24])
        grads[fused] = [p.grad.clone() for p in model.parameters()]
        grads[(fused, "terms")] = (terms.target.detach(), terms.pretrained.detach(), terms.total.detach())
    for a, b in zip(grads[(True, "terms")], grads[(False, "terms")]):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=0)
    for a, b in zip(grads[True], grads[False]):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-15)


def test_fused_forward_only_when_possible():
    tgt = _path((8, 3), seed=16)
    model = CountingMLP()
    # beta = 0: the pretrained term is logged without gradient, in its own pass
    gft_loss(model, tgt, 0.0, _path((8, 3), seed=17))
    assert model.calls == [8, 8]
    # a batch of another dtype cannot be concatenated: two passes, same math
    model.calls.clear()
    pre32 = _path((8, 3), seed=18)
    pre32 = DriftBatch(x=pre32.xt.float(), t=pre32.t.float(), target=pre32.target.float())
    with pytest.raises(RuntimeError):  # the float64 network rejects float32 input in its own pass
        gft_loss(model, tgt, 0.5, pre32)
    assert model.calls == [8, 8]
    with pytest.raises(TypeError, match="fused must be True or False"):
        gft_loss(model, tgt, 0.5, _path((8, 3), seed=19), fused=1)


# ---------------------------------------------------------------- the minimizer (THEORY T2 / T4)
TARGET = GaussianMixture.from_dict({"weights": [0.4, 0.6], "means": [-1.5, 2.0], "stds": [0.4, 0.6]})
PRETRAINED = GaussianMixture.from_dict({"weights": [0.5, 0.5], "means": [-0.3, 3.0], "stds": [0.7, 0.5]})
T_FIX = 0.6
EDGES = torch.linspace(-2.0, 2.6, 24, dtype=F64)  # 23 interior bins of width 0.2


def _minimizer(model, loss_fn):
    """The loss is a separable quadratic in theta: grad = 2 a theta - 2 c, so theta* = -g(0) / (g(1) - g(0))."""
    grads = []
    for value in (0.0, 1.0):
        with torch.no_grad():
            model.theta.fill_(value)
        model.zero_grad()
        loss_fn().backward()
        grads.append(model.theta.grad.clone())
    g0, g1 = grads
    return -g0 / (g1 - g0)


def _bin_average(weight_fn, field_fn):
    """int_B w f / int_B w on every interior bin (fine trapezoid quadrature, float64)."""
    out = []
    for lo, hi in zip(EDGES[:-1].tolist(), EDGES[1:].tolist()):
        x = torch.linspace(lo, hi, 201, dtype=F64)[:, None]
        w = weight_fn(x)
        out.append(float(torch.trapezoid(w * field_fn(x), x[:, 0]) / torch.trapezoid(w, x[:, 0])))
    return torch.tensor(out, dtype=F64)


def _delta_se(theta, terms):
    """Delta-method standard error of the ratio estimator per bin.

    terms: list of (coef, x (n,), y (n,)): theta_hat = sum coef/n sum 1_B y / sum coef/n sum 1_B."""
    num_var = torch.zeros(len(EDGES) - 1, dtype=F64)
    den = torch.zeros(len(EDGES) - 1, dtype=F64)
    for coef, x, y in terms:
        n = x.shape[0]
        idx = torch.bucketize(x.contiguous(), EDGES) - 1
        for j in range(len(EDGES) - 1):
            m = idx == j
            r = torch.where(m, y - theta[j], torch.zeros_like(y))
            num_var[j] += coef**2 * (r.pow(2).mean() - r.mean() ** 2) / n
            den[j] += coef * m.double().mean()
    return num_var.sqrt() / den


def _samples_on_path(mix, n, seed, sigma, diffusion):
    g = _gen(seed)
    x0 = torch.randn(n, 1, generator=g, dtype=F64)
    x1 = mix.sample(n, g)
    return Interpolant(sigma).sample(x0, x1, t=T_FIX, generator=g, diffusion=diffusion)


@pytest.mark.parametrize("beta", [1.0, 3.0])
def test_coupling_form_minimizer_is_mixture_drift(beta):
    """Histogram least squares on the GFT loss (target pairs + independent pretrained pairs) recovers the
    bin averages of b*_beta = (p_tgt b_tgt + beta p_pre b_pre) / (p_tgt + beta p_pre)."""
    n = 100_000
    tgt = _samples_on_path(TARGET, n, 10, 0.0, 0.0)
    pre = _samples_on_path(PRETRAINED, n, 11, 0.0, 0.0)
    model = Histogram(EDGES)
    theta = _minimizer(model, lambda: gft_loss(model, tgt, beta, pre).total)[1:-1]

    tp, pp = GaussianMixturePath(TARGET), GaussianMixturePath(PRETRAINED)
    star = gft_mixture_drift(tp, pp, beta)
    mix_density = lambda x: tp.log_prob(x, T_FIX).exp() + beta * pp.log_prob(x, T_FIX).exp()  # noqa: E731
    expected = _bin_average(mix_density, lambda x: star(x, T_FIX)[:, 0])
    se = _delta_se(theta, [(1.0, tgt.xt[:, 0], tgt.target[:, 0]), (beta, pre.xt[:, 0], pre.target[:, 0])])
    assert float(((theta - expected).abs() / se).max()) < 5.0
    # power: the naive average (b_tgt + beta b_pre)/(1 + beta) is far outside the tolerance
    naive = _bin_average(lambda x: tp.log_prob(x, T_FIX).exp(),
                         lambda x: (tp.velocity(x, T_FIX) + beta * pp.velocity(x, T_FIX))[:, 0] / (1 + beta))
    assert float(((naive - expected).abs() / se).max()) > 10.0


@pytest.mark.parametrize("sigma,diffusion,pre_sigma", [(0.0, 0.0, 0.0), (0.8, 0.8, 0.0), (1.0, 0.5, 0.6)])
def test_drift_form_minimizer_is_mixture_drift(sigma, diffusion, pre_sigma):
    """Target term: conditional (SDE) drift targets; pretrained term: DriftBatch at x ~ p^pre_t with the
    analytic pretrained drift for the same diffusion. Minimizer: b*_beta with that diffusion."""
    beta, n = 2.0, 100_000
    tgt = _samples_on_path(TARGET, n, 20, sigma, diffusion)
    tp, pp = GaussianMixturePath(TARGET, sigma), GaussianMixturePath(PRETRAINED, pre_sigma)
    xp = pp.marginal(T_FIX).sample(n, _gen(21))
    tpre = torch.full((n,), T_FIX, dtype=F64)
    batch = DriftBatch(x=xp, t=tpre, target=pp.drift(xp, tpre, diffusion))
    model = Histogram(EDGES)
    theta = _minimizer(model, lambda: gft_loss(model, tgt, beta, batch).total)[1:-1]

    star = gft_mixture_drift(tp, pp, beta, diffusion)
    mix_density = lambda x: tp.log_prob(x, T_FIX).exp() + beta * pp.log_prob(x, T_FIX).exp()  # noqa: E731
    expected = _bin_average(mix_density, lambda x: star(x, T_FIX)[:, 0])
    se = _delta_se(theta, [(1.0, tgt.xt[:, 0], tgt.target[:, 0]), (beta, xp[:, 0], batch.target[:, 0])])
    assert float(((theta - expected).abs() / se).max()) < 5.0


def test_naive_regulariser_minimizer():
    """A DriftBatch on the target path's own points gives (b_tgt + beta b_pre) / (1 + beta) averaged over p_tgt."""
    beta, n = 2.0, 100_000
    tgt = _samples_on_path(TARGET, n, 30, 0.0, 0.0)
    tp, pp = GaussianMixturePath(TARGET), GaussianMixturePath(PRETRAINED)
    naive = DriftBatch(x=tgt.xt, t=tgt.t, target=pp.velocity(tgt.xt, tgt.t))
    model = Histogram(EDGES)
    theta = _minimizer(model, lambda: gft_loss(model, tgt, beta, naive).total)[1:-1]
    expected = _bin_average(lambda x: tp.log_prob(x, T_FIX).exp(),
                            lambda x: (tp.velocity(x, T_FIX) + beta * pp.velocity(x, T_FIX))[:, 0] / (1 + beta))
    combined = (tgt.target[:, 0] + beta * naive.target[:, 0]) / (1 + beta)
    se = _delta_se(theta, [(1.0, tgt.xt[:, 0], combined)])
    assert float(((theta - expected).abs() / se).max()) < 5.0


# ---------------------------------------------------------------- rejected inputs
def test_bad_inputs_raise():
    tgt = _path((8, 2), seed=40)
    pre = _path((8, 2), seed=41)
    model = Linear()
    with pytest.raises(ValueError, match="beta must be a finite number >= 0, got -1.0"):
        gft_loss(model, tgt, -1.0, pre)
    with pytest.raises(ValueError, match="beta must be a finite number >= 0, got nan"):
        gft_loss(model, tgt, float("nan"), pre)
    with pytest.raises(ValueError, match="beta=0.5 > 0 needs a pretrained batch"):
        gft_loss(model, tgt, 0.5, None)
    with pytest.raises(TypeError, match="pretrained must be a PathSample, a DriftBatch or None"):
        gft_loss(model, tgt, 0.5, (pre.xt, pre.t))
    with pytest.raises(TypeError, match="weight for gft_loss must be a callable"):
        gft_loss(model, tgt, 0.5, pre, weight=torch.ones(8, dtype=F64))
    with pytest.raises(TypeError, match="normalize must be True or False"):
        gft_loss(model, tgt, 0.5, pre, normalize=1)
    with pytest.raises(TypeError, match="path must be a PathSample"):
        cfm_loss(model, DriftBatch(x=pre.xt, t=pre.t, target=pre.target))
    with pytest.raises(ValueError, match=r"weight must have shape \(8,\)"):
        cfm_loss(model, tgt, weight=torch.ones(7, dtype=F64))
    with pytest.raises(ValueError, match=r"weight\(t\) must have shape \(8,\)"):
        cfm_loss(model, tgt, weight=lambda s: torch.ones(8, 1, dtype=F64))
    with pytest.raises(ValueError, match="weight must be non-negative"):
        cfm_loss(model, tgt, weight=-torch.ones(8, dtype=F64))
    with pytest.raises(ValueError, match=r"model output must have the shape of x \(8, 2\), got \(8, 1\)"):
        cfm_loss(lambda x, t: x[:, :1], tgt)
    with pytest.raises(ValueError, match=r"target must have the shape of x"):
        regression_loss(model, tgt.xt, tgt.t, tgt.target[:, :1])
    with pytest.raises(ValueError, match=r"t must have shape \(8,\)"):
        regression_loss(model, tgt.xt, tgt.t[:5], tgt.target)
    with pytest.raises(ValueError, match="target must contain only finite values"):
        regression_loss(model, tgt.xt, tgt.t, tgt.target * float("inf"))
    assert isinstance(tgt, PathSample)
