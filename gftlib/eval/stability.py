"""Training-curve measures: stability (instantaneous variance, Spearman rho, largest jump, early
degradation) and training speed (first step, and training wall time, to reach a quality level).

These are this project's operationalization of the paper's measures (THEORY, "Measures used by the
experiments"); the paper's exact definitions are not available offline. A *curve* is a 1-D sequence
c_1..c_n: the per-step target loss, or a quality metric (W2, FD, FID; lower is better) at
successive evaluations, with its training ``steps``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import scipy.stats

from gftlib.validation import check_choice, check_finite_number, check_positive_int

__all__ = ["instantaneous_variance", "sliding_instantaneous_variance", "spearman_rho", "max_upward_jump",
           "early_degradation", "steps_to_reach", "seconds_to_reach", "relative_level"]


def _curve(name: str, curve: Sequence[float], min_n: int = 2) -> np.ndarray:
    c = np.asarray(curve, dtype=np.float64)
    if c.ndim != 1 or c.size < min_n or not np.all(np.isfinite(c)):
        raise ValueError(f"{name} must be a 1-D sequence of at least {min_n} finite numbers, got shape "
                         f"{c.shape}")
    return c


def instantaneous_variance(curve: Sequence[float]) -> float:
    """Half the mean squared successive difference, sum_i (c_{i+1} - c_i)^2 / (2 (n - 1)).

    The von Neumann estimator of short-term fluctuation: for i.i.d. noise of variance s^2 its mean is
    s^2; a smooth trend adds only (slope per point)^2 / 2 (a linear curve c_i = a i gives a^2 / 2).
    Lower is more stable.
    """
    c = _curve("curve", curve)
    return float(np.sum(np.diff(c) ** 2) / (2.0 * (c.size - 1)))


def sliding_instantaneous_variance(curve: Sequence[float], window: int) -> np.ndarray:
    """:func:`instantaneous_variance` of every window of ``window`` consecutive points: (n - window + 1,)."""
    c = _curve("curve", curve)
    window = check_positive_int("window", window, minimum=2)
    if window > c.size:
        raise ValueError(f"window must be in [2, len(curve)={c.size}], got {window}")
    sq = np.diff(c) ** 2
    csum = np.concatenate([[0.0], np.cumsum(sq)])
    return (csum[window - 1:] - csum[: c.size - window + 1]) / (2.0 * (window - 1))


def spearman_rho(steps: Sequence[float], curve: Sequence[float]) -> float:
    """Spearman rank correlation between evaluation step and quality, in [-1, 1].

    For a lower-is-better metric, -1 is a monotone improvement, values near 0 or above mean erratic
    or degrading training. A constant curve (no ranks to correlate) gives 0 by convention.
    """
    s, c = _curve("steps", steps), _curve("curve", curve)
    if s.shape != c.shape:
        raise ValueError(f"steps and curve must have the same length, got {s.size} and {c.size}")
    if np.all(c == c[0]) or np.all(s == s[0]):
        return 0.0
    return float(scipy.stats.spearmanr(s, c).statistic)


def max_upward_jump(curve: Sequence[float]) -> float:
    """max_k max(0, c[k+1] - c[k]) of a curve (0 for a non-increasing curve)."""
    c = _curve("curve", curve)
    return float(max(0.0, np.max(np.diff(c))))


def early_degradation(steps: Sequence[int], curve: Sequence[float], *, fraction: float = 0.25) -> float:
    """max over evaluations at 0 < step <= fraction * last step of (curve(step) - curve(0)).

    Positive: training first made the curve worse than at step 0. If no evaluation falls in the
    window, the first one after step 0 is used.
    """
    s, c = np.asarray(steps, dtype=np.float64), np.asarray(curve, dtype=np.float64)
    if s.shape != c.shape or s.ndim != 1 or s.size < 2:
        raise ValueError(f"steps and curve must be 1-D of the same length >= 2, got {s.shape} and {c.shape}")
    if s[0] != 0:
        raise ValueError(f"steps must start at 0 (the initial model), got {s[0]:g}")
    fraction = check_finite_number("fraction", fraction, minimum=0.0, maximum=1.0, strict=True)
    window = (s > 0) & (s <= fraction * s[-1])
    if not window.any():
        window = np.zeros_like(window)
        window[1] = True
    return float(np.max(c[window] - c[0]))


def relative_level(reference: float, *, tolerance: float = 0.05, better: str = "lower") -> float:
    """The level "within ``tolerance`` of ``reference``": reference * (1 + tol) when lower is better,
    reference * (1 - tol) when higher is better (``reference`` >= 0)."""
    check_choice("better", better, ("lower", "higher"))
    reference = check_finite_number("reference", reference, minimum=0.0)
    tolerance = check_finite_number("tolerance", tolerance, minimum=0.0, maximum=1.0)
    return reference * (1.0 + tolerance) if better == "lower" else reference * (1.0 - tolerance)


def steps_to_reach(steps: Sequence[float], curve: Sequence[float], level: float, *,
                   better: str = "lower") -> float:
    """First evaluation step whose value reaches ``level`` (<= level when lower is better, >= when
    higher is better); ``inf`` if the curve never reaches it. Resolution: the evaluation spacing."""
    check_choice("better", better, ("lower", "higher"))
    s, c = _curve("steps", steps, 1), _curve("curve", curve, 1)
    if s.shape != c.shape:
        raise ValueError(f"steps and curve must have the same length, got {s.size} and {c.size}")
    level = check_finite_number("level", level)
    ok = np.flatnonzero(c <= level if better == "lower" else c >= level)
    return float(s[ok[0]]) if ok.size else math.inf


def seconds_to_reach(seconds: Sequence[float], curve: Sequence[float], level: float, *,
                     better: str = "lower") -> float:
    """Training wall time at the first evaluation whose value reaches ``level`` (<= level when lower
    is better, >= when higher is better); ``inf`` if the curve never reaches it (as
    :func:`steps_to_reach`).

    ``seconds`` (E,): the training seconds at each evaluation (evaluations excluded,
    :mod:`gftlib.experiments.walltime`): finite, >= 0 and non-decreasing; ``curve`` (E,): the
    metric at the same evaluations. Resolution: the evaluation spacing. Wall times depend on the
    machine and its load, so compare them only between runs measured on the same machine.
    """
    check_choice("better", better, ("lower", "higher"))
    s = np.asarray(seconds, dtype=np.float64)
    if s.ndim != 1 or s.size < 1:
        raise ValueError(f"seconds must be a 1-D sequence of at least 1 number, got shape {s.shape}")
    if not np.all(np.isfinite(s)) or np.any(s < 0):
        raise ValueError(f"seconds must hold finite numbers >= 0, got {s.tolist()}")
    if np.any(np.diff(s) < 0):
        raise ValueError(f"seconds must be non-decreasing (training time at successive evaluations), got "
                         f"{s.tolist()}")
    c = _curve("curve", curve, 1)
    if s.shape != c.shape:
        raise ValueError(f"seconds and curve must have the same length, got {s.size} and {c.size}")
    return steps_to_reach(s, c, level, better=better)
