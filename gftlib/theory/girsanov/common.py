"""Shared pieces of the Girsanov estimators: standard errors, diffusion and drift checks.

Conventions: points (n, d); drifts ``b(x (n, d), t (n,)) -> (n, d)``; diffusion g > 0 (float) or
``g(t) -> float``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from gftlib.types import VelocityField
from gftlib.validation import check_finite_number

__all__ = ["Diffusion", "mean_and_se", "diffusion_fn", "eval_drift", "sq_norm", "check_drifts"]

Diffusion = float | Callable[[float], float]


def mean_and_se(values: Tensor) -> tuple[float, float]:
    """Sample mean and its standard error ``std(ddof=1) / sqrt(n)`` of a 1-D tensor (float64)."""
    v = values.detach().double().reshape(-1)
    n = v.numel()
    if n < 2:
        raise ValueError(f"need at least 2 values for a standard error, got {n}")
    return float(v.mean()), float(v.std(unbiased=True) / math.sqrt(n))


def diffusion_fn(diffusion: Diffusion) -> Callable[[float], float]:
    if callable(diffusion):
        fn = diffusion
    else:
        g = check_finite_number("diffusion", diffusion, minimum=0.0, strict=True)
        fn = lambda t: g  # noqa: E731

    def checked(t: float) -> float:
        return check_finite_number("diffusion(t)", fn(t), minimum=0.0, strict=True)

    return checked


def eval_drift(name: str, drift: VelocityField, x: Tensor, t: float) -> Tensor:
    tb = torch.full((x.shape[0],), t, dtype=x.dtype, device=x.device)
    b = drift(x, tb)
    if not isinstance(b, Tensor) or b.shape != x.shape:
        raise ValueError(f"{name} must return a tensor of shape {tuple(x.shape)}, "
                         f"got {getattr(b, 'shape', type(b).__name__)}")
    return b


def sq_norm(v: Tensor) -> Tensor:
    return v.reshape(v.shape[0], -1).pow(2).sum(dim=1)


def check_drifts(drifts_2: Sequence[VelocityField]) -> list[VelocityField]:
    if callable(drifts_2) or not isinstance(drifts_2, Sequence) or len(drifts_2) == 0:
        raise TypeError(f"drifts_2 must be a non-empty list of drifts b(x, t), got {drifts_2!r}")
    for i, f in enumerate(drifts_2):
        if not callable(f):
            raise TypeError(f"drifts_2[{i}] must be callable as b(x, t), got {type(f).__name__}")
    return list(drifts_2)


