"""What the ODE and SDE samplers share: the result type, path length / straightness, and the input checks.

Conventions: integration runs forward from ``t0`` (default 0, noise) to ``t1`` (default 1, data).
A field is ``field(x, t) -> v`` with ``x: (n, *shape)``, ``t: (n,)`` and ``v`` shaped like ``x``.
Path length of sample i is ``L_i = int_{t0}^{t1} |field(x_i(t), t)| dt`` (Euclidean norm over all
non-batch dimensions); straightness is ``|x_i(t1) - x_i(t0)| / L_i`` (1 for a straight path traversed
in one direction).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from gftlib.validation import check_finite_number, check_tensor

__all__ = ["SampleResult", "check_sampler_inputs", "check_field_output", "check_trajectory_times",
           "flat_norm", "straightness"]


@dataclass(frozen=True)
class SampleResult:
    """Output of a sampler.

    x: (n, *shape) samples at ``t1``; nfe: field evaluations actually made (one evaluation = one
    call on the whole batch); path_length: (n,); straightness: (n,) in [0, 1] (1 = straight; 1 by
    definition where the path length is 0); times: (T,) and trajectory: (T, n, *shape) when a
    trajectory was requested, else None.
    """

    x: Tensor
    nfe: int
    path_length: Tensor
    straightness: Tensor
    times: Tensor | None = None
    trajectory: Tensor | None = None


def flat_norm(v: Tensor) -> Tensor:
    """(n, *shape) -> (n,) Euclidean norm over the non-batch dimensions."""
    return v.reshape(v.shape[0], -1).norm(dim=1)


def straightness(x_start: Tensor, x_end: Tensor, length: Tensor) -> Tensor:
    """|x_end - x_start| / length, clamped to [0, 1]; 1 where length == 0."""
    chord = flat_norm(x_end - x_start)
    safe = torch.where(length > 0, length, torch.ones_like(length))
    s = torch.where(length > 0, chord / safe, torch.ones_like(length))
    return s.clamp(0.0, 1.0)


def check_sampler_inputs(name: str, field: Any, x0: Any, t0: Any, t1: Any) -> tuple[Tensor, float, float]:
    """``(x0, t0, t1)`` after checking ``t0 < t1`` (finite), ``x0`` a finite floating tensor
    ``(n, *shape)`` and ``field`` (called ``name`` in the messages) callable as ``name(x, t)``."""
    t0 = check_finite_number("t0", t0)
    t1 = check_finite_number("t1", t1)
    if not t0 < t1:
        raise ValueError(f"t0 must be < t1, got t0={t0!r}, t1={t1!r}")
    x0 = check_tensor("x0", x0, min_ndim=2)
    if not x0.is_floating_point():
        raise TypeError(f"x0 must be a floating-point tensor, got dtype {x0.dtype}")
    if not callable(field):
        raise TypeError(f"{name} must be callable as {name}(x, t), got {type(field).__name__}")
    return x0, t0, t1


def check_field_output(name: str, v: Any, x: Tensor) -> Tensor:
    """``v = name(x, t)`` itself, after checking it is a tensor shaped like ``x``."""
    if not isinstance(v, Tensor) or v.shape != x.shape:
        raise ValueError(f"{name} must return a tensor of shape {tuple(x.shape)}, "
                         f"got {getattr(v, 'shape', type(v).__name__)}")
    return v


def check_trajectory_times(trajectory_times: Sequence[float] | Tensor, t0: float, t1: float) -> Tensor:
    """The requested output times as a float64 tensor (T,): non-empty, finite, strictly increasing,
    inside [t0, t1]."""
    tt = torch.as_tensor(trajectory_times, dtype=torch.float64).reshape(-1)
    if tt.numel() == 0 or not bool(torch.isfinite(tt).all()):
        raise ValueError(
            f"trajectory_times must be a non-empty list of finite times, got {trajectory_times!r}")
    if tt.numel() > 1 and not bool((tt[1:] > tt[:-1]).all()):
        raise ValueError(f"trajectory_times must be strictly increasing, got {tt.tolist()}")
    if float(tt[0]) < t0 or float(tt[-1]) > t1:
        raise ValueError(f"trajectory_times must lie in [t0, t1] = [{t0:g}, {t1:g}], got {tt.tolist()}")
    return tt
