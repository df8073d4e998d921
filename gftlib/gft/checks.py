"""Argument checks shared by the objectives and the pretrained terms (validate once, where it enters).

Each raises a ``TypeError`` / ``ValueError`` naming the parameter, the value and what is allowed.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from gftlib.paths.interpolants import Interpolant
from gftlib.types import VelocityField
from gftlib.validation import check_finite_number, check_positive_int, check_tensor

__all__ = ["check_generator", "check_rank", "check_field", "check_shape", "check_interpolant",
           "check_diffusion", "check_time_weight"]


def check_generator(generator: Any) -> torch.Generator:
    """``generator`` itself, after checking it is a ``torch.Generator``."""
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    return generator


def check_rank(rank: Any, world_size: Any, batch_size: int) -> tuple[int, int]:
    """``(rank, world_size)`` with ``0 <= rank < world_size`` and ``world_size`` dividing the global
    ``batch_size``."""
    world_size = check_positive_int("world_size", world_size)
    rank = check_positive_int("rank", rank, minimum=0)
    if rank >= world_size:
        raise ValueError(f"rank must be in [0, world_size) = [0, {world_size}), got rank={rank}")
    if batch_size % world_size:
        raise ValueError(
            f"batch_size (the global batch) must be divisible by world_size, got batch_size={batch_size} "
            f"and world_size={world_size}"
        )
    return rank, world_size


def check_field(name: str, field: Any) -> VelocityField:
    """``field`` itself, after checking it is callable (as ``field(x, t)``)."""
    if not callable(field):
        raise TypeError(f"{name} must be callable as {name}(x, t), got {type(field).__name__}")
    return field


def check_shape(shape: Any) -> tuple[int, ...]:
    """One sample's shape as a non-empty tuple of positive ints."""
    try:
        out = tuple(int(s) for s in shape)
    except TypeError:
        raise TypeError(f"shape must be a tuple of positive ints (one sample's shape), got {shape!r}"
                        ) from None
    if not out or any(s < 1 for s in out):
        raise ValueError(
            f"shape must be a non-empty tuple of positive ints (one sample's shape), got {shape!r}")
    return out


def check_interpolant(interpolant: Any) -> Interpolant:
    """``interpolant`` (None: the default straight line ``Interpolant()``), checked to be an Interpolant."""
    if interpolant is None:
        interpolant = Interpolant()
    if not isinstance(interpolant, Interpolant):
        raise TypeError(
            f"interpolant must be a gftlib.paths.interpolants.Interpolant, got {type(interpolant).__name__}")
    return interpolant


def check_diffusion(diffusion: Any, interpolant: Interpolant | None) -> float:
    """g >= 0; g > 0 needs a stochastic ``interpolant`` (sigma > 0) when one is given."""
    g = check_finite_number("diffusion", diffusion, minimum=0.0)
    if g > 0 and interpolant is not None and interpolant.sigma == 0:
        raise ValueError(
            f"diffusion={g:g} > 0 needs a stochastic interpolant (sigma > 0), got {interpolant!r}"
        )
    return g


def check_time_weight(time_weight: Any, interpolant: Interpolant, like: Tensor) -> None:
    """Validate w(t) once, where it enters: on 64 midpoint times of [t_eps, 1 - t_eps] it must return
    64 finite non-negative weights (the training hot path does not re-check the values)."""
    if not callable(time_weight):
        raise TypeError(f"time_weight must be None or a callable w(t), got {type(time_weight).__name__}")
    n = 64
    eps = interpolant.t_eps
    probe = eps + (1 - 2 * eps) * (torch.arange(n, dtype=torch.float64) + 0.5) / n
    w = time_weight(probe.to(device=like.device, dtype=like.dtype))
    check_tensor("time_weight(t)", w)
    if w.shape != (n,):
        raise ValueError(
            f"time_weight(t) must return one weight per time, shape ({n},) for t of shape ({n},), got "
            f"{tuple(w.shape)}")
    if bool((w < 0).any()):
        raise ValueError(
            f"time_weight(t) must be non-negative, got min {float(w.min()):g} on [t_eps, 1 - t_eps]")
