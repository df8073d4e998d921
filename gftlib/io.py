"""Atomic file output: write to a temporary file in the target directory, then ``os.replace``.

A run that fails or is killed mid-write leaves the previous file intact and no partial file. A
write that fails (a full disk: ``OSError(ENOSPC)``) removes its temporary file and raises an
``OSError`` with the same errno whose message and ``filename`` name the *target* path (not the
temporary one), so the error says which output could not be written.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

__all__ = ["check_output_path", "atomic_path", "atomic_write_bytes", "atomic_write_text", "atomic_write_json",
           "atomic_torch_save", "atomic_savefig"]


def check_output_path(name: str, value: Any, *, directory: bool) -> Path:
    """Check that ``value`` can become an output (a folder if ``directory``, else a file) before any
    work starts: a non-empty path, not an existing entry of the other kind, and no existing file on
    the way up. Raises ``ValueError`` naming ``name``, the value and what is allowed."""
    kind = "a folder" if directory else "a file"
    if not isinstance(value, (str, os.PathLike)) or str(value) == "":
        raise ValueError(f"{name} must be a non-empty path ({kind}), got {value!r}")
    path = Path(value)
    if directory and path.exists() and not path.is_dir():
        raise ValueError(f"{name} must be a folder (or a path where one can be created), got {str(path)!r}, "
                         f"which is an existing file")
    if not directory and path.is_dir():
        raise ValueError(f"{name} must be a file path, got {str(path)!r}, which is an existing folder")
    for parent in path.absolute().parents:
        if parent.exists() and not parent.is_dir():
            raise ValueError(f"{name} must be {kind} under a folder, got {str(path)!r}, but {str(parent)!r} "
                             f"is an existing file")
    return path


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; move it onto ``path`` only if the block succeeds."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp" + target.suffix,
                                        dir=target.parent)
    except OSError as err:
        raise OSError(err.errno, f"could not write {target} ({err.strerror or err})", str(target)) from err
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the usual permissions
        os.replace(tmp, target)
    except OSError as err:
        raise OSError(err.errno, f"could not write {target} ({err.strerror or err}); the previous "
                                 f"file, if any, is unchanged", str(target)) from err
    finally:
        if tmp.exists():
            tmp.unlink()


def _write(path: str | os.PathLike[str], mode: str, writer: Callable[[IO[Any]], None]) -> Path:
    with atomic_path(path) as tmp:
        with open(tmp, mode) as fh:
            writer(fh)
    return Path(path)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Atomically write ``data`` to ``path``."""
    return _write(path, "wb", lambda fh: fh.write(data))


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Atomically write UTF-8 ``text`` to ``path``."""
    return _write(path, "w", lambda fh: fh.write(text))


def atomic_write_json(path: str | os.PathLike[str], obj: Any) -> Path:
    """Atomically write ``obj`` as indented JSON (keys sorted, so identical runs give identical files)."""
    text = json.dumps(obj, indent=2, sort_keys=True, allow_nan=False) + "\n"
    return atomic_write_text(path, text)


def atomic_torch_save(obj: Any, path: str | os.PathLike[str]) -> Path:
    """Atomically ``torch.save`` ``obj`` to ``path``."""
    import torch

    with atomic_path(path) as tmp:
        torch.save(obj, tmp)
    return Path(path)


def atomic_savefig(fig: Any, path: str | os.PathLike[str], **kwargs: Any) -> Path:
    """Atomically save a matplotlib figure; the format is taken from ``path``'s suffix."""
    fmt = Path(path).suffix.lstrip(".") or None
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format=fmt, **kwargs)
    return Path(path)
