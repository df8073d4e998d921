"""The one task runner shared by the 2-D task, the image task and the scenarios of E5.

A task kind (:mod:`gftlib.experiments.tasks.toy2d`, :mod:`gftlib.experiments.tasks.images`,
:mod:`gftlib.experiments.scenarios`) supplies its data and model (a task object with ``seed``,
``build_model(seed=)``, ``target_train()``, ``as_dict()`` and the ``pretrain_*`` fields) and a
:class:`TaskRunner` subclass saying how a run is configured (:meth:`TaskRunner.train_config`,
:meth:`TaskRunner.method_options`), evaluated (:meth:`TaskRunner.evaluator`), summarised
(:meth:`TaskRunner.collect`) and keyed (:meth:`TaskRunner.run_key`). The runner does the rest the
same way for every task:

- :func:`pretrain_source`: train the task's model on the source from a random init seeded with
  ``task.seed`` and return its EMA weights, through the cache;
- :meth:`TaskRunner.finetune`: pretrain-or-load, then :func:`gftlib.experiments.methods.run_method`
  (start from the pretrained weights or a fresh model seeded with the run's seed, evaluate at step 0
  and over training), then the task's summary, through the cache;
- :meth:`TaskRunner.run_methods`: the per-method loop over (task, seed) units.

Wall time: every run measures its training time at each evaluation, evaluations excluded, from
the start of :func:`~gftlib.experiments.methods.run_method` (method construction and the caches of
the pretrained term count: the method pays them; loading the pretrained model and building the
evaluator do not). :class:`RunRecord` holds it (:func:`timing_fields`). It depends on the machine
and on the load and is never reproducible byte for byte; a run loaded from the cache keeps the
wall time measured when it was computed (:mod:`gftlib.experiments.walltime`).

Cache keys (:func:`gftlib.experiments.cache.cached_torch`) hold every parameter that can change the
result plus the source of the whole package, so editing any code invalidates every entry.
Conventions: t = 0 noise, t = 1 data.
"""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, TypeVar

import numpy as np
import torch
from torch import Tensor, nn

from gftlib.experiments.cache import cached_torch
from gftlib.experiments.methods import METHODS, MethodRun, run_method
from gftlib.training import TrainConfig, train
from gftlib.validation import check_choice, check_positive_int, resolve_device

__all__ = ["single_thread", "ema_state", "load_weights", "pretrain_source", "RunRecord", "record_fields",
           "timing_fields", "TaskRunner"]

TaskT = TypeVar("TaskT")
ConfigT = TypeVar("ConfigT")
RunT = TypeVar("RunT")


@contextlib.contextmanager
def single_thread() -> Iterator[None]:
    """Run with one intra-op CPU thread (tiny 2-D MLPs gain nothing from more, and oversubscribed
    shared CPUs lose a lot); the previous setting is restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def ema_state(model: nn.Module) -> dict[str, Tensor]:
    """A detached CPU copy of ``model``'s state dict (what the caches store)."""
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


def load_weights(model: nn.Module, state: Mapping[str, Tensor], *,
                 device: str | torch.device | None = None) -> nn.Module:
    """``model`` with weights ``state``, in eval mode without gradients (moved to ``device`` if given)."""
    model.load_state_dict(dict(state))
    if device is not None:
        model = model.to(resolve_device(device))
    return model.eval().requires_grad_(False)


def pretrain_source(task: Any, objective: Callable[[], Any], *, name: str, key: Mapping[str, Any],
                    device: torch.device, amp: str = "none", n_logs: int = 50) -> dict[str, Any]:
    """``{"ema": state, "history": rows}`` of ``task.build_model(seed=task.seed)`` trained on
    ``objective()`` for ``task.pretrain_steps`` AdamW steps at ``task.pretrain_lr`` (seed
    ``task.seed``, about ``n_logs`` loss logs). Cached as ``name`` under ``key`` (the caller's
    description of everything that determines the model)."""

    def build() -> dict[str, Any]:
        model = task.build_model(seed=task.seed)
        cfg = TrainConfig(steps=task.pretrain_steps, lr=task.pretrain_lr, seed=task.seed, device=str(device),
                          amp=amp, progress=False, log_every=max(1, task.pretrain_steps // n_logs))
        res = train(model, objective(), cfg)
        return {"ema": ema_state(res.ema_model), "history": res.history}

    return cached_torch(name, dict(key), build)


@dataclass(frozen=True)
class RunRecord:
    """What every task's record of one fine-tuning run holds (the tasks add their evaluations):
    ``method``, ``seed``; loss logs sharing ``log_steps`` (means over each log interval; ``beta`` is
    the temperature at the logged step); ``schedule_final_beta``: beta at the last update (None
    without a schedule); ``ema_state``: the final EMA weights (CPU). Wall time in seconds
    (:func:`timing_fields`; machine- and load-dependent): ``train_seconds_at_eval`` (E,) sharing the
    task's ``eval_steps`` (every evaluation of the run, step 0 first): training seconds at each
    evaluation, evaluations excluded; ``setup_seconds``: method construction and caches;
    ``train_seconds``: the whole run; ``evaluation_seconds``: time inside the evaluations (excluded
    from the others)."""

    method: str
    seed: int
    log_steps: np.ndarray
    beta: np.ndarray
    loss_total: np.ndarray
    loss_target: np.ndarray
    loss_pretrained: np.ndarray
    schedule_final_beta: float | None
    train_seconds_at_eval: np.ndarray
    setup_seconds: float
    train_seconds: float
    evaluation_seconds: float
    ema_state: dict[str, Tensor] = field(repr=False)


def timing_fields(run: MethodRun, evals: Sequence[Mapping[str, Any]] | None = None) -> dict[str, Any]:
    """The wall-time fields of :class:`RunRecord` for the evaluation rows ``evals`` (default: every
    row of ``run.evals``); ``train_seconds_at_eval`` is aligned with their ``step``s."""
    rows = run.evals if evals is None else evals
    t = run.timing
    return dict(train_seconds_at_eval=t.at([int(r["step"]) for r in rows]), setup_seconds=t.setup_seconds,
                train_seconds=t.train_seconds, evaluation_seconds=t.evaluation_seconds)


def record_fields(run: MethodRun, method: str, seed: int, steps: int) -> dict[str, Any]:
    """The :class:`RunRecord` fields of a finished run of ``steps`` updates (wall times aligned with
    every row of ``run.evals``, which is what the tasks' ``eval_steps`` hold)."""
    logs, col = run.logs, run.column
    return dict(method=method, seed=seed, log_steps=col(logs, "step", np.int64), beta=col(logs, "beta"),
                loss_total=col(logs, "total"), loss_target=col(logs, "target"),
                loss_pretrained=col(logs, "pretrained"), schedule_final_beta=run.final_beta(steps),
                **timing_fields(run), ema_state=ema_state(run.result.ema_model))


class TaskRunner(ABC, Generic[TaskT, ConfigT, RunT]):
    """The fine-tuning loop of one task kind: subclasses give the task-specific pieces.

    ``name``: prefix of the cache entries (``"{name}-{method}"``); ``eval_key``: the key every
    evaluation row holds (:func:`gftlib.experiments.methods.run_method`); ``one_thread``: run with
    one CPU thread (:func:`single_thread`); ``task_type``/``config_type``: the accepted argument
    types; ``scratch_ignores``: the task fields a "scratch" run does not depend on (dropped from
    its key where present, so every pretraining setting shares one scratch run)."""

    name: ClassVar[str]
    eval_key: ClassVar[str]
    one_thread: ClassVar[bool] = False
    task_type: ClassVar[type]
    config_type: ClassVar[type]
    scratch_ignores: ClassVar[tuple[str, ...]] = ()

    def threads(self) -> contextlib.AbstractContextManager[None]:
        return single_thread() if self.one_thread else contextlib.nullcontext()

    @abstractmethod
    def pretrained(self, task: TaskT, method: str, config: ConfigT, device: torch.device) -> nn.Module | None:
        """The model ``method`` fine-tunes (None where it plays no part)."""

    @abstractmethod
    def train_config(self, config: ConfigT, seed: int, device: torch.device) -> TrainConfig:
        """The trainer settings of one run (optimizer, steps, EMA, evaluation and log intervals)."""

    @abstractmethod
    def method_options(self, task: TaskT, config: ConfigT, seed: int) -> dict[str, Any]:
        """Keyword arguments of :func:`gftlib.experiments.methods.build_method` (and ``run_method``)."""

    @abstractmethod
    def evaluator(self, task: TaskT, config: ConfigT,
                  device: torch.device) -> Callable[[nn.Module, int], dict[str, float]]:
        """``evaluate(model, step) -> {metric: value}`` called at step 0 and over training."""

    @abstractmethod
    def collect(self, task: TaskT, method: str, seed: int, config: ConfigT, run: MethodRun,
                device: torch.device) -> RunT:
        """The task's record of one finished run (what the cache stores)."""

    def check(self, task: TaskT, method: str, seed: int, config: ConfigT) -> tuple[str, int]:
        """Validate the arguments of :meth:`finetune`; returns the canonical ``(method, seed)``."""
        method = check_choice("method", method, METHODS)
        seed = check_positive_int("seed", seed, minimum=0)
        for name, value, kind in (("task", task, self.task_type), ("config", config, self.config_type)):
            if not isinstance(value, kind):
                article = "an" if kind.__name__[0] in "AEIOU" else "a"
                raise TypeError(f"{name} must be {article} {kind.__name__}, got {type(value).__name__}")
        return method, seed

    def run_key(self, task: TaskT, method: str, seed: int, config: ConfigT) -> dict[str, Any]:
        """Every parameter that can change the run (the cache key, besides the device type)."""
        task_key = task.as_dict()
        if method == "scratch":  # the pretrained model plays no part
            for k in self.scratch_ignores:
                task_key.pop(k, None)
        return {"task": task_key, "method": method, "seed": seed, "config": config.key_for(method)}

    def finetune_uncached(self, task: TaskT, method: str, seed: int, config: ConfigT,
                          device: torch.device) -> RunT:
        """One run without the cache (see :meth:`finetune`)."""
        pretrained = self.pretrained(task, method, config, device)
        cfg = self.train_config(config, seed, device)
        run = run_method(method, target_data=task.target_train(), pretrained_model=pretrained,
                         new_model=lambda: task.build_model(seed=seed),
                         evaluate=self.evaluator(task, config, device), eval_key=self.eval_key,
                         train_config=cfg, device=device, **self.method_options(task, config, seed))
        return self.collect(task, method, seed, config, run, device)

    def finetune(self, task: TaskT, method: str, seed: int, config: ConfigT, *,
                 device: str | torch.device = "cpu") -> RunT:
        """Fine-tune (or train from scratch) on ``task.target_train()`` with ``method``; ``seed``
        drives the model init of a fresh model, the data order, the noise and the caches. Cached on
        :meth:`run_key` and the device type."""
        method, seed = self.check(task, method, seed, config)
        dev = resolve_device(device)
        key = {"kind": f"{self.name}-finetune", **self.run_key(task, method, seed, config),
               "device": dev.type}
        with self.threads():
            return cached_torch(f"{self.name}-{method}", key,
                                lambda: self.finetune_uncached(task, method, seed, config, dev))

    def run_methods(self, units: Sequence[tuple[TaskT, int]], methods: Sequence[str], config: ConfigT, *,
                    device: str | torch.device = "cpu") -> dict[str, list[RunT]]:
        """``{method: [run for each (task, seed) of units]}`` (each run cached)."""
        return {m: [self.finetune(t, m, s, config, device=device) for t, s in units] for m in methods}
