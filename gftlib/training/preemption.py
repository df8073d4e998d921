"""Graceful preemption: SIGTERM / SIGUSR1 ask training to checkpoint at the next step boundary and stop.

SLURM and most schedulers send SIGTERM (or a configurable signal, often SIGUSR1) some time before
they kill a job at its time limit. :class:`PreemptionWatch` installs a handler for both signals
(only in the main thread: Python runs signal handlers there alone; elsewhere it installs nothing)
that merely records the request; :func:`gftlib.training.loop.train` polls it after each completed update,
writes a checkpoint of that step, and raises :class:`TrainingPreempted`. The previous handlers are
restored when the watch ends (when ``train`` returns or raises). The training CLI turns
:class:`TrainingPreempted` into the exit code :data:`EXIT_PREEMPTED` (75, ``EX_TEMPFAIL`` of
sysexits.h: "try again later"); rerunning the same command resumes from that checkpoint.

Under DDP a signal may reach only some ranks, or reach them during different updates. The ranks
therefore agree through a collective (max of the flags, :func:`agree`) at the same step, so all stop
after the same update and rank 0 writes the one checkpoint. On the CPU (gloo) the agreement runs
after every update: one 1-element all-reduce next to the gradient all-reduce costs nothing
measurable. On a GPU, reading the agreed flag back is a host synchronisation, so the trainer agrees
only every :data:`ACCELERATOR_CHECK_EVERY` updates and at the log / evaluation / checkpoint
boundaries (which synchronise anyway): the stop comes at most that many updates late, far inside a
scheduler's grace period. A single process needs no collective: the flag is a host-side value,
checked after every update on any device.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType
from typing import Any

import torch

from gftlib.training import distributed as D

__all__ = ["PREEMPT_SIGNALS", "EXIT_PREEMPTED", "ACCELERATOR_CHECK_EVERY", "TrainingPreempted",
           "PreemptionWatch", "agree", "active_request"]

#: Signals that request a checkpoint-and-stop.
PREEMPT_SIGNALS: tuple[signal.Signals, ...] = (signal.SIGTERM, signal.SIGUSR1)

#: Exit code of the training CLI after a preemption (EX_TEMPFAIL: rerun the same command to resume).
EXIT_PREEMPTED = 75

#: Under DDP on an accelerator, the ranks agree on the stop flag every this many updates.
ACCELERATOR_CHECK_EVERY = 20

_ACTIVE: list[PreemptionWatch] = []  # the watches currently installed, innermost last


class TrainingPreempted(Exception):
    """Training stopped on a preemption signal. ``step``: updates completed (the checkpoint's step);
    ``signal_name``: e.g. "SIGTERM" (on a rank that did not receive it: the name from the first rank
    that did, else "signal on another rank"); ``checkpoint``: the checkpoint written, or None without
    a ``checkpoint_dir``."""

    def __init__(self, step: int, signal_name: str, checkpoint: str | None) -> None:
        self.step, self.signal_name, self.checkpoint = step, signal_name, checkpoint
        saved = (f"checkpoint {checkpoint} written; rerun the same command to resume" if checkpoint
                 else "no checkpoint_dir was given, so nothing was saved")
        super().__init__(f"training preempted by {signal_name} after step {step}: {saved}")


class PreemptionWatch:
    """Context manager: records SIGTERM / SIGUSR1 in :attr:`signum` instead of dying.

    Installs handlers only when entered in the main thread (``installed`` says whether it did);
    restores the previous handlers on exit.
    """

    def __init__(self) -> None:
        self.signum: int | None = None
        self.installed = False
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signum is None:
            self.signum = signum

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def __enter__(self) -> PreemptionWatch:
        if threading.current_thread() is threading.main_thread():
            for sig in PREEMPT_SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
            self.installed = True
        _ACTIVE.append(self)
        return self

    def __exit__(self, *exc: Any) -> None:
        _ACTIVE.remove(self)
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()
        self.installed = False


def active_request() -> int | None:
    """The signal recorded by the innermost active watch (None: no watch, or no signal yet)."""
    return _ACTIVE[-1].signum if _ACTIVE else None


def agree(watch: PreemptionWatch, device: torch.device) -> tuple[bool, str]:
    """Whether any rank was asked to stop, and the signal's name (a collective under DDP)."""
    mine = int(watch.signum or 0)
    if D.get_world_size() == 1:
        return mine != 0, signal.Signals(mine).name if mine else ""
    flag = torch.tensor([float(mine)], device=device)
    D.all_reduce_(flag, "max")
    agreed = int(flag.item())
    if not agreed:
        return False, ""
    try:
        return True, signal.Signals(agreed).name
    except ValueError:
        return True, "signal on another rank"
