"""What one training run is asked to do: :class:`TrainConfig` (validated settings), :class:`TrainResult`
(what :func:`gftlib.training.loop.train` returns), the per-step schedules read from them (beta_k of
the cooling schedule, the warmed-up learning rate) and the checks of ``train``'s arguments.

Step convention: update k = 1 .. steps uses ``beta_k = schedule(k - 1)`` and the learning rate
:func:`learning_rate` ``(config, k)``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from torch import nn

from gftlib.validation import (
    check_bool,
    check_choice,
    check_finite_number,
    check_positive_int,
    resolve_device,
)

__all__ = ["TrainConfig", "TrainResult", "AMP_MODES", "RESULT_FIELDS"]

AMP_MODES: tuple[str, ...] = ("none", "bf16")

#: TrainConfig fields that change the trained weights; a checkpoint written with other values of
#: these is refused on resume. (log_every, eval_every, checkpoint_*, device and progress are free.)
RESULT_FIELDS: tuple[str, ...] = ("steps", "lr", "ema_decay", "ema_warmup", "grad_clip", "warmup_steps",
                                  "weight_decay", "seed", "amp", "compile")


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


def beta_sequence(schedule: Any, steps: int) -> np.ndarray:
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


def learning_rate(config: TrainConfig, k: int) -> float:
    """The learning rate of update k (1-based): linear warm-up over ``config.warmup_steps``."""
    return config.lr * min(1.0, k / config.warmup_steps) if config.warmup_steps else config.lr


def check_train_arguments(model: Any, objective: Any, config: Any, evaluate: Any) -> None:
    """Type checks of :func:`gftlib.training.loop.train`'s arguments (each error names the argument)."""
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
