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
  power; otherwise it is not asserted); :func:`fit_check_prediction`: the predicted gain of a GFT
  run from where its schedule ends (T2's mixture bound; a constant schedule stops at beta0 > 0);
- :func:`fits_target_from_pretrained` / :func:`fit_check_skip_reason`: which runs a fine-tuning
  check applies to, and why not (a check is applied only where its premise holds);
  :func:`loss_decrease_skip_reason` the same for E2's held-out loss decrease;
- :func:`mixture_sample`: the reference sample of T2's terminal mixture for a run whose schedule
  stops at beta > 0 ("this model sits at the mixture, not at the target").
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import scipy.stats
import torch
from torch import Tensor

from gftlib.experiments.methods import METHODS
from gftlib.experiments.tasks.budget import SCHEDULED_METHODS
from gftlib.validation import check_choice, check_finite_number, check_positive_int, check_tensor

__all__ = ["Z_999", "null_upper_bound", "separation_tolerance", "floor_tolerance_threshold",
           "difference_margin", "gain_is_resolvable", "mixture_w2_bound", "FINETUNING_METHODS",
           "SCHEDULED_METHODS", "fits_target_from_pretrained", "fit_check_skip_reason",
           "fit_check_prediction", "loss_decrease_skip_reason", "mixture_pretrained_count", "mixture_sample"]

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


def fit_check_prediction(w2_pre_target: float, floor: float, beta_final: float, margin: float
                         ) -> tuple[float, bool]:
    """The fit check "W2(model, q) <= W2(p_pre, q) - margin" of a GFT run whose schedule ends at
    ``beta_final``: (predicted final W2, whether the check has power).

    The prediction is max(floor, sqrt(b/(1+b)) W2(p_pre, q)) with b = ``beta_final``: the optimum's
    terminal law is T2's mixture (q + b p_pre)/(1 + b), whose W2 to q is at most
    :func:`mixture_w2_bound`; at b = 0 (every cooling schedule) it is the noise ``floor``. The check
    has power when a model at the prediction would pass (gain > margin, :func:`gain_is_resolvable`
    with fraction 1); a constant schedule at a large beta0 predicts too small a gain, so the check
    is then not asserted."""
    w2_pre_target = check_finite_number("w2_pre_target", w2_pre_target, minimum=0.0)
    floor = check_finite_number("floor", floor, minimum=0.0)
    predicted = max(floor, mixture_w2_bound(w2_pre_target, beta_final))
    return predicted, gain_is_resolvable(w2_pre_target - predicted, margin, fraction=1.0)


def fit_check_skip_reason(method: str, schedule_final: float | None = None) -> str | None:
    """Why a fine-tuning check ("ends closer to the target than the pretrained model") does not apply to
    a run of ``method`` whose cooling schedule ends at ``schedule_final`` (required for the scheduled
    methods, :data:`SCHEDULED_METHODS`), or None when it applies: the run starts from the pretrained
    weights and ends as plain CFM on the target. ``scratch`` (random init) and ``reflow`` (no target
    term) never qualify; a scheduled method qualifies only when its schedule ends at beta = 0."""
    method = check_choice("method", method, METHODS)
    if method == "scratch":
        return "scratch starts from a random init, not from the pretrained model"
    if method == "reflow":
        return "reflow has no target term (CFM on pretrained pairs only: it stays at p_pre)"
    beta = _final_beta_above_zero(method, schedule_final)
    if beta is not None:
        return (f"the schedule ends at beta = {beta:g} > 0: training does not end as plain CFM on the "
                "target (for gft-* the optimum is T2's mixture (q + beta p_pre)/(1 + beta))")
    return None


def loss_decrease_skip_reason(method: str, schedule_final: float | None = None) -> str | None:
    """Why the check "the held-out target CFM loss decreases from the initial model" (E2: a paired test
    at 3 standard errors) does not apply to a run of ``method`` whose cooling schedule ends at
    ``schedule_final`` (required for :data:`SCHEDULED_METHODS`), or None when it applies.

    Its power argument: at the initial model (the pretrained one, which minimises the pretrained term;
    for ``scratch`` the zero-output network) the objective's gradient is the target term's, and a run
    that ends as plain CFM on the target keeps descending it. ``reflow`` has no target term. A
    schedule that stops at beta > 0 pulls the model back to the pretrained one at every step: the
    decrease is smaller (at the optimum b = (b_tgt + beta b_pre)/(1 + beta) of a quadratic loss,
    1 - (beta/(1+beta))^2 of plain fine-tuning's) and the test has no guaranteed power."""
    method = check_choice("method", method, METHODS)
    if method == "reflow":
        return "reflow has no target term (CFM on pretrained pairs only)"
    beta = _final_beta_above_zero(method, schedule_final)
    if beta is not None:
        return (f"the schedule ends at beta = {beta:g} > 0: the pretrained term pulls the model back at "
                "every step, so the paired test has no guaranteed power")
    return None


def _final_beta_above_zero(method: str, schedule_final: float | None) -> float | None:
    """The final beta of a scheduled ``method`` when it is > 0 (None otherwise, and for unscheduled
    methods); ``schedule_final`` is required for :data:`SCHEDULED_METHODS`."""
    if method not in SCHEDULED_METHODS:
        return None
    if schedule_final is None:
        raise ValueError(f"schedule_final is required for the scheduled method {method!r}")
    beta = check_finite_number("schedule_final", schedule_final, minimum=0.0)
    return beta if beta > 0.0 else None


def fits_target_from_pretrained(method: str, schedule_final: float | None = None) -> bool:
    """Whether ``method`` ends as plain CFM on the target started from the pretrained weights, so a
    fine-tuning check ("ends closer to the target than the pretrained model") applies: one of
    :data:`FINETUNING_METHODS`, and for a scheduled method a schedule that ends at beta = 0
    (``schedule_final``; required for scheduled methods). ``scratch`` and ``reflow`` never
    (:func:`fit_check_skip_reason` says why)."""
    return fit_check_skip_reason(method, schedule_final) is None


def mixture_pretrained_count(n: int, beta: float) -> int:
    """How many of ``n`` points of a sample of m_beta = (q + beta p_pre)/(1 + beta) come from p_pre:
    round(n beta / (1 + beta)) (the rest come from q)."""
    n = check_positive_int("n", n)
    b = check_finite_number("beta", beta, minimum=0.0)
    return int(round(n * b / (1.0 + b)))


def mixture_sample(target: Tensor, pretrained: Tensor, beta: float) -> Tensor:
    """A sample of T2's terminal law m_beta = (q + beta p_pre)/(1 + beta) of the size n of ``target``
    (shape (n, d), samples of q): its first n - k points followed by the first k points of
    ``pretrained`` (shape (>= k, d), samples of p_pre), k = :func:`mixture_pretrained_count`.
    Draw ``pretrained`` from noise independent of the samples it is compared with."""
    target = check_tensor("target", target, ndim=2)
    pretrained = check_tensor("pretrained", pretrained, ndim=2)
    if pretrained.shape[1] != target.shape[1]:
        raise ValueError(f"pretrained must have dimension {target.shape[1]} like target, "
                         f"got shape {tuple(pretrained.shape)}")
    n = target.shape[0]
    k = mixture_pretrained_count(n, beta)
    if pretrained.shape[0] < k:
        raise ValueError(f"pretrained must hold at least {k} points (n = {n}, beta = {beta:g}), "
                         f"got {pretrained.shape[0]}")
    return torch.cat([target[: n - k], pretrained[:k].to(target)])
