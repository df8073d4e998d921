"""Exact and quadrature distances between 1-D Gaussian mixtures, with the trapezoid error at kinks.

The ground truth of THEORY T3: the total variation TV(a, b) = 1/2 int |a - b| of two 1-D mixtures
exactly, from the mixtures' CDFs between the crossing points of the two densities, and the error
bound of the trapezoid rule for |a - b| (smooth except at those crossings, where it has kinks).
The trapezoid values themselves are :func:`gftlib.theory.analytic.tv_distance_quadrature` and
:func:`gftlib.theory.analytic.kl_divergence_quadrature`. Everything is float64; points are 1-D arrays.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import scipy.optimize
import torch

from gftlib.theory.analytic import GaussianMixture
from gftlib.validation import check_positive_int

__all__ = ["mixture_1d", "quadrature_range", "mixture_density", "density_crossings", "exact_tv_by_crossings",
           "trapezoid_kink_tolerance"]

_F64 = torch.float64
EPS = float(np.finfo(np.float64).eps)


def mixture_1d(name: str, spec: Any, *, why: str = "quadrature is 1-D") -> GaussianMixture:
    """``GaussianMixture.from_dict(spec)`` that must be 1-D; the error names ``name`` and ``why``."""
    mix = spec if isinstance(spec, GaussianMixture) else GaussianMixture.from_dict(spec, name=name)
    if mix.dim != 1:
        raise ValueError(f"{name} must be a 1-D mixture ({why}), got dimension {mix.dim}")
    return mix


def _check_1d(**mixtures: GaussianMixture) -> None:
    for name, m in mixtures.items():
        if not isinstance(m, GaussianMixture) or m.dim != 1:
            raise TypeError(f"{name} must be a 1-D GaussianMixture, got {m!r}")


def quadrature_range(*mixtures: GaussianMixture, width: float = 12.0) -> tuple[float, float]:
    """[lo, hi] covering every component of the mixtures by +/- ``width`` standard deviations (the mass
    outside is < 1e-32 for the default 12)."""
    _check_1d(**{f"mixtures[{i}]": m for i, m in enumerate(mixtures)})
    if not mixtures:
        raise ValueError("quadrature_range needs at least one mixture")
    means = torch.cat([m.means[:, 0] for m in mixtures])
    stds = torch.cat([m.stds for m in mixtures])
    return float((means - width * stds).min()), float((means + width * stds).max())


def mixture_density(mix: GaussianMixture, x: Any) -> np.ndarray:
    """Density of the 1-D mixture at the points ``x`` (scalar or (m,)): (m,) float64."""
    _check_1d(mix=mix)
    pts = torch.as_tensor(np.atleast_1d(x), dtype=_F64).reshape(-1, 1)
    return mix.log_prob(pts).exp().numpy()


def _log_ratio(a: GaussianMixture, b: GaussianMixture) -> Callable[[float], float]:
    def f(z: float) -> float:
        pt = torch.tensor([[z]], dtype=_F64)
        return float(a.log_prob(pt) - b.log_prob(pt))

    return f


def density_crossings(a: GaussianMixture, b: GaussianMixture, lo: float, hi: float, n: int) -> np.ndarray:
    """The points of [lo, hi] where the densities of a and b cross, increasing: sign changes of
    log a - log b bracketed on n grid points (a crossing on a grid point is still bracketed), each
    refined by Brent's method to ~1e-14. Crossings closer together than the grid step can be missed."""
    _check_1d(a=a, b=b)
    n = check_positive_int("n", n, minimum=3)
    if not hi > lo:
        raise ValueError(f"hi must be > lo, got lo={lo!r}, hi={hi!r}")
    grid = np.linspace(lo, hi, n)
    x = torch.as_tensor(grid).reshape(-1, 1)
    above = (a.log_prob(x) - b.log_prob(x)).numpy() > 0
    idx = np.nonzero(above[:-1] != above[1:])[0]
    f = _log_ratio(a, b)
    return np.array([scipy.optimize.brentq(f, grid[i], grid[i + 1], xtol=1e-14, rtol=4 * EPS) for i in idx])


def exact_tv_by_crossings(a: GaussianMixture, b: GaussianMixture, *, lo: float | None = None,
                          hi: float | None = None, n: int = 80004) -> tuple[float, np.ndarray]:
    """TV(a, b) of two 1-D mixtures, exactly up to rounding: the sum over the intervals between
    crossings where a > b of [A(right) - A(left)] - [B(right) - B(left)] with the mixture CDFs A, B.
    Crossings are searched on n points of [lo, hi] (default: :func:`quadrature_range`).
    Returns (tv, crossings (r,))."""
    _check_1d(a=a, b=b)
    if lo is None or hi is None:
        lo, hi = quadrature_range(a, b)
    cross = density_crossings(a, b, lo, hi, n)
    f = _log_ratio(a, b)

    def cdf(m: GaussianMixture, z: float) -> float:
        if not np.isfinite(z):
            return 1.0 if z > 0 else 0.0
        return float(m.cdf_projected(torch.tensor([z], dtype=_F64)))

    edges = np.concatenate([[-np.inf], cross, [np.inf]])
    tv = 0.0
    for left, right in zip(edges[:-1], edges[1:]):
        if np.isfinite(left) and np.isfinite(right):
            mid = 0.5 * (left + right)
        else:
            mid = right - 1.0 if np.isfinite(right) else (left + 1.0 if np.isfinite(left) else 0.0)
        if f(mid) > 0:  # a > b on this interval
            tv += (cdf(a, right) - cdf(a, left)) - (cdf(b, right) - cdf(b, left))
    return tv, cross


def trapezoid_kink_tolerance(a: GaussianMixture, b: GaussianMixture, crossings: np.ndarray, h: float,
                             n: int) -> float:
    """Error bound of the trapezoid rule (step h, n points) for TV(a, b) = 1/2 int |g|, g = a - b.

    |g| is smooth except at the crossings c, where it has a kink: there the trapezoid rule errs by at
    most |g'(c)| h^2 / 4, plus the Euler–Maclaurin term of the derivative jump 2 |g'(c)| h^2 / 12.
    Returns 1/2 sum_c |g'(c)| h^2 (1/4 + 1/6), times 2 (margin), plus float64 rounding n eps; g'(c) by a
    central difference of step 1e-6."""
    _check_1d(a=a, b=b)
    n = check_positive_int("n", n)
    c = np.asarray(crossings, dtype=np.float64).reshape(-1)
    if c.size == 0:
        return n * EPS
    dg = 1e-6
    slopes = np.abs((mixture_density(a, c + dg) - mixture_density(b, c + dg)
                     - mixture_density(a, c - dg) + mixture_density(b, c - dg)) / (2 * dg))
    return 0.5 * float(slopes.sum()) * h**2 * (1 / 4 + 1 / 6) * 2 + n * EPS
