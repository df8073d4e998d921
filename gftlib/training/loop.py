"""One training loop for pretraining, fine-tuning and GFT (THEORY.md: cooling schedule on beta).

``train(model, objective, config, schedule=..., evaluate=...)`` runs ``config.steps`` AdamW updates.
Update k = 1 .. steps calls ``objective.loss(model, beta_k, generator)`` with
``beta_k = schedule(k - 1)`` (0 without a schedule), back-propagates ``LossTerms.total`` (fp32),
clips the gradient norm, steps the optimizer with a linear warm-up of the learning rate and updates
an fp32 EMA copy of the parameters. "Step k" everywhere (history, checkpoints, errors) means
"after k completed updates".

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
import copy
import hashlib
import json
import os
import random
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from gftlib.training import distributed as D
from gftlib.training.checkpoint import (
    latest_good_checkpoint,
    quarantine,
    remove_stale_temporary_files,
    save_checkpoint,
)
from gftlib.training.fastpath import ChannelsLastInput
from gftlib.locking import DirectoryBusy, DirectoryLock
from gftlib.rng import seed_global_rngs
from gftlib.models import to_fast_layout
from gftlib.training.preemption import ACCELERATOR_CHECK_EVERY, PreemptionWatch, TrainingPreempted, agree
from gftlib.validation import (
    check_bool,
    check_choice,
    check_finite_number,
    check_positive_int,
    resolve_device,
)

__all__ = ["TrainConfig", "TrainResult", "NonFiniteLossError", "TrainingPreempted", "train", "AMP_MODES",
           "RESULT_FIELDS"]

AMP_MODES: tuple[str, ...] = ("none", "bf16")

#: TrainConfig fields that change the trained weights; a checkpoint written with other values of
#: these is refused on resume. (log_every, eval_every, checkpoint_*, device and progress are free.)
RESULT_FIELDS: tuple[str, ...] = ("steps", "lr", "ema_decay", "ema_warmup", "grad_clip", "warmup_steps",
                                  "weight_decay", "seed", "amp", "compile")

_TERMS = ("total", "target", "pretrained", "gradient")

#: Check for non-finite values every step on the CPU (cheap there). On accelerators the check is
#: deferred to log / evaluation / checkpoint boundaries to avoid a host sync per step. Tests flip
#: this to exercise the deferred path on the CPU.
_CPU_PER_STEP_CHECK = True


@dataclass(frozen=True)
class TrainConfig:
    """Settings of one training run (validated on construction).

    ``steps`` optimizer updates; AdamW with ``lr``, ``weight_decay``; linear warm-up of the learning
    rate over ``warmup_steps``; gradient-norm clipping at ``grad_clip`` (None: no clipping); EMA with
    decay ``ema_decay`` (with ``ema_warmup`` the decay at step k is min(ema_decay, (1 + k)/(10 + k)),
    so short runs are not dominated by the initial weights). History every ``log_every`` steps,
    ``evaluate`` every ``eval_every`` steps (and at the end), checkpoints every ``checkpoint_every``
    steps (and at the end) into ``checkpoint_dir`` keeping the newest ``keep_checkpoints`` (>= 2).
    ``device``: "auto" | "cpu" | "cuda" | "cuda:N". ``amp``: "none" | "bf16" (forward under bf16
    autocast; loss, gradients, optimizer state and EMA in fp32). ``compile``: torch.compile the model.
    ``channels_last``: convert the model's 4-D weights to channels_last
    (:func:`gftlib.models.to_fast_layout`) and feed it channels_last 4-D inputs (faster convolutions
    on GPUs, mostly with bf16; a layout choice like ``device``, so not a resume-relevant setting).
    :func:`gftlib.training.fastpath.fast_settings` gives the recommended ``amp``/``channels_last``/``compile``.
    """

    steps: int
    lr: float = 2e-4
    ema_decay: float = 0.999
    ema_warmup: bool = True
    grad_clip: float | None = 1.0
    warmup_steps: int = 0
    weight_decay: float = 0.0
    log_every: int = 50
    eval_every: int | None = None
    checkpoint_every: int | None = None
    checkpoint_dir: str | None = None
    keep_checkpoints: int = 2
    seed: int = 0
    device: str = "auto"
    amp: str = "none"
    compile: bool = False
    progress: bool = True
    channels_last: bool = False

    def __post_init__(self) -> None:
        def put(name: str, value: Any) -> None:
            object.__setattr__(self, name, value)

        put("steps", check_positive_int("steps", self.steps))
        put("lr", check_finite_number("lr", self.lr, minimum=0.0, strict=True))
        ema = check_finite_number("ema_decay", self.ema_decay, minimum=0.0)
        if not ema < 1.0:
            raise ValueError(f"ema_decay must be a finite number >= 0 and < 1, got {self.ema_decay!r}")
        put("ema_decay", ema)
        if self.grad_clip is not None:
            put("grad_clip", check_finite_number("grad_clip", self.grad_clip, minimum=0.0, strict=True))
        put("warmup_steps", check_positive_int("warmup_steps", self.warmup_steps, minimum=0))
        put("weight_decay", check_finite_number("weight_decay", self.weight_decay, minimum=0.0))
        put("log_every", check_positive_int("log_every", self.log_every))
        for name in ("eval_every", "checkpoint_every"):
            if getattr(self, name) is not None:
                put(name, check_positive_int(name, getattr(self, name)))
        if self.checkpoint_dir is not None:
            if not isinstance(self.checkpoint_dir, (str, os.PathLike)) or str(self.checkpoint_dir) == "":
                raise TypeError(
                    f"checkpoint_dir must be None or a non-empty path, got {self.checkpoint_dir!r}"
                )
            put("checkpoint_dir", str(self.checkpoint_dir))
        if self.checkpoint_every is not None and self.checkpoint_dir is None:
            raise ValueError(
                f"checkpoint_every={self.checkpoint_every} needs checkpoint_dir (where to write), got None"
            )
        # >= 2: a corrupt newest checkpoint must leave a previous good one to fall back to
        put("keep_checkpoints", check_positive_int("keep_checkpoints", self.keep_checkpoints, minimum=2))
        put("seed", check_positive_int("seed", self.seed, minimum=0))
        resolve_device(self.device)
        put("device", str(self.device))
        check_choice("amp", self.amp, AMP_MODES)
        for name in ("ema_warmup", "compile", "progress", "channels_last"):
            check_bool(name, getattr(self, name))


@dataclass(frozen=True)
class TrainResult:
    """``model``: the trained module (unwrapped, on the training device); ``ema_model``: its EMA copy
    (fp32, eval mode); ``history``: log entries ``{step, beta, total, target, pretrained, grad_norm,
    lr}`` (means over the log interval, averaged over ranks) with evaluation results merged in at
    their step, including entries from before a resume; ``resumed_from``: the step of the checkpoint
    resumed from (None for a fresh run); ``last_checkpoint``: path of the newest checkpoint written
    or loaded (None without ``checkpoint_dir``)."""

    model: nn.Module
    ema_model: nn.Module
    history: list[dict[str, Any]] = field(repr=False)
    resumed_from: int | None
    last_checkpoint: str | None = None


class NonFiniteLossError(FloatingPointError):
    """A loss term or the gradient norm became NaN/Inf. ``step``: the 1-based update in which it
    happened; ``terms``: which of "target", "pretrained", "gradient", "total" were non-finite;
    ``last_checkpoint``: the newest (good) checkpoint on disk, or None."""

    def __init__(self, step: int, terms: tuple[str, ...], values: dict[str, float], beta: float,
                 last_checkpoint: str | None) -> None:
        self.step, self.terms, self.values, self.beta = step, terms, values, beta
        self.last_checkpoint = last_checkpoint
        shown = ", ".join(f"{k}={v:g}" for k, v in values.items())
        kept = (f"the last good checkpoint {last_checkpoint} is kept" if last_checkpoint
                else "no checkpoint was written")
        super().__init__(
            f"non-finite {' and '.join(terms)} {'loss term' if terms != ('gradient',) else 'norm'} at step "
            f"{step} (beta={beta:g}; {shown}); training stopped and {kept}"
        )


# ----------------------------------------------------------------------------------------- helpers
def _beta_sequence(schedule: Any, steps: int) -> np.ndarray:
    """beta_k for k = 0 .. steps - 1 as float64, validated (finite, >= 0)."""
    if schedule is None:
        return np.zeros(steps, dtype=np.float64)
    if not callable(schedule):
        raise TypeError(f"schedule must be None or a CoolingSchedule (callable step -> beta), got "
                        f"{type(schedule).__name__}")
    total = getattr(schedule, "total_steps", None)
    if total is not None and int(total) != steps:
        raise ValueError(
            f"schedule.total_steps must equal config.steps (one beta per update), got total_steps={total} "
            f"and steps={steps}"
        )
    values = getattr(schedule, "values", None)
    raw = values() if callable(values) else [schedule(k) for k in range(steps)]
    betas = np.asarray(raw, dtype=np.float64)
    if betas.shape != (steps,):
        raise ValueError(f"schedule must give one beta per step ({steps}), got shape {betas.shape}")
    bad = np.flatnonzero(~np.isfinite(betas) | (betas < 0))
    if bad.size:
        raise ValueError(
            f"schedule must give finite betas >= 0, got beta={betas[bad[0]]!r} at step {bad[0]}"
        )
    return betas


def _fingerprint(config: TrainConfig, world_size: int, betas: np.ndarray,
                 extra: Mapping[str, Any] | None) -> dict[str, Any]:
    fp: dict[str, Any] = {name: getattr(config, name) for name in RESULT_FIELDS}
    fp["world_size"] = world_size
    fp["schedule_sha256"] = hashlib.sha256(np.ascontiguousarray(betas).tobytes()).hexdigest()[:16]
    if extra is not None:
        if not isinstance(extra, Mapping):
            raise TypeError(f"fingerprint must be None or a mapping, got {type(extra).__name__}")
        # JSON round trip: plain values only, and comparable after loading.
        fp["extra"] = json.loads(json.dumps(dict(extra), sort_keys=True, default=str))
    return fp


def _check_fingerprint(saved: Mapping[str, Any], current: Mapping[str, Any], path: Path) -> None:
    keys = sorted(set(saved) | set(current))
    diffs = [f"{k}: checkpoint {saved.get(k)!r} vs now {current.get(k)!r}" for k in keys
             if saved.get(k) != current.get(k)]
    if diffs:
        raise ValueError(
            f"cannot resume from {str(path)!r}: it was written with different result-relevant settings ("
            + "; ".join(diffs) + "). Use another checkpoint_dir, or delete this one to start over."
        )


def _as_scalar(name: str, value: Any, device: torch.device) -> Tensor:
    if isinstance(value, Tensor):
        if value.numel() != 1:
            raise ValueError(f"LossTerms.{name} must be a scalar tensor, got shape {tuple(value.shape)}")
        return value.reshape(())
    if isinstance(value, (int, float)):
        return torch.tensor(float(value), device=device)
    raise TypeError(f"LossTerms.{name} must be a scalar tensor, got {type(value).__name__}")


def _global_rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()  # the current device's
    return state


def _set_global_rng_state(state: Mapping[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def _optimizer_impl(device: torch.device) -> dict[str, bool]:
    return {"fused": True} if device.type == "cuda" else {"foreach": True}


def _match_state_layout(optimizer: torch.optim.Optimizer) -> None:
    """Give loaded optimizer state tensors their parameter's memory layout (a checkpoint written
    with another ``channels_last`` setting), so foreach/fused kernels see matching strides."""
    for param, state in optimizer.state.items():
        for key, value in state.items():
            if (isinstance(value, Tensor) and value.shape == param.shape and value.dim() > 1
                    and value.stride() != param.stride()):
                state[key] = torch.empty_like(param, dtype=value.dtype).copy_(value)


def _grad_norm(params: list[Tensor], clip: float | None) -> Tensor:
    if clip is not None:
        return torch.nn.utils.clip_grad_norm_(params, clip, foreach=True)
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return torch.zeros((), device=params[0].device)
    return torch.nn.utils.get_total_norm(grads, foreach=True)


class _EMA:
    """fp32 copy of the parameters (in ``model``, a deep copy) updated with foreach lerp."""

    def __init__(self, source: nn.Module) -> None:
        self.model = copy.deepcopy(source).float().eval().requires_grad_(False)
        self.src_params = list(source.parameters())
        self.ema_params = list(self.model.parameters())
        self.src_buffers = list(source.buffers())
        self.ema_buffers = list(self.model.buffers())
        self.same_dtype = all(p.dtype == e.dtype for p, e in zip(self.src_params, self.ema_params))

    @torch.no_grad()
    def update(self, decay: float) -> None:
        if self.same_dtype:
            torch._foreach_lerp_(self.ema_params, self.src_params, 1.0 - decay)
        else:
            torch._foreach_mul_(self.ema_params, decay)
            torch._foreach_add_(self.ema_params, [p.float() for p in self.src_params], alpha=1.0 - decay)
        for e, b in zip(self.ema_buffers, self.src_buffers):
            e.copy_(b)


def _plain(value: Any) -> Any:
    if isinstance(value, Tensor) and value.numel() == 1:
        return value.item()
    if isinstance(value, np.generic):
        return value.item()
    return value


# ----------------------------------------------------------------------------------------- the loop
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
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(config, TrainConfig):
        raise TypeError(f"config must be a TrainConfig, got {type(config).__name__}")
    for method in ("loss", "state_dict", "load_state_dict"):
        if not callable(getattr(objective, method, None)):
            raise TypeError(f"objective must implement {method}() (gftlib.gft.objective.Objective protocol); "
                            f"{type(objective).__name__} does not")
    if evaluate is not None and not callable(evaluate):
        raise TypeError(
            f"evaluate must be None or a callable (ema_model, step) -> dict, got {type(evaluate).__name__}"
        )

    rank, world = D.get_rank(), D.get_world_size()
    main = rank == 0
    device = resolve_device(config.device)
    if world > 1 and device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    steps = config.steps
    betas = _beta_sequence(schedule, steps)
    fp = _fingerprint(config, world, betas, fingerprint)
    with _hold_checkpoint_dir(config.checkpoint_dir, device):  # one run per checkpoint_dir
        return _train(model, objective, config, evaluate, betas, fp, device)


@contextlib.contextmanager
def _hold_checkpoint_dir(directory: str | None, device: torch.device) -> Iterator[None]:
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


def _train(model: nn.Module, objective: Any, config: TrainConfig, evaluate: Any, betas: np.ndarray,
           fp: dict[str, Any], device: torch.device) -> TrainResult:
    """The loop of :func:`train`, after validation and with the checkpoint directory held."""
    rank, world = D.get_rank(), D.get_world_size()
    main = rank == 0
    steps = config.steps
    module = model.to(device)
    if config.channels_last:
        to_fast_layout(module)  # before the EMA copy, the optimizer and DDP see the parameters
    module.train()
    params = [p for p in module.parameters() if p.requires_grad]
    if not params:
        raise ValueError("model has no trainable parameters (requires_grad=True)")
    ema = _EMA(module)
    impl = _optimizer_impl(device)
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay, **impl)
    generator = torch.Generator(device=device)
    generator.manual_seed(config.seed)
    seed_global_rngs(config.seed + rank)
    if callable(getattr(objective, "set_rank", None)):
        objective.set_rank(rank, world)

    start, history, resumed_from, last_ckpt = 0, [], None, None
    saved_acc, count = None, 0  # the log interval's running sums (restored on resume)
    ckpt_dir = Path(config.checkpoint_dir) if config.checkpoint_dir is not None else None
    if ckpt_dir is not None:
        if main:
            remove_stale_temporary_files(ckpt_dir)  # left by a run killed mid-write
        found, state, corrupt = latest_good_checkpoint(ckpt_dir, report=main)  # skips corrupt ones
        if found is not None:
            _check_fingerprint(state["fingerprint"], fp, found)
            module.load_state_dict(state["model"])
            ema.model.load_state_dict(state["ema"])
            opt_state = state["optimizer"]
            for group in opt_state["param_groups"]:  # the implementation follows this run's device
                group["fused"], group["foreach"] = impl.get("fused", False), impl.get("foreach", False)
            optimizer.load_state_dict(opt_state)
            _match_state_layout(optimizer)
            generator.set_state(state["generator"])
            _set_global_rng_state(state["rng"][rank])
            objective.load_state_dict(state["objective"][rank])
            start, history = int(state["step"]), list(state["history"])
            saved_acc, count = state["log_acc"][rank]
            resumed_from, last_ckpt = start, str(found)
        D.barrier()  # nobody prunes the file before every rank has read it
        if main:
            for bad in corrupt:
                quarantine(bad)  # <name>.corrupt: kept for inspection, out of the rotation

    net: nn.Module = D.wrap_model(module, device)
    if config.channels_last:
        net = ChannelsLastInput(net)
    if config.compile:
        net = torch.compile(net)
    amp = (torch.autocast(device_type=device.type, dtype=torch.bfloat16) if config.amp == "bf16"
           else contextlib.nullcontext())

    per_step_check = device.type == "cpu" and _CPU_PER_STEP_CHECK
    acc = torch.zeros(4, device=device)           # sums of total, target, pretrained, grad norm
    if saved_acc is not None:
        acc.copy_(torch.tensor(saved_acc, dtype=acc.dtype))
    bad_step = torch.zeros((), dtype=torch.long, device=device)   # first bad step (0: none)
    bad_flags = torch.zeros(4, dtype=torch.bool, device=device)   # which of _TERMS at that step
    bad_vals = torch.zeros(4, device=device)

    def raise_if_bad() -> None:
        info = torch.cat([bad_step.reshape(1).float(), bad_flags.float(), bad_vals])
        if world > 1:
            first = info[:1].clone()
            first[first == 0] = float("inf")
            D.all_reduce_(first, "min")
            mine = info[0] == first[0]
            flags = torch.where(mine, info[1:5], torch.zeros_like(info[1:5]))
            D.all_reduce_(flags, "max")
            info = torch.cat([torch.where(torch.isinf(first), torch.zeros_like(first), first), flags,
                              info[5:]])
        values = info.tolist()
        step = int(values[0])
        if step == 0:
            return
        flags = [v > 0 for v in values[1:5]]
        names = tuple(n for n, f in zip(_TERMS[1:3], flags[1:3]) if f)
        if not names:
            names = ("gradient",) if flags[3] else ("total",)
        shown = dict(zip(_TERMS, values[5:9]))
        if pbar is not None:
            pbar.close()
        raise NonFiniteLossError(step, names, shown, float(betas[step - 1]), last_ckpt)

    pbar = None
    if config.progress and main:
        from tqdm.auto import tqdm

        pbar = tqdm(total=steps, initial=start, desc="train", dynamic_ncols=True, leave=False)

    with PreemptionWatch() as watch:  # SIGTERM/SIGUSR1: checkpoint at the next boundary, stop
        for k in range(start + 1, steps + 1):
            beta = float(betas[k - 1])
            lr_k = config.lr * min(1.0, k / config.warmup_steps) if config.warmup_steps else config.lr
            for group in optimizer.param_groups:
                group["lr"] = lr_k
            optimizer.zero_grad(set_to_none=True)
            with amp:
                terms = objective.loss(net, beta, generator)
            total = _as_scalar("total", terms.total, device).float()
            if k == start + 1 and not total.requires_grad:
                raise ValueError(
                    "LossTerms.total does not require grad: the objective must compute it from the model"
                )
            target = _as_scalar("target", getattr(terms, "target", total), device).detach().float()
            pre = _as_scalar("pretrained", getattr(terms, "pretrained", 0.0), device).detach().float()
            total.backward()
            gnorm = _grad_norm(params, config.grad_clip).detach().float()
            vals = torch.stack([total.detach(), target, pre, gnorm])
            nonfinite = ~torch.isfinite(vals)
            if per_step_check:
                any_bad = nonfinite.any().float()
                if world > 1:  # every rank must take the same branch (collectives follow)
                    D.all_reduce_(any_bad, "max")
                if bool(any_bad):
                    bad_step.fill_(k)
                    bad_flags.copy_(nonfinite)
                    bad_vals.copy_(vals)
                    raise_if_bad()
            else:
                new = nonfinite.any() & (bad_step == 0)
                bad_step = torch.where(new, torch.full_like(bad_step, k), bad_step)
                bad_flags = torch.where(new, nonfinite, bad_flags)
                bad_vals = torch.where(new, vals, bad_vals)
            optimizer.step()
            decay = min(config.ema_decay, (1 + k) / (10 + k)) if config.ema_warmup else config.ema_decay
            ema.update(decay)
            acc += vals
            count += 1
            if pbar is not None:
                pbar.update(1)

            is_log = k % config.log_every == 0 or k == steps
            is_eval = evaluate is not None and (k == steps or (config.eval_every is not None
                                                                and k % config.eval_every == 0))
            is_ckpt = ckpt_dir is not None and (k == steps or (config.checkpoint_every is not None
                                                                and k % config.checkpoint_every == 0))
            stop, signal_name = False, ""
            if k < steps and (world == 1 or device.type == "cpu" or k % ACCELERATOR_CHECK_EVERY == 0
                              or is_log or is_eval or is_ckpt):  # the same k on every rank
                stop, signal_name = agree(watch, device)
                is_ckpt = is_ckpt or (stop and ckpt_dir is not None)
            if not (is_log or is_eval or is_ckpt or stop):
                continue
            if not per_step_check:
                raise_if_bad()
            if is_log:
                D.all_reduce_(acc, "sum")
                means = (acc / (count * world)).tolist()
                entry = {"step": k, "beta": beta,
                         **dict(zip(("total", "target", "pretrained", "grad_norm"), means)), "lr": lr_k}
                history.append(entry)
                acc.zero_()
                count = 0
                if pbar is not None:
                    pbar.set_postfix(loss=f"{entry['total']:.4g}", beta=f"{beta:.3g}", refresh=False)
            if is_eval and main:
                metrics = evaluate(ema.model, k)
                if not isinstance(metrics, Mapping):
                    raise TypeError(f"evaluate must return a dict of metrics, got {type(metrics).__name__}")
                metrics = {str(key): _plain(v) for key, v in metrics.items()}
                if history and history[-1]["step"] == k:
                    history[-1].update(metrics)
                else:
                    history.append({"step": k, "beta": beta, **metrics})
            if is_ckpt:
                ranks = D.all_gather_objects({"rng": _global_rng_state(), "objective": objective.state_dict(),
                                              "log_acc": acc.tolist(), "log_count": count})
                if main:
                    state = {
                        "beta": beta,
                        "model": module.state_dict(),
                        "ema": ema.model.state_dict(),
                        "optimizer": optimizer.state_dict(),
                        "generator": generator.get_state(),
                        "rng": [r["rng"] for r in ranks],
                        "objective": [r["objective"] for r in ranks],
                        "log_acc": [(r["log_acc"], r["log_count"]) for r in ranks],  # open log interval
                        "history": history,
                        "config": asdict(config),
                        "fingerprint": fp,
                        "world_size": world,
                    }
                    last_ckpt = str(save_checkpoint(state, ckpt_dir, k, keep=config.keep_checkpoints))
                else:
                    last_ckpt = str(ckpt_dir / f"ckpt_{k:08d}.pt")
            if stop:
                D.barrier()  # rank 0 has written the checkpoint before any rank exits
                if pbar is not None:
                    pbar.close()
                raise TrainingPreempted(k, signal_name, last_ckpt if ckpt_dir is not None else None)
    if pbar is not None:
        pbar.close()
    if not per_step_check:
        raise_if_bad()
    return TrainResult(model=module, ema_model=ema.model, history=history, resumed_from=resumed_from,
                       last_checkpoint=last_ckpt)
