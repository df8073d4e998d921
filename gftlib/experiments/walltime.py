"""Wall time of *training only* at every evaluation of a run (used by
:func:`gftlib.experiments.methods.run_method`, so by every task of the shared runner).

A :class:`RunClock` starts when a run starts, before the method is built: building the method and
its pretrained-term caches (gft-coupling's coupling cache, gft-drift's drift cache, reflow's
pairs) counts as training time, because the method pays it. Every evaluation is called through
:meth:`RunClock.timed`, which measures its duration; those durations are subtracted, so the
training seconds at an evaluation are

    seconds(e) = (start of evaluation e - start of the run) - (time inside evaluations before e),

non-decreasing over the run. ``setup_seconds`` is the training time before the first evaluation
(method construction, caches, the initial model); ``train_seconds`` the training time of the whole
run (until ``train`` returns).

The clock is :func:`time.perf_counter` (monotonic, in seconds), read after
``torch.cuda.synchronize()`` when CUDA is in use (queued kernels are charged to the work that
queued them, not to the next evaluation). It counts elapsed time, not CPU time: on a loaded machine (``make figures`` runs two notebooks at once, each with one thread) a run
waits for the CPU and its seconds grow. Wall times therefore depend on the machine and on the load,
and are never byte-reproducible; the results JSON keeps them under one key
(:data:`gftlib.experiments.report.MACHINE_DEPENDENT_KEY`). A run loaded from the cache
(:func:`gftlib.experiments.cache.cached_torch`) keeps the wall times measured when it was computed.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

__all__ = ["RunTiming", "RunClock"]

Evaluate = Callable[[nn.Module, int], Mapping[str, Any]]


def _now() -> float:
    """:func:`time.perf_counter` once the GPU (if CUDA is in use) has finished its queued work."""
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()
    return time.perf_counter()


@dataclass(frozen=True)
class RunTiming:
    """The wall times of one run (seconds; see the module docstring).

    ``steps`` (E,): the step of every evaluation, in call order (step 0 = before training);
    ``seconds`` (E,): training seconds when evaluation e started (evaluations excluded);
    ``durations`` (E,): seconds inside each evaluation; ``setup_seconds``: training seconds before
    the first evaluation; ``train_seconds``: training seconds of the whole run."""

    steps: np.ndarray
    seconds: np.ndarray
    durations: np.ndarray
    setup_seconds: float
    train_seconds: float

    @property
    def evaluation_seconds(self) -> float:
        """Seconds spent inside evaluations (what ``seconds`` excludes)."""
        return float(np.sum(self.durations))

    def at(self, steps: Sequence[int]) -> np.ndarray:
        """Training seconds at each of ``steps`` (every one an evaluated step): (len(steps),)."""
        where = {int(s): i for i, s in enumerate(self.steps)}
        missing = [int(s) for s in steps if int(s) not in where]
        if missing:
            raise ValueError(f"steps must be evaluated steps of the run {self.steps.tolist()}, got {missing}")
        return np.asarray([self.seconds[where[int(s)]] for s in steps], dtype=np.float64)


class RunClock:
    """Measures one run: create it when the run starts, :meth:`mark_setup` when training is about to
    start, call every evaluation through :meth:`timed`, and :meth:`finish` when training returned."""

    def __init__(self) -> None:
        self._start = _now()
        self._inside = 0.0  # seconds spent inside evaluations so far
        self._steps: list[int] = []
        self._seconds: list[float] = []
        self._durations: list[float] = []
        self._setup: float | None = None

    def training_seconds(self) -> float:
        """Seconds since the start of the run, evaluations excluded."""
        return _now() - self._start - self._inside

    def mark_setup(self) -> None:
        """The set-up ends now (method, caches and initial model built)."""
        self._setup = self.training_seconds()

    def timed(self, evaluate: Evaluate) -> Evaluate:
        """``evaluate`` with its duration measured and excluded from the training seconds."""

        def timed_evaluate(model: nn.Module, step: int) -> Mapping[str, Any]:
            begin = _now()
            try:
                return evaluate(model, step)
            finally:
                duration = _now() - begin
                self._steps.append(int(step))
                self._seconds.append(begin - self._start - self._inside)
                self._durations.append(duration)
                self._inside += duration

        return timed_evaluate

    def finish(self) -> RunTiming:
        """The run's :class:`RunTiming` (training ends now)."""
        total = self.training_seconds()
        setup = total if self._setup is None else self._setup
        return RunTiming(steps=np.asarray(self._steps, dtype=np.int64),
                         seconds=np.asarray(self._seconds, dtype=np.float64),
                         durations=np.asarray(self._durations, dtype=np.float64),
                         setup_seconds=float(setup), train_seconds=float(total))
