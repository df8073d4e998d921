"""Thresholds of the notebooks' checks, each derived from a distribution or a bound, never from a run.

Every function returns a number (a threshold or a yes/no on applicability) that a notebook passes
to :meth:`gftlib.experiments.report.Report.check`; the tests show each kind of check failing on a
wrong input. The kinds:

- :func:`null_upper_bound`: one-sided prediction bound of a new draw of a statistic from its null
  replicates (normal model, Student t): "this distance is at the noise floor";
- :func:`floor_tolerance_threshold`: the null bound plus a model-error tolerance fixed by the
  triangle inequality from the distances between the laws the check must tell apart
  (:func:`separation_tolerance`): "this learned law is the predicted one, not an alternative";
- :func:`difference_margin`: the one-sided critical value of a difference of two independent
  evaluations with known standard errors: "A is resolvably below B";
- :func:`gain_is_resolvable`: whether a predicted gain exceeds twice that margin (the check has
  power; otherwise it is not asserted);
- :func:`fits_target_from_pretrained`: which methods a fine-tuning check applies to.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import scipy.stats

from gftlib.experiments.methods import METHODS
from gftlib.experiments.tasks.budget import SCHEDULED_METHODS
from gftlib.validation import check_choice, check_finite_number

__all__ = ["Z_999", "null_upper_bound", "separation_tolerance", "floor_tolerance_threshold",
           "difference_margin", "gain_is_resolvable", "mixture_w2_bound", "FINETUNING_METHODS",
           "SCHEDULED_METHODS", "fits_target_from_pretrained"]

#: One-sided 99.9 % critical value of the standard normal distribution.
Z_999: float = float(scipy.stats.norm.isf(1e-3))

#: Methods that start from the pretrained weights and have a target term (the fine-tuning checks).
FINETUNING_METHODS: tuple[str, ...] = ("ft", "ft-ot", "l2-reg", "gft-drift", "gft-coupling")


def _values(name: str, values: Sequence[float], minimum: int = 2) -> np.ndarray:
    v = np.asarray(values, dtype=np.float64)
    if v.ndim != 1 or v.size < minimum or not np.all(np.isfinite(v)):
        raise ValueError(f"{name} must be at least {minimum} finite numbers, got {list(np.ravel(v))}")
    return v


def null_upper_bound(values: Sequence[float], *, confidence: float = 0.999) -> float:
    """One-sided upper prediction bound of a new draw from the null distribution of ``values``
    (normal model): mean + t_{confidence, n-1} s sqrt(1 + 1/n), s the sample std (ddof = 1).

    Under the null a new draw exceeds it with probability 1 - confidence (exactly, for normal data)."""
    v = _values("values", values)
    confidence = check_finite_number("confidence", confidence, minimum=0.5, maximum=1.0, strict=True)
    n = v.size
    return float(v.mean() + scipy.stats.t.ppf(confidence, n - 1) * v.std(ddof=1) * math.sqrt(1 + 1 / n))


def separation_tolerance(alternative_distances: Sequence[float], *, fraction: float = 0.25) -> float:
    """``fraction * min(alternative_distances)``: the model error a "learned law = predicted law"
    check tolerates, for distances D_a = W(predicted, alternative a) between the predicted law and
    each alternative it must be told apart from.

    With fraction 1/4 and tol = min_a D_a / 4, the triangle inequality gives, for a law L with
    W(L, P) <= tol: W(L, a) >= D_a - tol >= 3 tol >= 3 W(L, P), so L is at least three times closer
    to P than to any alternative. fraction must be in (0, 1/2) (at 1/2, L could be equidistant).
    Pass lower estimates of the D_a (empirical distance minus the sampling null bound)."""
    d = _values("alternative_distances", alternative_distances, minimum=1)
    if np.any(d <= 0):
        raise ValueError(f"alternative_distances must be > 0, got {d.tolist()}")
    fraction = check_finite_number("fraction", fraction, minimum=0.0, strict=True)
    if fraction >= 0.5:
        raise ValueError(f"fraction must be < 0.5, got {fraction:g}")
    return float(fraction * d.min())


def floor_tolerance_threshold(null_values: Sequence[float], tolerance: float, *,
                              confidence: float = 0.999) -> float:
    """:func:`null_upper_bound` of the null replicates plus a model-error ``tolerance`` >= 0.

    For empirical distances W(L_n, P_m) <= W(L_n, L) + W(L, P) + W(P, P_m): the sampling part is
    bounded by the null bound (same sizes), the model part by ``tolerance``."""
    tolerance = check_finite_number("tolerance", tolerance, minimum=0.0)
    return null_upper_bound(null_values, confidence=confidence) + tolerance


def difference_margin(se_a: float, se_b: float | None = None, *, z: float = Z_999) -> float:
    """``z sqrt(se_a^2 + se_b^2)``: one-sided critical value of the difference of two independent
    evaluations with standard errors ``se_a`` and ``se_b`` (default se_b = se_a, computed as
    ``z sqrt(2) se_a``). Under "no difference", A - B < -margin with probability about Phi(-z)
    (1e-3 for the default z; with z = k it is "k standard errors of the difference"). The margin of
    every "resolvably closer than the pretrained model" check of the notebooks."""
    se_a = check_finite_number("se_a", se_a, minimum=0.0)
    if se_b is not None:
        se_b = check_finite_number("se_b", se_b, minimum=0.0)
    z = check_finite_number("z", z, minimum=0.0)
    if se_b is None:
        return float(z * math.sqrt(2.0) * se_a)
    return float(z * math.sqrt(se_a**2 + se_b**2))


def gain_is_resolvable(predicted_gain: float, margin: float, *, fraction: float = 0.5) -> bool:
    """Whether a check "value < reference - margin" has power: ``fraction`` x the predicted gain
    exceeds the margin, so a model that realises that fraction of the gain passes (default 1/2;
    1 = a model that reaches the predicted optimum passes)."""
    predicted_gain = check_finite_number("predicted_gain", predicted_gain)
    margin = check_finite_number("margin", margin, minimum=0.0)
    fraction = check_finite_number("fraction", fraction, minimum=0.0, maximum=1.0)
    if fraction == 0.0:
        raise ValueError("fraction must be > 0 and <= 1, got 0")
    return bool(fraction * predicted_gain > margin)


def mixture_w2_bound(w2_pre_target: float, beta: float) -> float:
    """Upper bound sqrt(beta / (1 + beta)) W2(p_pre, q) on W2(m_beta, q), m_beta = (q + beta p_pre)/(1 + beta)
    (joint convexity of W2^2: couple q to itself and p_pre to q optimally)."""
    w = check_finite_number("w2_pre_target", w2_pre_target, minimum=0.0)
    b = check_finite_number("beta", beta, minimum=0.0)
    return float(math.sqrt(b / (1.0 + b)) * w)


def fits_target_from_pretrained(method: str, schedule_final: float | None = None) -> bool:
    """Whether ``method`` ends as plain CFM on the target started from the pretrained weights, so a
    fine-tuning check ("ends closer to the target than the pretrained model") applies: one of
    :data:`FINETUNING_METHODS`, and for a scheduled method a schedule that ends at beta = 0
    (``schedule_final``; required for scheduled methods). ``scratch`` and ``reflow`` never."""
    method = check_choice("method", method, METHODS)
    if method not in FINETUNING_METHODS:
        return False
    if method in SCHEDULED_METHODS:
        if schedule_final is None:
            raise ValueError(f"schedule_final is required for the scheduled method {method!r}")
        return check_finite_number("schedule_final", schedule_final, minimum=0.0) == 0.0
    return True
