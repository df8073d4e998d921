"""One run per directory: an OS lock (``fcntl.flock``) on ``<directory>/.gftlib.lock``.

Training holds its ``checkpoint_dir``, ``run_notebooks`` (``make figures``) its build, figures and
results folders, for as long as it runs. A second run on a held directory is refused at once with
:class:`DirectoryBusy`, naming the directory and the holder (its pid and command, which the holder
writes into the lock file). The kernel releases a ``flock`` when the holder's file descriptor is
closed, which includes the holder dying by any signal (SIGKILL too), so a killed run never leaves a
stale lock: the lock file itself stays (empty of meaning; it is never deleted, since deleting a lock
file races with a process that has just opened it), and the next run simply takes the lock.

``flock`` locks belong to an open file description: a second :class:`DirectoryLock` on the same
directory conflicts even inside one process. On network file systems without ``flock`` support the
lock may be advisory only (Linux NFS emulates it with POSIX locks).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

__all__ = ["LOCK_NAME", "DirectoryBusy", "DirectoryLock", "hold_directories"]

LOCK_NAME = ".gftlib.lock"


class DirectoryBusy(RuntimeError):
    """Another live process holds the directory's lock. ``directory``, ``holder`` (its description)."""

    def __init__(self, directory: Path, holder: str, what: str) -> None:
        self.directory, self.holder = directory, holder
        super().__init__(
            f"{what} {str(directory)!r} is in use by another run ({holder}); two runs on one directory "
            f"would overwrite each other's files. Wait for it to finish (or stop it), or use another "
            f"directory.")


class DirectoryLock:
    """``with DirectoryLock(path, what="checkpoint_dir"):`` holds ``path`` (created if missing)."""

    def __init__(self, directory: str | os.PathLike[str], *, what: str = "directory") -> None:
        self.directory, self.what = Path(directory), what
        self._fd: int | None = None

    @property
    def path(self) -> Path:
        return self.directory / LOCK_NAME

    def acquire(self) -> DirectoryLock:
        """Take the lock or raise :class:`DirectoryBusy` (never waits)."""
        if self._fd is not None:
            raise RuntimeError(f"the lock on {self.directory} is already held by this object")
        self.directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 4096, 0).decode(errors="replace").strip() or "holder unknown"
            os.close(fd)
            raise DirectoryBusy(self.directory, holder, self.what) from None
        except BaseException:
            os.close(fd)
            raise
        command = " ".join(sys.argv)[:300]
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()}: {command}\n".encode(), 0)  # shown to a refused second run
        self._fd = fd
        return self

    def release(self) -> None:
        """Drop the lock (also happens when the process dies)."""
        if self._fd is not None:
            fd, self._fd = self._fd, None
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    @property
    def held(self) -> bool:
        return self._fd is not None

    def __enter__(self) -> DirectoryLock:
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()


@contextlib.contextmanager
def hold_directories(directories: Sequence[str | os.PathLike[str]], *, what: str = "directory"
                     ) -> Iterator[list[DirectoryLock]]:
    """Hold every directory in ``directories`` (duplicates once); all or none (refused: none held)."""
    unique: list[Path] = []
    for d in directories:
        p = Path(d).resolve()
        if p not in unique:
            unique.append(p)
    with contextlib.ExitStack() as stack:
        locks = [stack.enter_context(DirectoryLock(p, what=what)) for p in unique]
        yield locks
