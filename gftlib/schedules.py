"""Cooling schedules for the GFT temperature beta.

beta_k = beta_final + (beta0 - beta_final) * s(u_k),   u_k = k / (total_steps - 1),   k = 0 .. total_steps-1,

with a shape s non-increasing from s(0) = 1 to s(1) = 0 (``constant``: s = 1). ``total_steps == 1``
gives the final value (beta_final; beta0 for ``constant``). Kinds:

- ``constant``: s = 1 (beta stays beta0).
- ``linear``: s = 1 - u.
- ``cosine``: s = (1 + cos(pi u)) / 2.
- ``exponential`` (``rate`` > 0): s = (exp(-rate u) - exp(-rate)) / (1 - exp(-rate)) (so s(1) = 0).
- ``step`` (``n_stages`` >= 2): piecewise constant, stage j = floor(u * n_stages) (last stage at u = 1)
  has level 1 - j / (n_stages - 1), i.e. 1, ..., 0.
- ``custom`` (``values``): explicit beta levels (absolute temperatures), non-negative, finite and
  non-increasing, spread over equal-length stages like ``step``; beta0 is values[0] and the final
  value values[-1] (``beta0`` may be given as None; if given it must equal values[0]).

Stage indices use integer arithmetic, j = (k * m) // (total_steps - 1) clipped to m - 1, so a schedule
with total_steps == m stages visits each level exactly once.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from gftlib.validation import check_choice, check_finite_number, check_positive_int

__all__ = ["CoolingSchedule", "make_schedule", "default_schedule_options", "SCHEDULES", "tv_move"]

SCHEDULES: tuple[str, ...] = ("constant", "linear", "cosine", "exponential", "step", "custom")


def tv_move(beta_a: float, beta_b: float) -> float:
    """|beta_a / (1 + beta_a) - beta_b / (1 + beta_b)|: THEORY T3's bound on the TV distance the
    GFT optimum moves between temperatures beta_a and beta_b (times TV(q, p_pre) <= 1)."""
    a = check_finite_number("beta_a", beta_a, minimum=0.0)
    b = check_finite_number("beta_b", beta_b, minimum=0.0)
    return abs(a / (1 + a) - b / (1 + b))


@dataclass(frozen=True)
class CoolingSchedule:
    """A validated cooling schedule; build it with :func:`make_schedule`.

    ``__call__(step)`` for 0 <= step < total_steps (outside raises); ``values()`` -> (total_steps,).
    """

    kind: str
    beta0: float
    total_steps: int
    beta_final: float = 0.0
    rate: float | None = None
    n_stages: int | None = None
    levels: tuple[float, ...] | None = field(default=None)  # custom beta levels

    def _shape(self, k: np.ndarray) -> np.ndarray:
        """s(u_k) for integer steps k (array), float64."""
        last = self.total_steps - 1
        if last == 0:
            return np.full(k.shape, 1.0 if self.kind == "constant" else 0.0)
        u = k.astype(np.float64) / last
        if self.kind == "constant":
            s = np.ones_like(u)
        elif self.kind == "linear":
            s = 1.0 - u
        elif self.kind == "cosine":
            s = 0.5 * (1.0 + np.cos(np.pi * u))
        elif self.kind == "exponential":
            r = float(self.rate)  # exp(-r u) (1 - exp(-r (1 - u))) / (1 - exp(-r)), via expm1
            s = np.exp(-r * u) * np.expm1(-r * (1.0 - u)) / math.expm1(-r)
        elif self.kind == "step":
            m = int(self.n_stages)
            j = np.minimum((k * m) // last, m - 1)
            s = 1.0 - j / (m - 1)
        else:
            raise AssertionError(self.kind)
        s = np.clip(s, 0.0, 1.0)
        if self.kind != "constant":
            s = np.where(k == last, 0.0, s)  # exactly the final value at the last step
            s = np.where(k == 0, 1.0, s)
        return s

    def _values_at(self, k: np.ndarray) -> np.ndarray:
        if self.kind == "custom":
            lv = np.asarray(self.levels, dtype=np.float64)
            m, last = len(lv), self.total_steps - 1
            if last == 0:
                return np.full(k.shape, lv[-1])
            return lv[np.minimum((k * m) // last, m - 1)]
        s = self._shape(k)
        return self.beta_final + (self.beta0 - self.beta_final) * s

    def __call__(self, step: int) -> float:
        k = check_positive_int("step", step, minimum=0)
        if k >= self.total_steps:
            raise ValueError(f"step must be an integer in [0, {self.total_steps - 1}] "
                             f"(total_steps={self.total_steps}), got {step!r}")
        return float(self._values_at(np.asarray([k]))[0])

    @property
    def final(self) -> float:
        """The value at the last step."""
        return self(self.total_steps - 1)

    def values(self) -> np.ndarray:
        """beta_k for k = 0 .. total_steps - 1, float64 (total_steps,)."""
        return self._values_at(np.arange(self.total_steps))

    def stage_values(self) -> np.ndarray:
        """The distinct successive values (runs of equal consecutive values collapsed)."""
        v = self.values()
        keep = np.concatenate([[True], v[1:] != v[:-1]])
        return v[keep]

    def stage_moves(self) -> np.ndarray:
        """|beta/(1+beta) - beta'/(1+beta')| between successive distinct values (len = stages - 1):
        THEORY T3's bound on how far (in TV, times TV(q, p_pre)) the optimum moves at each change."""
        v = self.stage_values()
        r = v / (1.0 + v)
        return np.abs(np.diff(r))


def make_schedule(kind: str, beta0: float | None, total_steps: int, *, beta_final: float | None = None,
                  rate: float | None = None, n_stages: int | None = None,
                  values: Sequence[float] | None = None) -> CoolingSchedule:
    """Validate the parameters and build a :class:`CoolingSchedule`.

    kind: one of SCHEDULES. beta0 >= 0 finite (None allowed for ``custom``). total_steps >= 1.
    beta_final in [0, beta0] (default 0; not used by ``custom``). rate > 0 for ``exponential``
    (required). n_stages >= 2 for ``step`` (required). values for ``custom`` (required).
    Options that do not belong to ``kind`` raise.
    """
    kind = check_choice("kind", kind, SCHEDULES)
    total_steps = check_positive_int("total_steps", total_steps, minimum=1)
    extras = {"rate": rate, "n_stages": n_stages, "values": values}
    own = {"exponential": "rate", "step": "n_stages", "custom": "values"}.get(kind)
    for key, val in extras.items():
        if val is not None and key != own:
            raise ValueError(
                f"option {key}={val!r} does not apply to schedule kind {kind!r} (rate is for 'exponential', "
                f"n_stages for 'step', values for 'custom'; every kind takes beta_final)")
    if own is not None and extras[own] is None:
        raise ValueError(f"schedule kind {kind!r} needs the option {own}=...")

    if kind == "custom":
        if isinstance(values, (str, bytes)) or not isinstance(values, (Sequence, np.ndarray)):
            raise TypeError(f"values must be a sequence of numbers, got {values!r}")
        lv = [check_finite_number(f"values[{i}]", v, minimum=0.0) for i, v in enumerate(values)]
        if not lv:
            raise ValueError("values must be a non-empty list of beta levels, got []")
        for i in range(1, len(lv)):
            if lv[i] > lv[i - 1]:
                raise ValueError(
                    f"values must be non-increasing; values[{i}]={lv[i]:g} > values[{i - 1}]={lv[i - 1]:g}"
                )
        if beta0 is not None:
            b0 = check_finite_number("beta0", beta0, minimum=0.0)
            if b0 != lv[0]:
                raise ValueError(
                    f"beta0 must equal values[0]={lv[0]:g} for kind 'custom' (or be None), got {b0:g}"
                )
        if beta_final is not None:
            bf = check_finite_number("beta_final", beta_final, minimum=0.0)
            if bf != lv[-1]:
                raise ValueError(
                    f"beta_final must equal values[-1]={lv[-1]:g} for kind 'custom' (or be None), got {bf:g}"
                )
        return CoolingSchedule(kind=kind, beta0=lv[0], total_steps=total_steps, beta_final=lv[-1],
                               levels=tuple(lv))

    if beta0 is None:
        raise ValueError(f"beta0 must be a finite number >= 0 for kind {kind!r}, got None")
    b0 = check_finite_number("beta0", beta0, minimum=0.0)
    bf = 0.0 if beta_final is None else check_finite_number("beta_final", beta_final, minimum=0.0, maximum=b0)
    r = None if rate is None else check_finite_number("rate", rate, minimum=0.0, strict=True)
    m = None if n_stages is None else check_positive_int("n_stages", n_stages, minimum=2)
    return CoolingSchedule(kind=kind, beta0=b0, total_steps=total_steps, beta_final=bf, rate=r, n_stages=m)


def default_schedule_options(kind: str) -> dict[str, float]:
    """Options a schedule kind needs when none are given: exponential rate 5, step 4 stages (other
    kinds need none; "custom" has no default: its ``values`` must be given)."""
    kind = check_choice("schedule_kind", kind, tuple(k for k in SCHEDULES if k != "custom"))
    return {"exponential": {"rate": 5.0}, "step": {"n_stages": 4}}.get(kind, {})
