"""Training checkpoints: atomic writes, keep-the-last-K rotation, and discovery of the latest one.

Layout of a checkpoint directory::

    ckpt_00000005.pt   ckpt_00000010.pt   (the last ``keep`` files, step zero-padded to 8 digits)

There is no separate ``last.pt``: :func:`latest_checkpoint` returns the file with the highest step.
Every file is written with :func:`gftlib.io.atomic_torch_save` (temporary file in the same directory,
fsync, ``os.replace``), so a run killed or failing mid-write leaves the previous checkpoints intact and
no partial ``ckpt_*.pt`` file (temporary files start with a dot and are never matched). Older files
are deleted only after the new one is in place.

A checkpoint is a ``dict`` (see :func:`gftlib.train.train` for the keys it writes) plus
``format_version`` and ``step``. :func:`load_checkpoint` uses ``torch.load(weights_only=False)``
because the state holds Python objects (RNG states, the objective's state, the run history): only
load checkpoints this library wrote, never files from an untrusted source (unpickling runs code).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from gftlib.io import atomic_torch_save
from gftlib.validation import check_positive_int

__all__ = [
    "FORMAT_VERSION",
    "checkpoint_path",
    "list_checkpoints",
    "latest_checkpoint",
    "save_checkpoint",
    "load_checkpoint",
    "remove_stale_temporary_files",
]

#: Version of the checkpoint layout; :func:`load_checkpoint` refuses other versions.
FORMAT_VERSION = 1

_NAME = re.compile(r"^ckpt_(\d{8,})\.pt$")
_TEMP = re.compile(r"^\.ckpt_\d{8,}\.pt\..*\.tmp\.pt$")  # gftlib.io.atomic_path's temporary names


def checkpoint_path(directory: str | os.PathLike[str], step: int) -> Path:
    """Path of the checkpoint for ``step`` (number of completed optimizer steps) in ``directory``."""
    step = check_positive_int("step", step, minimum=0)
    return Path(directory) / f"ckpt_{step:08d}.pt"


def list_checkpoints(directory: str | os.PathLike[str]) -> list[Path]:
    """Checkpoint files in ``directory`` sorted by step (oldest first); ``[]`` if it does not exist."""
    root = Path(directory)
    if not root.is_dir():
        return []
    found = []
    for entry in root.iterdir():
        match = _NAME.match(entry.name)
        if match and entry.is_file():
            found.append((int(match.group(1)), entry))
    return [path for _, path in sorted(found)]


def latest_checkpoint(directory: str | os.PathLike[str]) -> Path | None:
    """The checkpoint with the highest step in ``directory``, or ``None`` when there is none."""
    files = list_checkpoints(directory)
    return files[-1] if files else None


def save_checkpoint(state: Mapping[str, Any], directory: str | os.PathLike[str], step: int, *,
                    keep: int = 2) -> Path:
    """Atomically write ``state`` as the checkpoint of ``step``; then keep only the newest ``keep``.

    ``format_version`` and ``step`` are added to the saved dict. Returns the path written.
    """
    if not isinstance(state, Mapping):
        raise TypeError(f"state must be a mapping, got {type(state).__name__}")
    step = check_positive_int("step", step, minimum=0)
    keep = check_positive_int("keep", keep, minimum=1)
    path = checkpoint_path(directory, step)
    payload = dict(state)
    payload["format_version"] = FORMAT_VERSION
    payload["step"] = step
    atomic_torch_save(payload, path)
    for old in list_checkpoints(directory)[:-keep]:
        old.unlink(missing_ok=True)
    return path


def load_checkpoint(path: str | os.PathLike[str], *, map_location: str | torch.device = "cpu"
                    ) -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint` (trusted files only: it unpickles).

    Raises ``FileNotFoundError`` for a missing file and ``ValueError`` for a file that is not a
    checkpoint of this format version.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {str(path)!r} does not exist")
    try:
        state = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as err:  # truncated or foreign file: name it instead of a bare unpickling error
        raise ValueError(
            f"checkpoint {str(path)!r} cannot be read (truncated or not a file written by gftlib): {err}"
        ) from err
    if not isinstance(state, dict) or "format_version" not in state:
        raise ValueError(f"{str(path)!r} is not a gftlib checkpoint (no 'format_version' key)")
    if state["format_version"] != FORMAT_VERSION:
        raise ValueError(
            f"checkpoint {str(path)!r} has format_version {state['format_version']!r}; this version of "
            f"gftlib reads format_version {FORMAT_VERSION}"
        )
    return state


def remove_stale_temporary_files(directory: str | os.PathLike[str]) -> int:
    """Delete temporary checkpoint files left by a writer that was killed mid-write; returns how many.

    Call it only when no other process is writing checkpoints into ``directory``.
    """
    root = Path(directory)
    if not root.is_dir():
        return 0
    removed = 0
    for entry in root.iterdir():
        if _TEMP.match(entry.name) and entry.is_file():
            entry.unlink(missing_ok=True)
            removed += 1
    return removed
