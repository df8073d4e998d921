"""The exponential moving average of the trained parameters (fp32) that :func:`gftlib.training.loop.train`
keeps, evaluates and returns as ``TrainResult.ema_model``.

Update k (1-based) sets ``ema <- decay_k * ema + (1 - decay_k) * params`` with
``decay_k = min(ema_decay, (1 + k) / (10 + k))`` under ``ema_warmup`` (else ``ema_decay``); buffers
are copied as they are.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from gftlib.training.config import TrainConfig

__all__: list[str] = []  # internal to gftlib.training


def ema_decay(config: TrainConfig, k: int) -> float:
    """The EMA decay of update k (1-based), warmed up when ``config.ema_warmup``."""
    return min(config.ema_decay, (1 + k) / (10 + k)) if config.ema_warmup else config.ema_decay


class EMA:
    """fp32 copy of the parameters (in ``model``, a deep copy) updated with foreach lerp."""

    def __init__(self, source: nn.Module) -> None:
        self.model = copy.deepcopy(source).float().eval().requires_grad_(False)
        self.src_params = list(source.parameters())
        self.ema_params = list(self.model.parameters())
        self.src_buffers = list(source.buffers())
        self.ema_buffers = list(self.model.buffers())
        self.same_dtype = all(p.dtype == e.dtype for p, e in zip(self.src_params, self.ema_params))

    @torch.no_grad()
    def update(self, decay: float) -> None:
        if self.same_dtype:
            torch._foreach_lerp_(self.ema_params, self.src_params, 1.0 - decay)
        else:
            torch._foreach_mul_(self.ema_params, decay)
            torch._foreach_add_(self.ema_params, [p.float() for p in self.src_params], alpha=1.0 - decay)
        for e, b in zip(self.ema_buffers, self.src_buffers):
            e.copy_(b)
