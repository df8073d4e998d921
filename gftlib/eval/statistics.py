"""Two-sample statistics for the experiments' claims: tests, confidence intervals, effect sizes,
Holm's correction and the verdict rule (pure functions of per-seed values; numpy + scipy).

Conventions. ``a`` holds the GFT values, ``b`` the baseline's, one value per seed; the difference
is always ``mean(a) - mean(b)`` (GFT minus baseline). *Paired* designs (the same seed gives both
methods the same target sample, pretrained model and training randomness, so ``a[i]`` and ``b[i]``
share everything but the method) use the paired t-test on ``d = a - b``; independent designs use
Welch's t-test (unequal variances, Welch-Satterthwaite degrees of freedom).

Two kinds of claim:

* ``"difference"`` (GFT is better): two-sided test of ``H0: delta = 0``. After Holm's correction
  over the whole family, a rejected ``H0`` gives *reproduced* when the sign favours GFT and
  *not reproduced* when it favours the baseline; otherwise *inconclusive*.
* ``"equivalence"`` (GFT's quality is *comparable*): two one-sided tests (TOST) of
  ``H0: |delta| >= margin`` with a margin stated in advance by the caller (the experiments use the
  metric's own noise floor, the value of the metric between two independent samples of the target
  of the evaluation size: a difference below it is one the metric cannot resolve). Rejected after
  Holm: *reproduced* (equivalent within the margin). A second hypothesis of the same row,
  ``H0: GFT is worse by at most the margin`` (one-sided), rejected after Holm: *not reproduced*
  (worse by more than the margin). Both p-values join the Holm family, so the family-wise error
  rate covers both verdicts. Otherwise *inconclusive*.

A single seed per method (or a paired design with fewer than two pairs) gives no variance: the row
has no p-value, takes no part in the correction and is always *inconclusive*.

Zero variance. When every seed gives the same difference (a discrete metric such as dopri5 NFE:
20 vs 26 on all five seeds) the standard error is 0 and the t statistic is undefined; the t-test's
``p = 0`` would be an artefact. Such a test falls back to the exact randomization test of the same
design, which needs no variance: sign flips of the paired differences (one-sided ``p = 2^-n``,
two-sided ``2^(1-n)``: 0.0625 for five seeds, never significant) or relabellings of the two samples
(one-sided ``1 / C(n_a + n_b, n_a)``); ``p = 1`` when the shifted statistic is 0 or points the other way.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import stats as _st

from gftlib.validation import check_choice

__all__ = ["VERDICTS", "KINDS", "two_sample", "tost", "holm", "verdict", "hedges_g"]

VERDICTS = ("reproduced", "not reproduced", "inconclusive")
KINDS = ("difference", "equivalence")


def _values(name: str, values: Sequence[float]) -> np.ndarray:
    arr = np.asarray(values, dtype=float)
    if arr.ndim != 1 or arr.size == 0 or not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must be a non-empty 1-D list of finite numbers, got {list(values)!r}")
    return arr


def _t_p(t: float, df: float, alternative: str) -> float:
    """p-value of a finite t statistic."""
    if alternative == "two-sided":
        return float(2.0 * _st.t.sf(abs(t), df))
    if alternative == "greater":
        return float(_st.t.sf(t, df))
    return float(_st.t.cdf(t, df))


def _exact_min_p(n_a: int, n_b: int, paired: bool) -> float:
    """Smallest one-sided p of the exact randomization test (sign flips / relabellings)."""
    return 0.5 ** n_a if paired else 1.0 / math.comb(n_a + n_b, n_a)


def _p(shift: float, se: float, df: float, alternative: str, n_a: int, n_b: int, paired: bool) -> float:
    """p-value of ``H0`` for the statistic ``shift / se``: the t-test, or with ``se = 0`` the exact
    randomization test (see the module docstring: a zero standard error must not give ``p = 0``)."""
    if se > 0.0:
        return _t_p(shift / se, df, alternative)
    if shift == 0.0:
        return 1.0
    one_sided = _exact_min_p(n_a, n_b, paired)
    if alternative == "two-sided":
        return min(1.0, 2.0 * one_sided)
    agrees = shift > 0 if alternative == "greater" else shift < 0
    return one_sided if agrees else 1.0


def _moments(a: np.ndarray, b: np.ndarray, paired: bool) -> tuple[float, float, float]:
    """``(diff, standard error, degrees of freedom)`` of ``mean(a) - mean(b)``."""
    if paired:
        d = a - b
        n = d.size
        return float(d.mean()), float(d.std(ddof=1) / math.sqrt(n)), float(n - 1)
    va, vb = a.var(ddof=1) / a.size, b.var(ddof=1) / b.size
    se = math.sqrt(va + vb)
    if se == 0.0:
        df = float(a.size + b.size - 2)
    else:  # Welch-Satterthwaite
        df = float((va + vb) ** 2 / (va**2 / (a.size - 1) + vb**2 / (b.size - 1)))
    return float(a.mean() - b.mean()), se, df


def _t_stat(shift: float, se: float) -> float:
    if se > 0.0:
        return shift / se
    return 0.0 if shift == 0.0 else math.copysign(math.inf, shift)


def hedges_g(a: Sequence[float], b: Sequence[float]) -> float:
    """Hedges' g: Cohen's d with the pooled SD, times the small-sample factor 1 - 3/(4(n_a+n_b)-9)."""
    x, y = _values("a", a), _values("b", b)
    na, nb = x.size, y.size
    pooled = math.sqrt(((na - 1) * x.var(ddof=1) + (nb - 1) * y.var(ddof=1)) / (na + nb - 2))
    diff = float(x.mean() - y.mean())
    d = _t_stat(diff, pooled)
    return d * (1.0 - 3.0 / (4.0 * (na + nb) - 9.0))


def _check_design(a: np.ndarray, b: np.ndarray, paired: bool) -> bool:
    """Validate sizes; ``True`` when the design has enough seeds for a test."""
    if paired and a.size != b.size:
        raise ValueError(f"paired=True needs one value per seed for both methods, got {a.size} and {b.size}")
    return min(a.size, b.size) >= 2


def two_sample(a: Sequence[float], b: Sequence[float], *, paired: bool,
               confidence: float = 0.95) -> dict[str, Any]:
    """Difference ``mean(a) - mean(b)`` with its CI, effect size and two-sided p-value.

    Returns ``{"test", "n_a", "n_b", "diff", "se", "df", "ci": [lo, hi], "p", "effect_size",
    "effect_size_kind"}``; ``p``, ``ci``, ``se``, ``df`` and ``effect_size`` are ``None`` with fewer
    than two seeds. Effect size: paired ``d_z = mean(d) / sd(d)``, otherwise Hedges' g.
    ``+-inf`` effect size when every seed gives the same nonzero difference (``p`` is then the exact
    randomization test's, never 0).
    """
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")
    x, y = _values("a", a), _values("b", b)
    out: dict[str, Any] = {"test": "paired t" if paired else "Welch t", "n_a": int(x.size),
                           "n_b": int(y.size), "diff": float(x.mean() - y.mean()), "se": None,
                           "df": None, "ci": None, "p": None, "effect_size": None,
                           "effect_size_kind": "d_z" if paired else "hedges_g"}
    if not _check_design(x, y, paired):
        return out
    diff, se, df = _moments(x, y, paired)
    half = float(_st.t.ppf(0.5 + confidence / 2.0, df)) * se
    if paired:
        sd = float((x - y).std(ddof=1))
        effect = _t_stat(diff, sd)
    else:
        effect = hedges_g(x, y)
    p = _p(diff, se, df, "two-sided", x.size, y.size, paired)
    out.update(diff=diff, se=se, df=df, ci=[diff - half, diff + half], p=p, effect_size=effect)
    return out


def tost(a: Sequence[float], b: Sequence[float], *, margin: float, better: str,
         paired: bool) -> dict[str, float | None]:
    """Equivalence within ``+-margin`` (TOST) and inferiority beyond it, for ``delta = mean(a) - mean(b)``.

    Returns ``{"p_equivalent": max of the two one-sided p-values of H0: |delta| >= margin,
    "p_worse": one-sided p of H0: GFT worse by at most margin}`` (``None`` with fewer than two seeds).
    "Worse" is ``delta > 0`` when lower is better and ``delta < 0`` when higher is better.
    """
    check_choice("better", better, ("lower", "higher"))
    if not (isinstance(margin, (int, float)) and math.isfinite(margin) and margin > 0):
        raise ValueError(f"margin must be a finite number > 0, got {margin!r}")
    x, y = _values("a", a), _values("b", b)
    if not _check_design(x, y, paired):
        return {"p_equivalent": None, "p_worse": None}
    diff, se, df = _moments(x, y, paired)
    n = (x.size, y.size, paired)
    p_low = _p(diff + margin, se, df, "greater", *n)  # H0: delta <= -margin
    p_high = _p(diff - margin, se, df, "less", *n)  # H0: delta >= +margin
    sign = 1.0 if better == "lower" else -1.0  # worse direction of delta
    p_worse = _p(sign * diff - margin, se, df, "greater", *n)  # H0: sign*delta <= margin
    return {"p_equivalent": max(p_low, p_high), "p_worse": p_worse}


def holm(pvalues: Sequence[float | None]) -> list[float | None]:
    """Holm's step-down adjusted p-values (``None`` entries are skipped and stay ``None``).

    Rejecting every hypothesis with adjusted p < alpha controls the family-wise error rate at alpha
    for any dependence between the tests.
    """
    idx = [i for i, p in enumerate(pvalues) if p is not None]
    for i in idx:
        p = pvalues[i]
        if not (isinstance(p, (int, float)) and 0.0 <= p <= 1.0):
            raise ValueError(f"p-values must be numbers in [0, 1] or None, got {p!r} at index {i}")
    m = len(idx)
    order = sorted(idx, key=lambda i: pvalues[i])
    out: list[float | None] = [None] * len(pvalues)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * float(pvalues[i])))
        out[i] = running
    return out


def verdict(*, kind: str, better: str, diff: float, p_adjusted: float | None,
            p_worse_adjusted: float | None = None, alpha: float = 0.05) -> str:
    """The verdict of one claim row from its Holm-adjusted p-value(s) (see the module docstring)."""
    check_choice("kind", kind, KINDS)
    check_choice("better", better, ("lower", "higher"))
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha!r}")
    if p_adjusted is None:
        return "inconclusive"
    if kind == "equivalence":
        if p_adjusted < alpha:
            return "reproduced"
        if p_worse_adjusted is not None and p_worse_adjusted < alpha:
            return "not reproduced"
        return "inconclusive"
    if p_adjusted >= alpha or diff == 0.0:
        return "inconclusive"
    gft_better = diff < 0 if better == "lower" else diff > 0
    return "reproduced" if gft_better else "not reproduced"
