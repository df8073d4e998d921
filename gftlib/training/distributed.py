"""Helpers for multi-process training with ``torchrun`` and DistributedDataParallel (DDP).

``torchrun --nproc_per_node=N -m gftlib.experiments.train_cli ...`` sets ``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``; :func:`init_from_env` reads them and starts the
process group (``nccl`` on CUDA, ``gloo`` on the CPU). Without those variables (or with
``WORLD_SIZE=1``) everything here is a no-op for a single process, so the same code runs both ways.

Every collective below must be called by all ranks in the same order.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from gftlib.validation import resolve_device

__all__ = [
    "DistributedContext",
    "init_from_env",
    "is_distributed",
    "get_rank",
    "get_world_size",
    "is_main_process",
    "wrap_model",
    "unwrap_model",
    "all_reduce_",
    "all_gather_objects",
    "barrier",
    "cleanup",
]


@dataclass(frozen=True)
class DistributedContext:
    """Where this process sits: ``rank`` in ``[0, world_size)``, its node-local rank and device."""

    rank: int
    world_size: int
    local_rank: int
    backend: str | None  # None for a single process (no process group)
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"environment variable {name} must be an integer, got {raw!r}") from None


def init_from_env(device: str | torch.device = "auto", *, timeout_s: float = 600.0) -> DistributedContext:
    """Start the process group from torchrun's environment variables (idempotent).

    ``device`` ("auto" | "cpu" | "cuda" | "cuda:N") picks the backend: CUDA gives ``nccl`` and the
    device ``cuda:LOCAL_RANK`` (made current), the CPU gives ``gloo``. A single process
    (``WORLD_SIZE`` unset or 1) starts no process group and gets ``backend=None``.
    """
    world_size = _env_int("WORLD_SIZE", 1)
    rank = _env_int("RANK", 0)
    local_rank = _env_int("LOCAL_RANK", rank)
    if world_size < 1:
        raise ValueError(f"WORLD_SIZE must be >= 1, got {world_size}")
    if not 0 <= rank < world_size:
        raise ValueError(f"RANK must be in [0, WORLD_SIZE={world_size}), got {rank}")
    resolved = resolve_device(device)
    if resolved.type == "cuda":
        if world_size > 1:
            if local_rank >= torch.cuda.device_count():
                raise ValueError(
                    f"LOCAL_RANK={local_rank} but only {torch.cuda.device_count()} CUDA devices are visible"
                )
            resolved = torch.device("cuda", local_rank)
        if resolved.index is not None:
            torch.cuda.set_device(resolved)
    if world_size == 1:
        return DistributedContext(0, 1, 0, None, resolved)
    backend = "nccl" if resolved.type == "cuda" else "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend=backend, init_method="env://", rank=rank, world_size=world_size,
                                timeout=timedelta(seconds=timeout_s))
    return DistributedContext(dist.get_rank(), dist.get_world_size(), local_rank, dist.get_backend(),
                              resolved)


def is_distributed() -> bool:
    """True inside an initialised process group with more than one rank."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def get_rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def get_world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def is_main_process() -> bool:
    """True on rank 0 (and in a single process): the rank that logs, evaluates and writes files."""
    return get_rank() == 0


def wrap_model(model: nn.Module, device: torch.device | None = None) -> nn.Module:
    """Wrap ``model`` in DDP when distributed (gradients averaged over ranks); else return it.

    DDP broadcasts rank 0's parameters and buffers at construction, so all ranks start equal.
    """
    if not is_distributed():
        return model
    from torch.nn.parallel import DistributedDataParallel

    if device is not None and torch.device(device).type == "cuda":
        index = torch.device(device).index
        index = torch.cuda.current_device() if index is None else index
        return DistributedDataParallel(model, device_ids=[index], output_device=index)
    return DistributedDataParallel(model)


def unwrap_model(model: nn.Module) -> nn.Module:
    """The plain module inside DDP and/or ``torch.compile`` wrappers."""
    while True:
        if hasattr(model, "_orig_mod"):  # torch.compile's OptimizedModule
            model = model._orig_mod
        elif hasattr(model, "module") and isinstance(model, nn.parallel.DistributedDataParallel):
            model = model.module
        else:
            return model


_OPS = {"sum": "SUM", "max": "MAX", "min": "MIN"}


def all_reduce_(tensor: Tensor, op: str = "sum") -> Tensor:
    """In-place all-reduce (``op`` in "sum" | "max" | "min") over ranks; identity for one process."""
    if op not in _OPS:
        raise ValueError(f"op must be one of {', '.join(map(repr, _OPS))}; got {op!r}")
    if is_distributed():
        dist.all_reduce(tensor, op=getattr(dist.ReduceOp, _OPS[op]))
    return tensor


def all_gather_objects(obj: Any) -> list[Any]:
    """Picklable ``obj`` from every rank, as a list indexed by rank (``[obj]`` for one process)."""
    if not is_distributed():
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def barrier() -> None:
    """Wait until every rank reaches this point (no-op for one process)."""
    if is_distributed():
        if dist.get_backend() == "nccl" and torch.cuda.is_available():
            dist.barrier(device_ids=[torch.cuda.current_device()])
        else:
            dist.barrier()


def cleanup() -> None:
    """Destroy the process group if one was started (safe to call always)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
