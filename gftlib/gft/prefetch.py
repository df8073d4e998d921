"""Take the CPU minibatch coupling (exact OT, Sinkhorn) off the training step's critical path.

:class:`PrefetchingObjective` wraps a :class:`gftlib.gft.objective.FlowMatchingObjective`. The draws of
one batch come in a fixed order (objective.py): *head* = data indices, noise x0, times t (and the
per-rank generator fork), then the coupling, then the *tail* = path noise z and the pretrained
batch. The wrapper draws batch k+1's head right after batch k's tail, i.e. at exactly the same
position of every random stream as the plain objective would, and hands the deterministic, CPU-bound
part of the coupling (the exact-OT assignment :func:`gftlib.paths.couplings.ot_permutation`, or the
Sinkhorn plan) to a single background thread. While the model's forward/backward of step k runs, the
thread solves batch k+1's coupling; step k+1 waits for it and finishes the batch (the Sinkhorn
partner draws, z and the pretrained batch) in the caller's thread. The batches, and so the trained
weights, are therefore **bit-identical** to the plain objective's for the same seeds. Other
couplings (independent, custom callables) are computed in the caller's thread as usual.

On a GPU the head's x0 and x1 are copied to pinned host memory with ``non_blocking=True`` and the
thread waits on a CUDA event, so the training thread never blocks on the copy. scipy's assignment
solver and torch release the GIL, so the thread really runs in parallel.

Resuming. When the caller checkpoints after step k, batch k+1's head has already been drawn: the
trainer's generator and the data order are one head ahead. :meth:`PrefetchingObjective.state_dict`
therefore records the data order *before* that head and the generator state before and after it;
:meth:`~PrefetchingObjective.load_state_dict` restores the former and the next call re-draws the
head from the recorded generator state (after checking that the caller's generator is in the
recorded "after" state, as it is when a trainer restores its checkpoint), so a resumed run equals
an uninterrupted one. Such a state can only be loaded by a PrefetchingObjective. Batch k+1's head
is drawn even if step k was the last; the only effect is that the generator ends one head further.

Errors raised while solving batch k+1's coupling (e.g. NaN data) surface at step k+1.
"""

from __future__ import annotations

import threading
import time
import weakref
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from gftlib.paths.couplings import CoupledBatch, ExactOTCoupling, SinkhornCoupling, ot_permutation
from gftlib.losses import LossTerms, gft_loss
from gftlib.gft.objective import FlowMatchingObjective, ObjectiveBatch, _couple, _Head
from gftlib.gft.tensors import model_device, to_device

__all__ = ["PrefetchingObjective", "PREFETCHED_COUPLINGS"]

#: Coupling classes whose CPU work is prefetched (exact types; subclasses run synchronously).
PREFETCHED_COUPLINGS: tuple[type, ...] = (ExactOTCoupling, SinkhornCoupling)

_STATE_KEY = "prefetch"


@dataclass
class _Pending:
    """A drawn head, the background job solving its coupling, and the states around the draw."""

    head: _Head
    job: Future | None
    device: torch.device
    generator_before: Tensor       # trainer generator state before the head was drawn
    generator_after: Tensor        # ... and after
    sampler_before: dict[str, Any]  # data order before the head


def _host_copies(x0: Tensor, x1: Tensor) -> tuple[Tensor, Tensor, Any]:
    """CPU copies for the worker. On CUDA: pinned, non-blocking, plus an event the worker waits on."""
    if x0.device.type != "cuda":
        return x0.detach(), x1.detach(), None
    a = torch.empty(x0.shape, dtype=x0.dtype, pin_memory=True)
    b = torch.empty(x1.shape, dtype=x1.dtype, pin_memory=True)
    a.copy_(x0.detach(), non_blocking=True)
    b.copy_(x1.detach(), non_blocking=True)
    ready = torch.cuda.Event()
    ready.record()
    return a, b, ready


def _solve(kind: type, coupling: Any, x0: Tensor, x1: Tensor, ready: Any) -> Any:
    if ready is not None:
        ready.synchronize()  # blocks this worker thread only
    if kind is ExactOTCoupling:
        return ot_permutation(x0, x1)  # (n,) long on the CPU
    return coupling.plan(x0, x1)       # SinkhornCoupling: (n, n) float64 numpy plan


def _finish_pair(kind: type, result: Any, head: _Head) -> CoupledBatch:
    """The coupling's result from the solved part, exactly as the coupling's __call__ computes it."""
    if kind is ExactOTCoupling:
        index = to_device(result, head.x1.device)
        return CoupledBatch(x0=head.x0, x1=head.x1[index], index=index)
    # SinkhornCoupling.__call__: one partner per row drawn from the normalised plan row
    gen = head.local
    plan = torch.as_tensor(result, dtype=torch.float64)
    probs = to_device(plan / plan.sum(dim=1, keepdim=True), gen.device)
    index = torch.multinomial(probs, 1, replacement=True, generator=gen).squeeze(1)
    index = index.to(head.x1.device)
    return CoupledBatch(x0=head.x0, x1=head.x1[index], index=index)


class PrefetchingObjective:
    """``PrefetchingObjective(objective)``: the same batches as ``objective`` (a
    :class:`~gftlib.gft.objective.FlowMatchingObjective`), with the next batch's exact-OT / Sinkhorn
    coupling solved in a background thread while the current step trains (see the module doc).

    Implements the :class:`gftlib.gft.objective.Objective` protocol (``loss``, ``sample_batch``,
    ``state_dict``, ``load_state_dict``, ``set_rank``); pass it to :func:`gftlib.training.loop.train`
    instead of the wrapped objective. ``background_solves`` counts couplings solved in the thread.
    Call :meth:`close` (or use it as a context manager) to stop the thread early; it also stops when
    the wrapper is garbage collected.
    """

    def __init__(self, objective: FlowMatchingObjective) -> None:
        if not isinstance(objective, FlowMatchingObjective):
            raise TypeError("objective must be a gftlib.gft.objective.FlowMatchingObjective, got "
                            f"{type(objective).__name__}")
        self.objective = objective
        kind = type(objective.coupling)
        self._kind: type | None = kind if kind in PREFETCHED_COUPLINGS else None
        self._executor: ThreadPoolExecutor | None = None
        self._pending: _Pending | None = None
        self._replay: dict[str, Any] | None = None
        self.background_solves = 0
        #: seconds the training thread waited for each background solve (the coupling's cost left
        #: on the critical path; ~0 when the solve is faster than the model's step)
        self.wait_seconds: list[float] = []
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"PrefetchingObjective({type(self.objective).__name__}, coupling={self.objective.coupling!r})"

    # ------------------------------------------------------------------ protocol
    def set_rank(self, rank: int, world_size: int) -> None:
        if self._pending is not None:
            raise RuntimeError(
                "set_rank must be called before the first batch is drawn (a batch is already prefetched)")
        self.objective.set_rank(rank, world_size)

    def loss(self, model: nn.Module, beta: float, generator: torch.Generator) -> LossTerms:
        """Loss terms of one batch (identical to the wrapped objective's ``loss``)."""
        obj = self.objective
        batch = self.sample_batch(beta, generator, device=model_device(model, obj.target_data.device))
        return gft_loss(model, batch.target, float(beta), batch.pretrained, weight=obj.time_weight,
                        normalize=obj.normalize, check_values=False, fused=obj.fused_forward)

    def sample_batch(self, beta: float, generator: torch.Generator, *,
                     device: torch.device | str | None = None) -> ObjectiveBatch:
        """The batch the wrapped objective's ``sample_batch`` would return; then prefetch the next."""
        obj = self.objective
        beta, generator, device = obj._check_draw(beta, generator, device)
        pending = self._take(generator, device)
        pair = self._pair(pending)
        batch = obj._finish(pending.head, pair, beta, device)
        self._pending = self._start(generator, device, background=True)
        return batch

    def state_dict(self) -> dict[str, Any]:
        """The wrapped objective's state as of *before* the prefetched head, plus the generator
        states around that head (needed to re-draw it on resume)."""
        state = self.objective.state_dict()
        pending = self._pending
        if pending is None and self._replay is not None:  # loaded but not used yet: unchanged
            state["sampler"] = self._replay["sampler_before"]
            state[_STATE_KEY] = dict(self._replay)
            return state
        if pending is None:
            state[_STATE_KEY] = None
            return state
        state["sampler"] = pending.sampler_before
        state[_STATE_KEY] = {"generator_before": pending.generator_before.clone(),
                             "generator_after": pending.generator_after.clone(),
                             "sampler_before": pending.sampler_before}
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._discard()
        inner = {k: v for k, v in state.items() if k != _STATE_KEY}
        self.objective.load_state_dict(inner)
        saved = state.get(_STATE_KEY)
        if saved is not None:
            missing = {"generator_before", "generator_after", "sampler_before"} - set(saved)
            if missing:
                raise ValueError(f"PrefetchingObjective state is missing keys {sorted(missing)}")
        self._replay = None if saved is None else dict(saved)

    # ------------------------------------------------------------------ lifecycle
    def close(self) -> None:
        """Wait for a running background solve and stop the thread (a later call restarts it)."""
        with self._lock:
            executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=True)

    def __enter__(self) -> "PrefetchingObjective":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ------------------------------------------------------------------ internals
    def _executor_(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="gftlib-coupling")
                weakref.finalize(self, self._executor.shutdown, wait=False)
            return self._executor

    def _discard(self) -> None:
        pending, self._pending = self._pending, None
        if pending is not None and pending.job is not None:
            pending.job.cancel()
        self._replay = None

    def _start(self, generator: torch.Generator, device: torch.device, *, background: bool) -> _Pending:
        """Draw the next head from ``generator`` and (``background``) submit its coupling."""
        obj = self.objective
        before_gen, before_sampler = generator.get_state(), obj.sampler.state_dict()
        head = obj._draw_head(generator, device)
        job = None
        if background and self._kind is not None:
            x0, x1, ready = _host_copies(head.x0, head.x1)
            job = self._executor_().submit(_solve, self._kind, obj.coupling, x0, x1, ready)
        return _Pending(head=head, job=job, device=device, generator_before=before_gen,
                        generator_after=generator.get_state(), sampler_before=before_sampler)

    def _take(self, generator: torch.Generator, device: torch.device) -> _Pending:
        """This call's head: the prefetched one, a re-drawn one after a resume, or a fresh one."""
        if self._replay is not None:
            replay, self._replay = self._replay, None
            self._check_generator(generator, replay["generator_after"], "the resumed state")
            generator.set_state(replay["generator_before"])
            return self._start(generator, device, background=False)
        pending, self._pending = self._pending, None
        if pending is None:
            return self._start(generator, device, background=False)
        self._check_generator(generator, pending.generator_after, "the previous call")
        if pending.device != device:
            head = pending.head
            pending.head = _Head(x0=to_device(head.x0, device), x1=to_device(head.x1, device),
                                 t=to_device(head.t, device), local=head.local)
        return pending

    @staticmethod
    def _check_generator(generator: torch.Generator, expected: Tensor, since: str) -> None:
        state = generator.get_state()
        if state.shape != expected.shape or not torch.equal(state, expected):
            raise RuntimeError(
                "PrefetchingObjective: the generator is not in the state it had after the prefetched "
                f"batch was drawn (at {since}); pass the same generator on every call and do not draw "
                "from it in between (the next batch's noise was already drawn from it)")

    def _pair(self, pending: _Pending) -> CoupledBatch:
        head = pending.head
        if pending.job is None:
            return _couple(self.objective.coupling, head.x0, head.x1, head.local)
        start = time.perf_counter()
        result = pending.job.result()
        self.wait_seconds.append(time.perf_counter() - start)
        self.background_solves += 1
        return _finish_pair(self._kind, result, head)
