"""One training loop for pretraining, fine-tuning and GFT (THEORY.md: cooling schedule on beta).

``train(model, objective, config, schedule=..., evaluate=...)`` runs ``config.steps`` AdamW updates.
Update k = 1 .. steps calls ``objective.loss(model, beta_k, generator)`` with
``beta_k = schedule(k - 1)`` (0 without a schedule), back-propagates ``LossTerms.total`` (fp32),
clips the gradient norm, steps the optimizer with a linear warm-up of the learning rate and updates
an fp32 EMA copy of the parameters. "Step k" everywhere (history, checkpoints, errors) means
"after k completed updates".

The loop is a sequence of named steps: :func:`_set_up` (model on the device, EMA, optimizer,
seeds), :func:`gftlib.training.state.resume`, :func:`_prepare_network` (DDP, channels_last inputs,
compile, autocast), then per update :func:`_update` and, at a log / evaluation / checkpoint /
preemption boundary (:func:`_due`), :func:`_log`, :func:`_evaluate`, :func:`gftlib.training.state.save`
and :func:`_stop`; :func:`_finish` returns the result. The pieces: configuration
(:mod:`gftlib.training.config`), EMA (:mod:`gftlib.training.ema`), the non-finite guard
(:mod:`gftlib.training.guard`), the checkpointed state (:mod:`gftlib.training.state`).

Reproducibility and resuming. The trainer owns one ``torch.Generator`` on the training device,
seeded with ``config.seed`` and *identical on every rank*: an objective that draws its global-batch
randomness from it and keeps its rank's rows (as :class:`gftlib.gft.objective.FlowMatchingObjective`
does) reproduces the single-process batch under DDP. Python's ``random``, numpy's and torch's global
RNGs (dropout) are seeded with ``config.seed + rank`` at a fresh start (a documented side effect).
A checkpoint holds everything that influences later steps: model, EMA, optimizer, step, beta, the
trainer's generator, every rank's global RNG states and objective state, the history so far and a
fingerprint of the result-relevant settings; resuming from it continues bit for bit on the CPU.
``train`` resumes automatically from the newest *good* checkpoint in ``config.checkpoint_dir`` (a
newer one that fails its checksum or does not load is reported with its path, renamed to
``<name>.corrupt`` and skipped: :func:`gftlib.training.checkpoint.latest_good_checkpoint`) and refuses one
written with different result-relevant settings (steps, lr, seed, schedule, ...). While it runs,
``train`` holds ``checkpoint_dir`` (:mod:`gftlib.locking`; rank 0 holds it under DDP): a second run
on the same directory is refused with :class:`gftlib.locking.DirectoryBusy`; the kernel frees the
lock when a run dies, killed or not.

Non-finite guard. A non-finite loss term or gradient norm stops training with
:class:`NonFiniteLossError` (a ``FloatingPointError``) naming the step and the term. On the CPU the
check runs every step (before the optimizer update); on a GPU a device-side record of the first bad
step is checked at each log / evaluation / checkpoint boundary (no per-step host sync), and no
checkpoint is ever written after a bad step, so the last good checkpoint is kept.

Preemption. SIGTERM or SIGUSR1 during training (handlers installed in the main thread only, the
previous ones restored when ``train`` returns) finishes the update in progress, writes its checkpoint
(to ``checkpoint_dir``, if any) and raises :class:`gftlib.training.preemption.TrainingPreempted`; calling
``train`` again with the same arguments resumes bit for bit. Under DDP the ranks agree on the stop
flag through a collective, so all stop after the same update (details: :mod:`gftlib.training.preemption`).

Distributed. Under ``torchrun`` (process group initialised, e.g. by
:func:`gftlib.training.distributed.init_from_env`) the model is wrapped in DDP (gradients averaged over
ranks), ``objective.set_rank(rank, world_size)`` is called, logged losses are averaged over ranks,
only rank 0 evaluates, writes checkpoints and shows the progress bar, and every rank resumes from
the same checkpoint (taking its own RNG and objective state from it).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor, nn

from gftlib.models import to_fast_layout
from gftlib.training import distributed as D
from gftlib.training.config import (TrainConfig, TrainResult, beta_sequence, check_train_arguments,
                                    learning_rate)
from gftlib.training.ema import EMA, ema_decay
from gftlib.rng import seed_global_rngs
from gftlib.training.fastpath import ChannelsLastInput
from gftlib.training.guard import NonFiniteGuard
from gftlib.training.preemption import ACCELERATOR_CHECK_EVERY, PreemptionWatch, TrainingPreempted, agree
from gftlib.training.state import (TrainingState, fingerprint_of, hold_checkpoint_dir, optimizer_impl,
                                   resume, save)
from gftlib.validation import resolve_device

__all__ = ["train"]


def train(
    model: nn.Module,
    objective: Any,
    config: TrainConfig,
    *,
    schedule: Callable[[int], float] | None = None,
    evaluate: Callable[[nn.Module, int], Mapping[str, Any]] | None = None,
    fingerprint: Mapping[str, Any] | None = None,
) -> TrainResult:
    """Train ``model`` in place on ``objective`` (see the module docstring for every convention).

    ``objective``: implements :class:`gftlib.gft.objective.Objective` (``loss(model, beta, generator)
    -> LossTerms``, ``state_dict``, ``load_state_dict``, optionally ``set_rank``); it should draw
    random numbers on ``generator.device``. ``schedule``: a CoolingSchedule with
    ``total_steps == config.steps`` (or any callable step -> beta >= 0); None means beta = 0.
    ``evaluate(ema_model, step) -> dict`` runs on rank 0 every ``config.eval_every`` steps and at the
    end. ``fingerprint``: extra JSON-able settings (method, batch size, data, ...) that must match
    for a checkpoint to be resumed.
    """
    check_train_arguments(model, objective, config, evaluate)
    world = D.get_world_size()
    device = resolve_device(config.device)
    if world > 1 and device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    betas = beta_sequence(schedule, config.steps)
    fp = fingerprint_of(config, world, betas, fingerprint)
    with hold_checkpoint_dir(config.checkpoint_dir, device):  # one run per checkpoint_dir
        return _train(model, objective, config, evaluate, betas, fp, device)


def _train(model: nn.Module, objective: Any, config: TrainConfig, evaluate: Any, betas: np.ndarray,
           fp: dict[str, Any], device: torch.device) -> TrainResult:
    """The loop of :func:`train`, after validation and with the checkpoint directory held."""
    run = _set_up(model, objective, config, evaluate, betas, fp, device)
    if run.ckpt_dir is not None:
        resume(run.state, run.ckpt_dir, run.impl, run.rank)  # the newest good checkpoint, if any
    run.start = run.state.step
    _prepare_network(run)
    run.bar = _ProgressBar(config.progress and run.main, config.steps, run.start)
    run.guard = NonFiniteGuard(device, run.world, betas, run.bar.close)
    with PreemptionWatch() as watch:  # SIGTERM/SIGUSR1: checkpoint at the next boundary, stop
        for k in range(run.start + 1, config.steps + 1):
            beta, lr_k = _update(run, k)
            due = _due(run, k, watch)
            if not (due.log or due.eval or due.ckpt or due.stop):
                continue
            if run.guard.deferred:
                run.guard.check(run.state.last_checkpoint)  # before any checkpoint of a bad step
            if due.log:
                _log(run, k, beta, lr_k)
            if due.eval and run.main:
                _evaluate(run, k, beta)
            if due.ckpt:
                save(run.state, run.ckpt_dir, k, beta, config)
            if due.stop:
                _stop(run, k, due.signal_name)
    return _finish(run)


# ----------------------------------------------------------------------------------------- the run
class _ProgressBar:
    """tqdm on rank 0 when ``config.progress`` (created lazily: tqdm is imported only then)."""

    def __init__(self, enabled: bool, total: int, initial: int) -> None:
        self.bar = None
        if enabled:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, initial=initial, desc="train", dynamic_ncols=True, leave=False)

    def update(self) -> None:
        if self.bar is not None:
            self.bar.update(1)

    def show(self, loss: float, beta: float) -> None:
        if self.bar is not None:
            self.bar.set_postfix(loss=f"{loss:.4g}", beta=f"{beta:.3g}", refresh=False)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


@dataclass
class _Run:
    """One call of :func:`train`: its settings, the checkpointed ``state`` and the per-run machinery."""

    config: TrainConfig
    evaluate: Callable[[nn.Module, int], Mapping[str, Any]] | None
    betas: np.ndarray
    device: torch.device
    rank: int
    world: int
    state: TrainingState
    params: list[Tensor]
    impl: dict[str, bool]
    ckpt_dir: Path | None
    start: int = 0                                   # the step resumed from (0: a fresh start)
    net: nn.Module | None = None                     # what the objective calls (DDP, compiled, ...)
    amp: Any = None                                  # the forward pass's autocast context
    bar: _ProgressBar | None = None
    guard: NonFiniteGuard | None = None

    @property
    def main(self) -> bool:
        return self.rank == 0


class _Due(NamedTuple):
    """What happens after an update: log, evaluate, checkpoint, stop (and on which signal)."""

    log: bool
    eval: bool
    ckpt: bool
    stop: bool
    signal_name: str


# ----------------------------------------------------------------------------------------- the steps
def _set_up(model: nn.Module, objective: Any, config: TrainConfig, evaluate: Any, betas: np.ndarray,
            fp: dict[str, Any], device: torch.device) -> _Run:
    """Model on the device (channels_last if asked), EMA copy, AdamW, the trainer's generator
    (``config.seed``), global RNGs seeded with ``config.seed + rank``, the objective's rank."""
    rank, world = D.get_rank(), D.get_world_size()
    module = model.to(device)
    if config.channels_last:
        to_fast_layout(module)  # before the EMA copy, the optimizer and DDP see the parameters
    module.train()
    params = [p for p in module.parameters() if p.requires_grad]
    if not params:
        raise ValueError("model has no trainable parameters (requires_grad=True)")
    ema = EMA(module)
    impl = optimizer_impl(device)
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay, **impl)
    generator = torch.Generator(device=device)
    generator.manual_seed(config.seed)
    seed_global_rngs(config.seed + rank)
    if callable(getattr(objective, "set_rank", None)):
        objective.set_rank(rank, world)
    state = TrainingState(module=module, ema=ema, optimizer=optimizer, generator=generator,
                          objective=objective, fingerprint=fp, acc=torch.zeros(4, device=device))
    ckpt_dir = Path(config.checkpoint_dir) if config.checkpoint_dir is not None else None
    return _Run(config=config, evaluate=evaluate, betas=betas, device=device, rank=rank, world=world,
                state=state, params=params, impl=impl, ckpt_dir=ckpt_dir)


def _prepare_network(run: _Run) -> None:
    """What the objective calls: DDP-wrapped, channels_last inputs, compiled; the autocast context."""
    net: nn.Module = D.wrap_model(run.state.module, run.device)
    if run.config.channels_last:
        net = ChannelsLastInput(net)
    if run.config.compile:
        net = torch.compile(net)
    run.net = net
    run.amp = (torch.autocast(device_type=run.device.type, dtype=torch.bfloat16) if run.config.amp == "bf16"
               else contextlib.nullcontext())


def _update(run: _Run, k: int) -> tuple[float, float]:
    """Update ``k`` (1-based): forward under autocast, fp32 backward, clipped gradient, the guard's
    record, AdamW step, EMA update, the log interval's sums. Returns ``(beta_k, lr_k)``."""
    config, state, device = run.config, run.state, run.device
    beta = float(run.betas[k - 1])
    lr_k = learning_rate(config, k)
    for group in state.optimizer.param_groups:
        group["lr"] = lr_k
    state.optimizer.zero_grad(set_to_none=True)
    with run.amp:
        terms = state.objective.loss(run.net, beta, state.generator)
    total = _as_scalar("total", terms.total, device).float()
    if k == run.start + 1 and not total.requires_grad:
        raise ValueError(
            "LossTerms.total does not require grad: the objective must compute it from the model"
        )
    target = _as_scalar("target", getattr(terms, "target", total), device).detach().float()
    pre = _as_scalar("pretrained", getattr(terms, "pretrained", 0.0), device).detach().float()
    total.backward()
    gnorm = _grad_norm(run.params, config.grad_clip).detach().float()
    vals = torch.stack([total.detach(), target, pre, gnorm])
    run.guard.record(k, vals, state.last_checkpoint)
    state.optimizer.step()
    state.ema.update(ema_decay(config, k))
    state.acc += vals
    state.count += 1
    state.step = k
    run.bar.update()
    return beta, lr_k


def _due(run: _Run, k: int, watch: PreemptionWatch) -> _Due:
    """Which boundaries step ``k`` is; polls the preemption flag (all ranks at the same k)."""
    config, steps = run.config, run.config.steps
    is_log = k % config.log_every == 0 or k == steps
    is_eval = run.evaluate is not None and (k == steps or (config.eval_every is not None
                                                            and k % config.eval_every == 0))
    is_ckpt = run.ckpt_dir is not None and (k == steps or (config.checkpoint_every is not None
                                                            and k % config.checkpoint_every == 0))
    stop, signal_name = False, ""
    if k < steps and (run.world == 1 or run.device.type == "cpu" or k % ACCELERATOR_CHECK_EVERY == 0
                      or is_log or is_eval or is_ckpt):  # the same k on every rank
        stop, signal_name = agree(watch, run.device)
        is_ckpt = is_ckpt or (stop and run.ckpt_dir is not None)
    return _Due(is_log, is_eval, is_ckpt, stop, signal_name)


def _log(run: _Run, k: int, beta: float, lr_k: float) -> None:
    """Append the log interval's means (over updates and ranks) to the history and restart it."""
    state = run.state
    D.all_reduce_(state.acc, "sum")
    means = (state.acc / (state.count * run.world)).tolist()
    entry = {"step": k, "beta": beta,
             **dict(zip(("total", "target", "pretrained", "grad_norm"), means)), "lr": lr_k}
    state.history.append(entry)
    state.acc.zero_()
    state.count = 0
    run.bar.show(entry["total"], beta)


def _evaluate(run: _Run, k: int, beta: float) -> None:
    """Rank 0: ``evaluate(ema_model, k)``, merged into the history entry of step ``k``."""
    metrics = run.evaluate(run.state.ema.model, k)
    if not isinstance(metrics, Mapping):
        raise TypeError(f"evaluate must return a dict of metrics, got {type(metrics).__name__}")
    metrics = {str(key): _plain(v) for key, v in metrics.items()}
    history = run.state.history
    if history and history[-1]["step"] == k:
        history[-1].update(metrics)
    else:
        history.append({"step": k, "beta": beta, **metrics})


def _stop(run: _Run, k: int, signal_name: str) -> None:
    """Preempted after update ``k`` (its checkpoint written): every rank raises TrainingPreempted."""
    D.barrier()  # rank 0 has written the checkpoint before any rank exits
    run.bar.close()
    raise TrainingPreempted(k, signal_name, run.state.last_checkpoint if run.ckpt_dir is not None else None)


def _finish(run: _Run) -> TrainResult:
    """Close the progress bar, run the deferred non-finite check, return the result."""
    run.bar.close()
    if run.guard.deferred:
        run.guard.check(run.state.last_checkpoint)
    state = run.state
    return TrainResult(model=state.module, ema_model=state.ema.model, history=state.history,
                       resumed_from=state.resumed_from, last_checkpoint=state.last_checkpoint)


# ----------------------------------------------------------------------------------------- helpers
def _as_scalar(name: str, value: Any, device: torch.device) -> Tensor:
    if isinstance(value, Tensor):
        if value.numel() != 1:
            raise ValueError(f"LossTerms.{name} must be a scalar tensor, got shape {tuple(value.shape)}")
        return value.reshape(())
    if isinstance(value, (int, float)):
        return torch.tensor(float(value), device=device)
    raise TypeError(f"LossTerms.{name} must be a scalar tensor, got {type(value).__name__}")


def _grad_norm(params: list[Tensor], clip: float | None) -> Tensor:
    if clip is not None:
        return torch.nn.utils.clip_grad_norm_(params, clip, foreach=True)
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return torch.zeros((), device=params[0].device)
    return torch.nn.utils.get_total_norm(grads, foreach=True)


def _plain(value: Any) -> Any:
    if isinstance(value, Tensor) and value.numel() == 1:
        return value.item()
    if isinstance(value, np.generic):
        return value.item()
    return value
