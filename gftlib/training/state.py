"""The training state a checkpoint holds, and how :func:`gftlib.training.loop.train` saves it, resumes
from it bit for bit and owns the checkpoint directory.

A checkpoint holds everything that influences later steps: model, EMA, optimizer, step, beta, the
trainer's generator, every rank's global RNG states (Python, numpy, torch, CUDA) and objective
state, the open log interval's sums, the history so far and a fingerprint of the result-relevant
settings (:data:`gftlib.training.config.RESULT_FIELDS`, the world size, a hash of the betas and the
caller's extra settings). A checkpoint with another fingerprint is refused on resume.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import random
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from gftlib.locking import DirectoryBusy, DirectoryLock
from gftlib.training import distributed as D
from gftlib.training.checkpoint import (
    latest_good_checkpoint,
    quarantine,
    remove_stale_temporary_files,
    save_checkpoint,
)
from gftlib.training.config import RESULT_FIELDS, TrainConfig
from gftlib.training.ema import EMA

__all__: list[str] = []  # internal to gftlib.training


# ------------------------------------------------------------------------------ what must match
def fingerprint_of(config: TrainConfig, world_size: int, betas: np.ndarray,
                   extra: Mapping[str, Any] | None) -> dict[str, Any]:
    """The result-relevant settings of a run: RESULT_FIELDS, world size, betas hash, ``extra``."""
    fp: dict[str, Any] = {name: getattr(config, name) for name in RESULT_FIELDS}
    fp["world_size"] = world_size
    fp["schedule_sha256"] = hashlib.sha256(np.ascontiguousarray(betas).tobytes()).hexdigest()[:16]
    if extra is not None:
        if not isinstance(extra, Mapping):
            raise TypeError(f"fingerprint must be None or a mapping, got {type(extra).__name__}")
        # JSON round trip: plain values only, and comparable after loading.
        fp["extra"] = json.loads(json.dumps(dict(extra), sort_keys=True, default=str))
    return fp


def check_fingerprint(saved: Mapping[str, Any], current: Mapping[str, Any], path: Path) -> None:
    """Refuse to resume from ``path`` if its fingerprint differs, naming every differing setting."""
    keys = sorted(set(saved) | set(current))
    diffs = [f"{k}: checkpoint {saved.get(k)!r} vs now {current.get(k)!r}" for k in keys
             if saved.get(k) != current.get(k)]
    if diffs:
        raise ValueError(
            f"cannot resume from {str(path)!r}: it was written with different result-relevant settings ("
            + "; ".join(diffs) + "). Use another checkpoint_dir, or delete this one to start over."
        )


# ------------------------------------------------------------------------------ global RNGs
def global_rng_state() -> dict[str, Any]:
    """Python's, numpy's and torch's global RNG states (and the current CUDA device's, if in use)."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()  # the current device's
    return state


def set_global_rng_state(state: Mapping[str, Any]) -> None:
    """Restore what :func:`global_rng_state` returned."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


# ------------------------------------------------------------------------------ the optimizer
def optimizer_impl(device: torch.device) -> dict[str, bool]:
    """AdamW's implementation flag for ``device``: fused on CUDA, foreach elsewhere."""
    return {"fused": True} if device.type == "cuda" else {"foreach": True}


def match_state_layout(optimizer: torch.optim.Optimizer) -> None:
    """Give loaded optimizer state tensors their parameter's memory layout (a checkpoint written
    with another ``channels_last`` setting), so foreach/fused kernels see matching strides."""
    for param, state in optimizer.state.items():
        for key, value in state.items():
            if (isinstance(value, Tensor) and value.shape == param.shape and value.dim() > 1
                    and value.stride() != param.stride()):
                state[key] = torch.empty_like(param, dtype=value.dtype).copy_(value)


# ------------------------------------------------------------------------------ the state itself
@dataclass
class TrainingState:
    """What the loop carries from one update to the next, and a checkpoint holds.

    ``acc``: the open log interval's sums of (total, target, pretrained, grad norm), a (4,) tensor on
    the training device, over ``count`` updates; ``step``: completed updates; ``resumed_from`` and
    ``last_checkpoint`` as in :class:`gftlib.training.config.TrainResult`.
    """

    module: nn.Module
    ema: EMA
    optimizer: torch.optim.Optimizer
    generator: torch.Generator
    objective: Any
    fingerprint: dict[str, Any]
    acc: Tensor
    count: int = 0
    step: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    resumed_from: int | None = None
    last_checkpoint: str | None = None


def resume(state: TrainingState, directory: Path, impl: Mapping[str, bool], rank: int) -> None:
    """Load the newest good checkpoint in ``directory`` into ``state`` (every rank; none: no change).

    Rank 0 first removes temporary files left by a run killed mid-write and, once every rank has
    read the checkpoint, renames corrupt newer ones to ``<name>.corrupt``."""
    main = rank == 0
    if main:
        remove_stale_temporary_files(directory)  # left by a run killed mid-write
    found, saved, corrupt = latest_good_checkpoint(directory, report=main)  # skips corrupt ones
    if found is not None:
        check_fingerprint(saved["fingerprint"], state.fingerprint, found)
        state.module.load_state_dict(saved["model"])
        state.ema.model.load_state_dict(saved["ema"])
        opt_state = saved["optimizer"]
        for group in opt_state["param_groups"]:  # the implementation follows this run's device
            group["fused"], group["foreach"] = impl.get("fused", False), impl.get("foreach", False)
        state.optimizer.load_state_dict(opt_state)
        match_state_layout(state.optimizer)
        state.generator.set_state(saved["generator"])
        set_global_rng_state(saved["rng"][rank])
        state.objective.load_state_dict(saved["objective"][rank])
        state.step, state.history = int(saved["step"]), list(saved["history"])
        saved_acc, state.count = saved["log_acc"][rank]
        state.acc.copy_(torch.tensor(saved_acc, dtype=state.acc.dtype))
        state.resumed_from, state.last_checkpoint = state.step, str(found)
    D.barrier()  # nobody prunes the file before every rank has read it
    if main:
        for bad in corrupt:
            quarantine(bad)  # <name>.corrupt: kept for inspection, out of the rotation


def save(state: TrainingState, directory: Path, k: int, beta: float, config: TrainConfig) -> None:
    """Write the checkpoint of step ``k`` (rank 0, gathering every rank's RNG and objective state);
    every rank records its path in ``state.last_checkpoint``."""
    ranks = D.all_gather_objects({"rng": global_rng_state(), "objective": state.objective.state_dict(),
                                  "log_acc": state.acc.tolist(), "log_count": state.count})
    if D.get_rank() == 0:
        saved = {
            "beta": beta,
            "model": state.module.state_dict(),
            "ema": state.ema.model.state_dict(),
            "optimizer": state.optimizer.state_dict(),
            "generator": state.generator.get_state(),
            "rng": [r["rng"] for r in ranks],
            "objective": [r["objective"] for r in ranks],
            "log_acc": [(r["log_acc"], r["log_count"]) for r in ranks],  # open log interval
            "history": state.history,
            "config": asdict(config),
            "fingerprint": state.fingerprint,
            "world_size": D.get_world_size(),
        }
        state.last_checkpoint = str(save_checkpoint(saved, directory, k, keep=config.keep_checkpoints))
    else:
        state.last_checkpoint = str(directory / f"ckpt_{k:08d}.pt")


# ------------------------------------------------------------------------------ the directory
@contextlib.contextmanager
def hold_checkpoint_dir(directory: str | None, device: torch.device) -> Iterator[None]:
    """Rank 0 holds ``directory``'s lock (gftlib.locking); every rank raises if it is busy."""
    if directory is None:
        yield
        return
    lock = DirectoryLock(directory, what="checkpoint_dir")
    busy: DirectoryBusy | None = None
    if D.get_rank() == 0:
        try:
            lock.acquire()
        except DirectoryBusy as err:
            busy = err
    if D.get_world_size() > 1:
        flag = torch.tensor([1.0 if busy is not None else 0.0], device=device)
        D.all_reduce_(flag, "max")
        if flag.item() > 0 and busy is None:
            if lock.held:
                lock.release()
            busy = DirectoryBusy(Path(directory), "see rank 0's error", "checkpoint_dir")
    if busy is not None:
        raise busy
    try:
        yield
    finally:
        lock.release()
