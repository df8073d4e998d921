"""Sinusoidal embedding of the flow time ``t`` in [0, 1] (t = 0 noise, t = 1 data)."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from gftlib.validation import check_finite_number, check_positive_int

__all__ = ["SinusoidalTimeEmbedding", "sinusoidal_embedding", "check_time_batch"]


def sinusoidal_embedding(
    t: Tensor, dim: int, *, scale: float = 1000.0, max_period: float = 10000.0
) -> Tensor:
    """Transformer/DDPM-style features of ``scale * t``: ``(n,) -> (n, dim)``.

    Feature ``i < dim // 2`` is ``cos(scale * t * w_i)``, feature ``dim // 2 + i`` is
    ``sin(scale * t * w_i)`` with ``w_i = max_period ** (-i / (dim // 2))``; an odd ``dim`` gets one
    trailing zero column. ``scale = 1000`` maps t in [0, 1] onto the usual DDPM step range, so the
    angular frequencies per unit of t run from ``scale`` down to ``scale / max_period``.
    Computed in float32 (float64 when ``t`` is float64), independent of autocast.
    """
    if t.ndim != 1:
        raise ValueError(f"t must have shape (n,), got shape {tuple(t.shape)}")
    dtype = torch.float64 if t.dtype == torch.float64 else torch.float32
    half = dim // 2
    with torch.autocast(device_type=t.device.type, enabled=False):
        freqs = torch.exp(
            -math.log(max_period) * torch.arange(half, device=t.device, dtype=dtype) / max(half, 1)
        )
        args = (scale * t.to(dtype))[:, None] * freqs[None, :]
        emb = torch.cat([torch.cos(args), torch.sin(args)], dim=1)
        if dim % 2:
            emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=1)
    return emb


class SinusoidalTimeEmbedding(nn.Module):
    """Module wrapper of :func:`sinusoidal_embedding` (no parameters): ``t (n,) -> (n, dim)``."""

    def __init__(self, dim: int, *, scale: float = 1000.0, max_period: float = 10000.0) -> None:
        super().__init__()
        self.dim = check_positive_int("dim", dim)
        self.scale = check_finite_number("scale", scale, minimum=0.0, strict=True)
        self.max_period = check_finite_number("max_period", max_period, minimum=1.0, strict=True)

    def forward(self, t: Tensor) -> Tensor:
        return sinusoidal_embedding(t, self.dim, scale=self.scale, max_period=self.max_period)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, scale={self.scale:g}, max_period={self.max_period:g}"


def check_time_batch(t: object, n: int) -> Tensor:
    """Check ``t`` is a floating tensor of shape ``(n,)`` matching a batch of ``n`` points."""
    if not isinstance(t, Tensor):
        raise TypeError(f"t must be a torch.Tensor of shape ({n},), got {type(t).__name__}")
    if t.ndim != 1 or t.shape[0] != n:
        raise ValueError(f"t must have shape (n,) = ({n},) to match x, got shape {tuple(t.shape)}")
    if not t.is_floating_point():
        raise TypeError(f"t must be a floating-point tensor, got dtype {t.dtype}")
    return t
