"""Where the objectives' tensors live: device placement without host synchronisation, and the
caches' float64 fingerprint."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import torch
from torch import Tensor, nn

from gftlib.losses import DriftBatch
from gftlib.paths.interpolants import PathSample

__all__ = ["to_device", "move_batch", "model_device", "field_device", "norm64"]


def to_device(x: Tensor, device: torch.device) -> Tensor:
    """``x`` on ``device``. A CPU -> CUDA copy is staged in pinned memory and does not block the host
    (a plain ``.to("cuda")`` of pageable memory synchronises the stream)."""
    if x.device == device:
        return x
    if x.device.type == "cpu" and device.type == "cuda":
        return x.pin_memory().to(device, non_blocking=True)
    return x.to(device)


def move_batch(batch: PathSample | DriftBatch, device: torch.device) -> PathSample | DriftBatch:
    """Move every tensor field of a PathSample / DriftBatch to ``device`` (no-op when already there)."""
    fields = {k: v.to(device) for k, v in vars(batch).items() if isinstance(v, Tensor)}
    return replace(batch, **fields)


def model_device(model: Any, fallback: torch.device) -> torch.device:
    """Device of the model's first parameter or buffer (``fallback`` for parameter-free callables)."""
    if isinstance(model, nn.Module):
        for tensor in model.parameters():
            return tensor.device
        for tensor in model.buffers():
            return tensor.device
    return fallback


def field_device(field: Any) -> torch.device | None:
    """Device of a network's parameters (None for parameter-free callables)."""
    if isinstance(field, nn.Module):
        for tensor in field.parameters():
            return tensor.device
    return None


def norm64(x: Tensor) -> float:
    """Euclidean norm of all entries, accumulated in float64 (a cache fingerprint; no cancellation)."""
    return float(torch.linalg.vector_norm(x, dtype=torch.float64))
