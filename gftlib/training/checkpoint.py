"""Training checkpoints: atomic writes, keep-the-last-K rotation, and discovery of the latest one.

Layout of a checkpoint directory::

    ckpt_00000005.pt   ckpt_00000005.pt.sha256   ckpt_00000010.pt   ckpt_00000010.pt.sha256
    (the last ``keep`` >= 2 checkpoints, step zero-padded to 8 digits, each with its SHA-256)

There is no separate ``last.pt``: :func:`latest_checkpoint` returns the file with the highest step.
Every file is written atomically (:func:`gftlib.io.atomic_path`: temporary file in the same
directory, fsync, ``os.replace``), so a run killed or failing mid-write (a full disk included)
leaves the previous checkpoints intact and no partial ``ckpt_*.pt`` file (temporary files start with
a dot and are never matched; a failed write removes its own). The checksum file is written before
the checkpoint is moved into place. Older files are deleted only after the new one is in place.

Corruption. :func:`latest_good_checkpoint` (what training resumes from) tries the checkpoints newest
first: one whose bytes do not match its recorded SHA-256, or that cannot be loaded (truncated,
garbage, foreign), is reported with its path (a ``CorruptCheckpointWarning`` and a line on stderr)
and skipped, so resume falls back to the previous good checkpoint; :func:`quarantine` renames a bad
file to ``<name>.corrupt`` (kept for inspection, no longer counted by the rotation).

A checkpoint is a ``dict`` (see :func:`gftlib.training.state.save` for the keys it writes) plus
``format_version`` and ``step``. :func:`load_checkpoint` uses ``torch.load(weights_only=False)``
because the state holds Python objects (RNG states, the objective's state, the run history): only
load checkpoints this library wrote, never files from an untrusted source (unpickling runs code).
"""

from __future__ import annotations

import hashlib
import os
import re
import sys
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from gftlib.io import atomic_path, atomic_write_text
from gftlib.validation import check_positive_int

__all__ = [
    "FORMAT_VERSION",
    "checkpoint_path",
    "list_checkpoints",
    "latest_checkpoint",
    "save_checkpoint",
    "load_checkpoint",
    "latest_good_checkpoint",
    "verify_checkpoint",
    "quarantine",
    "CorruptCheckpointWarning",
    "remove_stale_temporary_files",
]

#: Version of the checkpoint layout; :func:`load_checkpoint` refuses other versions.
FORMAT_VERSION = 1

_NAME = re.compile(r"^ckpt_(\d{8,})\.pt$")
# gftlib.io.atomic_path's temporary names for a checkpoint and for its checksum file
_TEMP = re.compile(r"^\.ckpt_\d{8,}\.pt(\.sha256)?\..*\.tmp\.(pt|sha256)$")
_SUM = ".sha256"


class CorruptCheckpointWarning(UserWarning):
    """A checkpoint failed its checksum or could not be loaded; training skipped it."""


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


def _sum_path(path: Path) -> Path:
    return path.with_name(path.name + _SUM)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


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
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
        atomic_write_text(_sum_path(path), _sha256(tmp) + "\n")  # before the checkpoint appears
    for old in list_checkpoints(directory)[:-keep]:
        old.unlink(missing_ok=True)
        _sum_path(old).unlink(missing_ok=True)
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


def verify_checkpoint(path: str | os.PathLike[str]) -> None:
    """Raise ``ValueError`` naming ``path`` if its bytes differ from its recorded SHA-256.

    A checkpoint without a checksum file (written by an older gftlib) passes; loading it is then
    the only check.
    """
    path = Path(path)
    recorded = _sum_path(path)
    if not recorded.is_file():
        return
    expected = recorded.read_text().strip()
    actual = _sha256(path)
    if actual != expected:
        raise ValueError(f"checkpoint {str(path)!r} is corrupt: its SHA-256 {actual[:16]}... differs from "
                         f"the recorded {expected[:16]}... ({recorded.name})")


def latest_good_checkpoint(directory: str | os.PathLike[str], *, map_location: str | torch.device = "cpu",
                           report: bool = True
                           ) -> tuple[Path | None, dict[str, Any] | None, list[Path]]:
    """The newest checkpoint that passes its checksum and loads: ``(path, state, bad)``, where
    ``bad`` lists the newer files that failed (each reported with its path when ``report``);
    ``(None, None, bad)`` when none is good.
    """
    bad: list[Path] = []
    for path in reversed(list_checkpoints(directory)):
        try:
            verify_checkpoint(path)
            state = load_checkpoint(path, map_location=map_location)
        except FileNotFoundError:  # removed meanwhile (another rank quarantined it)
            continue
        except ValueError as err:
            bad.append(path)
            if report:
                message = f"skipping checkpoint {str(path)!r}: {err}; falling back to an older one"
                warnings.warn(message, CorruptCheckpointWarning, stacklevel=2)
                print(f"[gftlib.training.checkpoint] {message}", file=sys.stderr, flush=True)
            continue
        return path, state, bad
    return None, None, bad


def quarantine(path: str | os.PathLike[str]) -> Path:
    """Rename a bad checkpoint (and its checksum file) to ``<name>.corrupt``; returns the new path."""
    path = Path(path)
    target = path.with_name(path.name + ".corrupt")
    os.replace(path, target)
    if _sum_path(path).exists():
        os.replace(_sum_path(path), target.with_name(target.name + _SUM))
    return target


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
