"""Adapters that turn other libraries' networks into gftlib velocity fields ``model(x, t)``.

gftlib's convention: ``x: (n, *shape)``, ``t: (n,)`` in [0, 1], t = 0 noise, t = 1 data; the output
has the shape of ``x``. :class:`VelocityAdapter` wraps any ``nn.Module`` whose call signature is
documented by three options (argument order, time shape, time direction);
:func:`flow_matching_velocity` is the preset for Meta's ``flow_matching`` models
(``model(x=..., t=..., **extras)``, t = 0 source, t = 1 target: the same direction as gftlib).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from gftlib.validation import check_choice

__all__ = ["VelocityAdapter", "flow_matching_velocity", "ADAPTER_SIGNATURES", "ADAPTER_TIME_SHAPES"]

#: How the wrapped module is called: positional ``(x, t)``, positional ``(t, x)`` (torchcfm,
#: torchdiffeq style) or keywords ``(x=x, t=t)`` (flow_matching style).
ADAPTER_SIGNATURES: tuple[str, ...] = ("x,t", "t,x", "x=,t=")
#: What the wrapped module expects as time: ``"batched"`` (n,), ``"column"`` (n, 1), ``"scalar"``
#: a 0-d tensor (then every row of a batch must share one time; checked).
ADAPTER_TIME_SHAPES: tuple[str, ...] = ("batched", "column", "scalar")


class VelocityAdapter(nn.Module):
    """gftlib velocity ``forward(x, t)`` around ``module`` with a documented call signature.

    ``signature``: one of ADAPTER_SIGNATURES. ``time``: one of ADAPTER_TIME_SHAPES. ``data_at``:
    the time at which ``module``'s flow reaches data, 1 (gftlib, torchcfm, flow_matching) or 0 (flows
    integrated from data to noise); with 0 the adapter returns ``-module(x, 1 - t)``, the same flow
    traversed in gftlib's direction. ``extras`` are passed as keyword arguments on every call
    (e.g. a class label for a conditional model). The wrapped module is a registered submodule, so
    ``.parameters()``, ``.train()``, ``.to()`` and the state dict (prefix ``module.``) work as usual.
    """

    def __init__(self, module: nn.Module, *, signature: str = "x,t", time: str = "batched",
                 data_at: int = 1, extras: dict[str, Any] | None = None) -> None:
        super().__init__()
        if not isinstance(module, nn.Module):
            raise TypeError(f"module must be a torch.nn.Module, got {type(module).__name__}")
        self.module = module
        self.signature = check_choice("signature", signature, ADAPTER_SIGNATURES)
        self.time = check_choice("time", time, ADAPTER_TIME_SHAPES)
        if isinstance(data_at, bool) or data_at not in (0, 1):
            raise ValueError(f"data_at must be 0 or 1 (the time at which the wrapped flow reaches data), "
                             f"got {data_at!r}")
        self.data_at = int(data_at)
        if extras is not None and not isinstance(extras, dict):
            raise TypeError(f"extras must be a dict of keyword arguments or None, "
                            f"got {type(extras).__name__}")
        self.extras = dict(extras or {})

    def _time(self, x: Tensor, t: Any) -> Tensor:
        t = torch.as_tensor(t, dtype=x.dtype if x.is_floating_point() else torch.float32, device=x.device)
        n = x.shape[0]
        if t.ndim == 0:
            t = t.expand(n)
        elif t.ndim == 2 and t.shape[1] == 1:
            t = t[:, 0]
        if t.ndim != 1 or t.shape[0] != n:
            raise ValueError(f"t must have shape ({n},) (one time per row of x), a 0-d scalar or ({n}, 1), "
                             f"got {tuple(t.shape)}")
        if self.data_at == 0:
            t = 1.0 - t
        if self.time == "column":
            return t[:, None]
        if self.time == "scalar":
            if n > 1 and not bool((t == t[0]).all()):
                raise ValueError("time='scalar': the wrapped module takes one time per call, but the rows of "
                                 "t differ; use time='batched' if the module accepts a (n,) time")
            return t[0]
        return t

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        """x: (n, *shape), t: (n,) (or a scalar) in [0, 1], t = 0 noise -> velocity (n, *shape)."""
        if not isinstance(x, Tensor) or x.ndim < 1:
            raise TypeError(f"x must be a tensor of shape (n, ...), got {type(x).__name__}")
        tt = self._time(x, t)
        if self.signature == "x,t":
            out = self.module(x, tt, **self.extras)
        elif self.signature == "t,x":
            out = self.module(tt, x, **self.extras)
        else:
            out = self.module(x=x, t=tt, **self.extras)
        if not isinstance(out, Tensor) or out.shape != x.shape:
            raise ValueError(f"the wrapped module must return a tensor of the input's shape "
                             f"{tuple(x.shape)}, "
                             f"got {getattr(out, 'shape', type(out).__name__)}")
        return -out if self.data_at == 0 else out

    def extra_repr(self) -> str:
        return f"signature={self.signature!r}, time={self.time!r}, data_at={self.data_at}"


def flow_matching_velocity(model: nn.Module, *, time: str = "batched", **extras: Any) -> VelocityAdapter:
    """Adapter for Meta ``flow_matching`` models (``flow_matching.utils.ModelWrapper`` and any module
    called as ``model(x=x, t=t, **extras)``; t = 0 source/noise, t = 1 target/data).

    ``time="batched"`` passes t as (n,) (the ModelWrapper documentation's ``t (batch_size)``);
    ``time="scalar"`` passes a 0-d tensor, as flow_matching's own ``ODESolver`` does, for models
    that only accept that. ``extras`` (e.g. ``label=...``) are forwarded on every call.
    """
    return VelocityAdapter(model, signature="x=,t=", time=time, data_at=1, extras=extras)
