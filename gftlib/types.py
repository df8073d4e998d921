"""Shared type aliases."""

from __future__ import annotations

from typing import Callable

from torch import Tensor

__all__ = ["VelocityField"]

#: ``field(x, t) -> v`` with ``x: (n, *shape)``, ``t: (n,)`` and ``v`` shaped like ``x``.
VelocityField = Callable[[Tensor, Tensor], Tensor]
