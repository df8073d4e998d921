"""Fast-path helpers for accelerators: channels_last inputs and batched low-precision sampling.

The same code runs on every device; what pays off on a GPU (bfloat16 autocast, channels_last
convolutions) is only *allowed* on the CPU, where it is usually slower (a CPU without native bf16
instructions runs bf16 autocast an order of magnitude slower). :func:`fast_settings` returns the
settings the library recommends for a device.

- :class:`ChannelsLastInput` wraps a velocity model ``model(x, t)`` and hands it 4-D inputs in
  ``torch.channels_last`` memory format (pair it with :func:`gftlib.models.to_fast_layout`, which
  converts the weights; ``TrainConfig(channels_last=True)`` does both).
- :func:`sample_batched` integrates the probability-flow ODE from ``n`` noise draws in batches with a
  fixed number of field evaluations (NFE), optionally under bfloat16 autocast (the ODE state, the
  time grid and the path length stay in float32), and reports images (samples) per second.

Conventions: t = 0 noise, t = 1 data; samples are ``(n, *shape)``.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from gftlib.solvers.ode import EVALS_PER_STEP, FIXED_STEP_METHODS, sample_ode
from gftlib.types import VelocityField
from gftlib.validation import check_bool, check_choice, check_positive_int, resolve_device

__all__ = ["ChannelsLastInput", "BatchedSamples", "sample_batched", "fast_settings", "autocast_context",
           "SAMPLING_AMP_MODES"]

#: ``amp`` values accepted by :func:`sample_batched` (and :class:`gftlib.training.config.TrainConfig`).
SAMPLING_AMP_MODES: tuple[str, ...] = ("none", "bf16")


class ChannelsLastInput(nn.Module):
    """``ChannelsLastInput(model)(x, t) = model(x in channels_last, t)`` for 4-D ``x``; other inputs
    are passed through unchanged. Numerically the identity up to floating-point summation order
    (convolution kernels for the two layouts may accumulate in different orders)."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        if not isinstance(module, nn.Module):
            raise TypeError(f"module must be a torch.nn.Module, got {type(module).__name__}")
        self.module = module

    def forward(self, x: Tensor, t: Tensor, *args: Any, **kwargs: Any) -> Tensor:
        if isinstance(x, Tensor) and x.ndim == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.module(x, t, *args, **kwargs)


def autocast_context(device: torch.device, amp: str) -> contextlib.AbstractContextManager:
    """``torch.autocast(device.type, bfloat16)`` for ``amp="bf16"``, else a null context."""
    check_choice("amp", amp, SAMPLING_AMP_MODES)
    if amp == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def fast_settings(device: str | torch.device) -> dict[str, Any]:
    """Recommended fast-path settings for ``device``: on CUDA ``amp="bf16"``, ``channels_last=True``,
    ``compile=True``; on the CPU all off (bf16 autocast and channels_last are not faster there, and
    compiling costs more than short CPU runs gain). Keys match :class:`gftlib.training.config.TrainConfig`."""
    dev = resolve_device(device) if not isinstance(device, torch.device) else device
    on_gpu = dev.type == "cuda"
    return {"amp": "bf16" if on_gpu else "none", "channels_last": on_gpu, "compile": on_gpu}


@dataclass(frozen=True)
class BatchedSamples:
    """Output of :func:`sample_batched`.

    ``x``: (n, *shape) samples at t = 1 (float32, on the sampling device); ``nfe``: field
    evaluations per batch (every batch makes the same number); ``seconds``: wall time of the whole
    call (device synchronised at both ends); ``images_per_second``: n / seconds; ``batch_size``,
    ``n_batches``, ``method``, ``amp``: the settings used.
    """

    x: Tensor
    nfe: int
    seconds: float
    images_per_second: float
    batch_size: int
    n_batches: int
    method: str
    amp: str


def _channels_last_inputs(field: VelocityField) -> VelocityField:
    def run(x: Tensor, t: Tensor) -> Tensor:
        if x.ndim == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        return field(x, t)
    return run


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def sample_batched(
    field: VelocityField,
    n: int,
    shape: tuple[int, ...],
    *,
    nfe: int,
    method: str = "euler",
    batch_size: int | None = None,
    amp: str = "none",
    channels_last: bool = False,
    device: str | torch.device = "auto",
    generator: torch.Generator | None = None,
) -> BatchedSamples:
    """Sample ``n`` points of shape ``shape`` by integrating ``field`` from x0 ~ N(0, I) (t = 0) to
    t = 1 with a fixed-step ODE method using exactly ``nfe`` field evaluations per batch.

    ``method``: "euler" | "midpoint" | "rk4" (``nfe`` must be a multiple of 1, 2, 4 evaluations per
    step). ``batch_size``: samples per ODE solve (default: all ``n`` at once). ``amp="bf16"`` runs
    the field under bfloat16 autocast (state and time stay float32; a model that returns its input
    dtype, like gftlib's, keeps the ODE update in float32). ``channels_last``: feed the field 4-D
    inputs in channels_last format (convert the model's weights with
    :func:`gftlib.models.to_fast_layout` yourself). The noise for all ``n`` samples is drawn at once
    from ``generator`` (default: a CPU generator seeded with 0) in float32, so the samples do not
    depend on ``batch_size``. Runs under ``torch.inference_mode``. The timing includes everything
    (noise, solves, copies); call it once beforehand to exclude warm-up costs.
    """
    if not callable(field):
        raise TypeError(f"field must be callable as field(x, t), got {type(field).__name__}")
    n = check_positive_int("n", n)
    try:
        shape = tuple(int(s) for s in shape)
    except TypeError:
        raise TypeError(
            f"shape must be a tuple of positive ints (one sample's shape), got {shape!r}") from None
    if not shape or any(s < 1 for s in shape):
        raise ValueError(
            f"shape must be a non-empty tuple of positive ints (one sample's shape), got {shape!r}")
    nfe = check_positive_int("nfe", nfe)
    method = check_choice("method", method, FIXED_STEP_METHODS)
    per_step = EVALS_PER_STEP[method]
    if nfe % per_step:
        raise ValueError(
            f"nfe must be a multiple of {per_step} for method={method!r} ({per_step} evaluations per step), "
            f"got nfe={nfe}")
    batch_size = n if batch_size is None else check_positive_int("batch_size", batch_size)
    check_choice("amp", amp, SAMPLING_AMP_MODES)
    check_bool("channels_last", channels_last)
    dev = resolve_device(device)
    if generator is None:
        generator = torch.Generator().manual_seed(0)
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")

    run = _channels_last_inputs(field) if channels_last else field
    steps = nfe // per_step
    _synchronize(dev)
    start = time.perf_counter()
    x0 = torch.randn((n, *shape), generator=generator, device=generator.device, dtype=torch.float32)
    outs = []
    with torch.inference_mode(), autocast_context(dev, amp):
        for lo in range(0, n, batch_size):
            chunk = x0[lo:lo + batch_size].to(dev)
            res = sample_ode(run, chunk, method=method, steps=steps)
            if res.nfe != nfe:  # never expected for fixed-step methods
                raise RuntimeError(f"the solver made {res.nfe} field evaluations, expected {nfe}")
            outs.append(res.x)
    x = torch.cat(outs) if len(outs) > 1 else outs[0].clone()  # a normal tensor, not an inference one
    _synchronize(dev)
    seconds = time.perf_counter() - start
    return BatchedSamples(x=x, nfe=nfe, seconds=seconds, images_per_second=n / seconds, batch_size=batch_size,
                          n_batches=len(outs), method=method, amp=amp)
