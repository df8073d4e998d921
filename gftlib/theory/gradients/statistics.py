"""Statistics of the gradient checks: log-log slope fits and Hotelling's T^2 critical values."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.stats

from gftlib.validation import check_finite_number, check_positive_int

__all__ = ["SlopeFit", "loglog_slope", "hotelling_critical"]


@dataclass(frozen=True)
class SlopeFit:
    """Least-squares fit log(value) = intercept + slope log(n): slope, its standard error from the
    residuals (``se``), ``dof`` = points - 2, ``intercept``."""

    slope: float
    intercept: float
    se: float
    dof: int


def loglog_slope(n: np.ndarray | list[float], values: np.ndarray | list[float]) -> SlopeFit:
    """Ordinary least squares of log(values) on log(n) (all points, e.g. several repeats per n)."""
    x = np.log(np.asarray(n, dtype=np.float64).reshape(-1))
    yv = np.asarray(values, dtype=np.float64).reshape(-1)
    if x.shape != yv.shape or x.size < 3:
        raise ValueError(f"n and values must have the same length >= 3, got {x.size} and {yv.size}")
    if not np.all(np.isfinite(x)) or not np.all(np.isfinite(yv)) or np.any(yv <= 0):
        raise ValueError("n and values must be finite and values > 0 (they are log-transformed)")
    y = np.log(yv)
    xc = x - x.mean()
    sxx = float(xc @ xc)
    if sxx == 0.0:
        raise ValueError("n must take at least two distinct values to fit a slope")
    slope = float(xc @ (y - y.mean()) / sxx)
    intercept = float(y.mean() - slope * x.mean())
    resid = y - intercept - slope * x
    dof = x.size - 2
    se = float(np.sqrt(resid @ resid / dof / sxx))
    return SlopeFit(slope=slope, intercept=intercept, se=se, dof=dof)


def hotelling_critical(n: int, n_features: int, level: float) -> float:
    """Upper ``level`` quantile of Hotelling's T^2 = n D^T S^{-1} D for n i.i.d. Gaussian vectors of
    dimension F = ``n_features`` with mean zero: F (n - 1) / (n - F) times the F(F, n - F) quantile
    (-> the chi^2_F quantile as n grows). Needs n > F; ``level`` in (0, 1)."""
    n = check_positive_int("n", n, minimum=2)
    f = check_positive_int("n_features", n_features)
    if n <= f:
        raise ValueError(f"n must exceed n_features = {f} for Hotelling's T^2, got n={n}")
    level = check_finite_number("level", level, minimum=0.0, strict=True)
    if not level < 1.0:
        raise ValueError(f"level must lie in (0, 1), got {level!r}")
    return float(f * (n - 1) / (n - f) * scipy.stats.f.ppf(1 - level, f, n - f))
