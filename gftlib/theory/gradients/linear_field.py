"""A linear field b_theta(x, t) = phi(x, t) theta and its per-sample regression gradients (THEORY T4).

The per-sample gradient of |b_theta(x_i, t_i) - y_i|^2 is
g_i = 2 sum_d phi_i[d, :] (b_theta(x_i, t_i)[d] - y_i[d]) (F,), so every gradient estimate comes with a per-sample standard error. Everything is float64;
t = 0 noise, t = 1 data.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from gftlib.validation import check_finite_number, check_tensor

__all__ = ["default_features_1d", "LinearField", "regression_gradients", "PerSampleGradients",
           "GradientComparison"]

_F64 = torch.float64


def default_features_1d(x: Tensor, t: Tensor) -> Tensor:
    """Six fixed features of (x, t) for 1-D x: [1, t, x, t x, tanh(2 x), exp(-x^2 / 2)].

    x: (n, 1), t: (n,) -> (n, 1, 6)."""
    xx = x[:, 0]
    cols = [torch.ones_like(xx), t, xx, t * xx, torch.tanh(2 * xx), torch.exp(-0.5 * xx * xx)]
    return torch.stack(cols, dim=1)[:, None, :]


class LinearField(nn.Module):
    """b_theta(x, t) = features(x, t) @ theta: x (n, d), t (n,) -> (n, d), float64.

    ``features(x, t)`` must return (n, d, F); ``theta`` (F,) is the only parameter. A drop-in
    velocity model for :mod:`gftlib.losses` (so gradients can be cross-checked with autograd).
    """

    def __init__(self, theta: Tensor, features: Callable[[Tensor, Tensor], Tensor] = default_features_1d) -> None:
        super().__init__()
        check_tensor("theta", theta, ndim=1)
        if not callable(features):
            raise TypeError(f"features must be callable as features(x, t) -> (n, d, F), got {type(features).__name__}")
        self.features = features
        self.theta = nn.Parameter(theta.detach().to(_F64).clone())

    @property
    def n_features(self) -> int:
        return int(self.theta.shape[0])

    def phi(self, x: Tensor, t: Tensor) -> Tensor:
        """Feature tensor (n, d, F) after shape checks."""
        check_tensor("x", x, ndim=2)
        check_tensor("t", t, ndim=1)
        if t.shape[0] != x.shape[0]:
            raise ValueError(f"t must have shape ({x.shape[0]},), got {tuple(t.shape)}")
        out = self.features(x.to(_F64), t.to(_F64))
        want = (x.shape[0], x.shape[1], self.n_features)
        if not isinstance(out, Tensor) or tuple(out.shape) != want:
            got = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
            raise ValueError(f"features(x, t) must return shape {want} (n, d, F with F = len(theta)), got {got}")
        return out

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        return torch.einsum("ndf,f->nd", self.phi(x, t), self.theta)


def regression_gradients(field: LinearField, x: Tensor, t: Tensor, target: Tensor) -> Tensor:
    """Per-sample gradients (n, F) of |b_theta(x_i, t_i) - target_i|^2 with respect to theta.

    x, target: (n, d); t: (n,). The mean over rows is the gradient of
    :func:`gftlib.losses.regression_loss` (no weight) at the same batch."""
    if not isinstance(field, LinearField):
        raise TypeError(f"field must be a LinearField, got {type(field).__name__}")
    check_tensor("target", target, ndim=2)
    if target.shape != x.shape:
        raise ValueError(f"target must have the shape of x {tuple(x.shape)}, got {tuple(target.shape)}")
    with torch.no_grad():
        phi = field.phi(x, t)
        resid = torch.einsum("ndf,f->nd", phi, field.theta) - target.to(_F64)
        return 2.0 * torch.einsum("ndf,nd->nf", phi, resid)


@dataclass(frozen=True)
class GradientComparison:
    """Conditional vs marginal gradient from n per-sample gradients.

    conditional, marginal, difference, difference_se: (F,) (difference = conditional - marginal,
    difference_se its per-component standard error std/sqrt(n)); hotelling: n D^T S^{-1} D with S the
    sample covariance of the per-sample differences (approximately chi^2 with F degrees of freedom when
    the difference has mean zero); relative_difference: |D| / |marginal|.
    """

    n: int
    conditional: Tensor
    marginal: Tensor
    difference: Tensor
    difference_se: Tensor
    hotelling: float
    relative_difference: float


@dataclass(frozen=True)
class PerSampleGradients:
    """Per-sample gradients (n, F) of the conditional and of the marginal objective at the same points."""

    conditional: Tensor
    marginal: Tensor

    def __post_init__(self) -> None:
        check_tensor("conditional", self.conditional, ndim=2)
        check_tensor("marginal", self.marginal, ndim=2)
        if self.conditional.shape != self.marginal.shape:
            raise ValueError(f"conditional and marginal must have the same shape, got "
                             f"{tuple(self.conditional.shape)} and {tuple(self.marginal.shape)}")

    @property
    def n(self) -> int:
        return int(self.conditional.shape[0])

    def combine(self, other: PerSampleGradients, beta: float, *, normalize: bool = True) -> PerSampleGradients:
        """Row-wise (self + beta * other) [/ (1 + beta)]: the GFT objective's per-sample gradients from the
        target term (self) and the pretrained term (other), drawn independently with the same n."""
        if not isinstance(other, PerSampleGradients):
            raise TypeError(f"other must be PerSampleGradients, got {type(other).__name__}")
        if other.conditional.shape != self.conditional.shape:
            raise ValueError(f"other must have shape {tuple(self.conditional.shape)} (same n and F), "
                             f"got {tuple(other.conditional.shape)}")
        b = check_finite_number("beta", beta, minimum=0.0)
        scale = 1.0 / (1.0 + b) if normalize else 1.0
        return PerSampleGradients(conditional=scale * (self.conditional + b * other.conditional),
                                  marginal=scale * (self.marginal + b * other.marginal))

    def compare(self) -> GradientComparison:
        """Means, the difference, its standard errors and Hotelling's statistic (needs n > F)."""
        n, f = self.conditional.shape
        if n <= f:
            raise ValueError(f"compare needs more samples than features (n > F = {f}), got n={n}")
        diff = self.conditional - self.marginal
        d = diff.mean(0)
        centred = diff - d
        cov = centred.T @ centred / (n - 1)
        se = torch.sqrt(torch.diagonal(cov) / n)
        if float(cov.abs().max()) == 0.0:      # identical per-sample gradients: no difference at all
            t2 = 0.0
        else:
            t2 = float(n * d @ torch.linalg.solve(cov, d))
        g_m = self.marginal.mean(0)
        return GradientComparison(n=n, conditional=self.conditional.mean(0), marginal=g_m, difference=d,
                                  difference_se=se, hotelling=t2,
                                  relative_difference=float(d.norm() / g_m.norm()))
