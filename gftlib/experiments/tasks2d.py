"""The 2-D domain-shift task shared by E1 (domain shift), E3 (few-step inference) and E4 (ablations).

A :class:`Task2D` fixes the data: a *source* distribution the model is pretrained on, a *target*
distribution it is fine-tuned to (a pool of ``n_target_pool`` target samples whose first
``n_target`` are the training set, so smaller sets are nested in larger ones), a held-out target
set that only the evaluation sees, and a fixed batch of evaluation noise. Conventions: t = 0 noise
(x0 ~ N(0, I)), t = 1 data; points are ``(n, 2)`` float32; every 2-D distribution of
:mod:`gftlib.data.datasets` is standardised (mean 0, variance 1 per coordinate).

:func:`pretrain` trains the MLP velocity field on the source (plain CFM, independent coupling) and
:func:`finetune` runs one method of :mod:`gftlib.experiments.methods` with :func:`gftlib.training.loop.train`
and an evaluation callback that records, on the EMA model, over training:

- ``w2``: exact W2 (:func:`gftlib.eval.metrics.wasserstein2`) between ``n_eval`` samples of the model (the
  fixed evaluation noise pushed through the fixed solver ``eval_method``/``eval_steps``) and the
  held-out target set;
- ``path_length`` and ``straightness`` of those paths (:mod:`gftlib.solvers.ode`);
- ``dopri_nfe`` (and ``dopri_w2``): evaluations used by dopri5 at a few checkpoints only.

Both are cached with :func:`gftlib.experiments.cache.cached_torch` (key: every parameter that can
change the result, plus the source of the modules involved), so E1, E3 and E4 share the runs.
Every method gets the same optimizer, steps, batch size and evaluation budget.

Evaluation helpers shared by the notebooks: :func:`stability` (across-seed spread of the W2 curve,
largest upward jump, early degradation), :func:`quality_vs_nfe` (Euler 1..64 steps and dopri5),
:func:`nfe_to_reach`, :func:`reference_distances` (W2 noise floor and source/target/pretrained
distances), :func:`coverage` (diversity) and :func:`plot_mean_band`.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from gftlib.data.datasets import DISTRIBUTIONS_2D, make_2d
from gftlib.experiments.cache import cached_torch
from gftlib.experiments.methods import METHODS, check_methods, check_schedule_options, run_method
from gftlib.experiments.profiles import PROFILES
from gftlib.eval.diversity import prdc
from gftlib.eval.metrics import mean_path_length, mean_straightness, wasserstein2
from gftlib.models import build_model
from gftlib.gft.objective import FlowMatchingObjective
from gftlib.solvers.ode import FIXED_STEP_METHODS, sample_ode
from gftlib.eval.stability import early_degradation, max_upward_jump
from gftlib.schedules import SCHEDULES, CoolingSchedule, default_schedule_options, make_schedule
from gftlib.rng import seeded_generator, stream_seed
from gftlib.training.config import TrainConfig
from gftlib.training.loop import train
from gftlib.validation import check_choice, check_finite_number, check_positive_int, resolve_device

__all__ = [
    "PROFILE_TABLE",
    "PROFILE_SETTINGS",
    "E1_PAIRS",
    "EULER_STEPS",
    "SCHEDULED_METHODS",
    "Task2D",
    "FinetuneConfig",
    "TaskSetup",
    "FinetuneRun",
    "Reference",
    "Stability",
    "QualityCurve",
    "resolve_setup",
    "default_schedule_options",
    "pretrain",
    "finetune",
    "run_methods",
    "load_model",
    "sample_model",
    "independent_noise",
    "reference_distances",
    "max_upward_jump",
    "early_degradation",
    "stability",
    "quality_vs_nfe",
    "nfe_to_reach",
    "coverage",
    "plot_mean_band",
    "Z_999",
    "closer_margin",
    "shift_is_resolvable",
    "independent_coupling_distance",
    "ends_at_zero",
    "record_claims",
]

#: Methods whose objective has a cooling schedule on beta (the others train at beta = 0).
SCHEDULED_METHODS: tuple[str, ...] = ("l2-reg", "gft-drift", "gft-coupling")

#: Euler step counts of the quality-vs-NFE curve (E3).
EULER_STEPS: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64)

#: The notebooks' user-facing knobs per profile (E1, E3 and E4 share it, so the same profile and
#: seed give the same cached runs). ``methods`` is a list of names from METHODS.
PROFILE_TABLE: dict[str, dict[str, Any]] = {
    "smoke": {"n_seeds": 2, "source": "checkerboard", "target": "moons", "n_target": 512, "steps": 100,
              "batch_size": 128, "beta0": 2.0, "schedule_kind": "cosine",
              "methods": ["ft", "ft-ot", "gft-coupling"]},
    "quick": {"n_seeds": 5, "source": "checkerboard", "target": "moons", "n_target": 512, "steps": 200,
              "batch_size": 128, "beta0": 2.0, "schedule_kind": "cosine",
              "methods": ["ft", "ft-ot", "l2-reg", "gft-drift", "gft-coupling"]},
    "paper": {"n_seeds": 5, "source": "checkerboard", "target": "moons", "n_target": 512, "steps": 4000,
              "batch_size": 256, "beta0": 2.0, "schedule_kind": "cosine", "methods": list(METHODS)},
}

#: E1's source/target pairs per profile (each pair reported and pooled; E3 uses the first).
E1_PAIRS: dict[str, list[list[str]]] = {
    "smoke": [["checkerboard", "moons"], ["checkerboard", "rings"]],
    "quick": [["checkerboard", "moons"], ["checkerboard", "rings"], ["gaussians8", "spiral"]],
    "paper": [["checkerboard", "moons"], ["checkerboard", "rings"], ["gaussians8", "spiral"],
              ["rings", "gaussians4"]],
}

#: Internal per-profile settings (model size, pretraining, evaluation budget, learning rate).
PROFILE_SETTINGS: dict[str, dict[str, Any]] = {
    "smoke": {"hidden": 48, "depth": 3, "time_features": 16, "n_source": 2048, "pretrain_steps": 300,
              "pretrain_batch": 256, "n_target_pool": 2048, "n_heldout": 256, "n_eval": 256,
              "eval_method": "rk4", "eval_steps": 8, "lr": 5e-3, "n_evals": 1, "cache_size": 256,
              "n_trajectories": 128, "dopri_fractions": (1.0,), "n_repeats": 6},
    "quick": {"hidden": 64, "depth": 3, "time_features": 16, "n_source": 4096, "pretrain_steps": 600,
              "pretrain_batch": 256, "n_target_pool": 4096, "n_heldout": 512, "n_eval": 512,
              "eval_method": "rk4", "eval_steps": 8, "lr": 2e-3, "n_evals": 8, "cache_size": 1024,
              "n_trajectories": 512, "dopri_fractions": (1.0,), "n_repeats": 8},
    "paper": {"hidden": 256, "depth": 3, "time_features": 32, "n_source": 16384, "pretrain_steps": 20000,
              "pretrain_batch": 512, "n_target_pool": 8192, "n_heldout": 1024, "n_eval": 1024,
              "eval_method": "rk4", "eval_steps": 16, "lr": 1e-3, "n_evals": 20, "cache_size": 4096,
              "n_trajectories": 1024, "dopri_fractions": (0.0, 0.25, 0.5, 0.75, 1.0), "n_repeats": 30},
}

# Cache keys (gftlib.experiments.cache.cached_torch) cover the source of the whole package by default:
# the runs pass through models, objectives, samplers, metrics and features.

# Independent random streams of a task (one generator per role, seeded from (seed, role)).
_ROLES = {"source": 0, "target_pool": 1, "heldout": 2, "eval_noise": 3, "floor": 4, "source_heldout": 5,
          "source_eval": 6, "extra_noise": 7}


def _generator(seed: int, role: str) -> torch.Generator:
    """The task's stream for ``role``: seeded with :func:`gftlib.rng.stream_seed` (63 bits)."""
    return seeded_generator(stream_seed(int(seed), _ROLES[role], bits=63))


@contextlib.contextmanager
def _single_thread() -> Iterator[None]:
    """Run with one intra-op CPU thread (tiny 2-D MLPs gain nothing from more, and oversubscribed
    shared CPUs lose a lot); the previous setting is restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


# --------------------------------------------------------------------------------------------- configs
@dataclass(frozen=True)
class Task2D:
    """Data, model and pretraining of the 2-D domain-shift task (validated on construction).

    ``source``/``target``: names in :data:`gftlib.data.datasets.DISTRIBUTIONS_2D`. ``n_target`` training
    samples are the first of a pool of ``n_target_pool`` target samples; ``n_heldout`` held-out target
    samples and ``n_eval`` evaluation noise points are drawn independently; ``seed`` seeds all of them
    (each role its own generator) and the pretraining. The velocity field is an MLP (``hidden``,
    ``depth``, ``time_features``; sinusoidal time features of ``time_scale * t``), pretrained for
    ``pretrain_steps`` on ``n_source`` source samples. Evaluation: ``eval_method``/``eval_steps`` (a
    fixed solver) for W2 and path length; dopri5 with ``dopri_tol`` (atol = rtol) for its NFE.
    """

    source: str = "checkerboard"
    target: str = "moons"
    n_target: int = 512
    n_target_pool: int = 4096
    n_heldout: int = 512
    n_eval: int = 512
    n_source: int = 4096
    seed: int = 0
    hidden: int = 64
    depth: int = 3
    time_features: int = 16
    time_scale: float = 1.0
    pretrain_steps: int = 2000
    pretrain_batch: int = 256
    pretrain_lr: float = 2e-3
    eval_method: str = "rk4"
    eval_steps: int = 8
    dopri_tol: float = 1e-5

    def __post_init__(self) -> None:
        put = lambda name, value: object.__setattr__(self, name, value)  # noqa: E731
        put("source", check_choice("source", self.source, DISTRIBUTIONS_2D))
        put("target", check_choice("target", self.target, DISTRIBUTIONS_2D))
        for name, minimum in (("n_target_pool", 2), ("n_heldout", 2), ("n_eval", 2), ("n_source", 2),
                              ("hidden", 1), ("depth", 1), ("time_features", 1), ("pretrain_steps", 1),
                              ("pretrain_batch", 1), ("eval_steps", 1)):
            put(name, check_positive_int(name, getattr(self, name), minimum=minimum))
        put("n_target", check_positive_int("n_target", self.n_target, minimum=2))
        if self.n_target > self.n_target_pool:
            raise ValueError(f"n_target must be an integer in [2, n_target_pool={self.n_target_pool}] "
                             f"(the available target samples), got {self.n_target}")
        put("seed", check_positive_int("seed", self.seed, minimum=0))
        put("pretrain_lr", check_finite_number("pretrain_lr", self.pretrain_lr, minimum=0.0, strict=True))
        put("time_scale", check_finite_number("time_scale", self.time_scale, minimum=0.0, strict=True))
        put("eval_method", check_choice("eval_method", self.eval_method, FIXED_STEP_METHODS))
        put("dopri_tol", check_finite_number("dopri_tol", self.dopri_tol, minimum=0.0, strict=True))

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def pretrain_key(self) -> dict[str, Any]:
        """The fields that determine the pretrained model (target-side fields excluded)."""
        keys = ("source", "n_source", "seed", "hidden", "depth", "time_features", "time_scale",
                "pretrain_steps", "pretrain_batch", "pretrain_lr")
        return {k: getattr(self, k) for k in keys}

    # -- data (CPU float32; each call regenerates the same points)
    def source_train(self) -> Tensor:
        """(n_source, 2) pretraining samples of the source."""
        return make_2d(self.source, self.n_source, generator=_generator(self.seed, "source"))

    def target_pool(self) -> Tensor:
        """(n_target_pool, 2): every available target training sample."""
        return make_2d(self.target, self.n_target_pool, generator=_generator(self.seed, "target_pool"))

    def target_train(self) -> Tensor:
        """(n_target, 2): the first n_target samples of the pool (nested across n_target)."""
        return self.target_pool()[: self.n_target].clone()

    def target_heldout(self) -> Tensor:
        """(n_heldout, 2) held-out target samples (never trained on)."""
        return make_2d(self.target, self.n_heldout, generator=_generator(self.seed, "heldout"))

    def source_heldout(self) -> Tensor:
        """(n_heldout, 2) held-out source samples."""
        return make_2d(self.source, self.n_heldout, generator=_generator(self.seed, "source_heldout"))

    def eval_noise(self) -> Tensor:
        """(n_eval, 2) fixed evaluation noise x0 ~ N(0, I) (the same for every model and step)."""
        return torch.randn(self.n_eval, 2, generator=_generator(self.seed, "eval_noise"))

    def build_model(self, *, seed: int | None = None) -> nn.Module:
        """The task's MLP velocity field (weights from ``seed``; None: the global RNG)."""
        # The library's default time scale (1000, DDPM-style) makes a 2-D field oscillate in t, which
        # inflates the step count of adaptive solvers (dopri5 NFE ~4x at tol 1e-5) without improving W2.
        return build_model("mlp", dim=2, hidden=self.hidden, depth=self.depth,
                           time_features=self.time_features, time_scale=self.time_scale, seed=seed)


@dataclass(frozen=True)
class FinetuneConfig:
    """One fine-tuning budget, identical for every method (validated on construction).

    ``steps`` AdamW updates of ``batch_size`` at learning rate ``lr`` (EMA ``ema_decay`` with the
    trainer's EMA warm-up). Cooling schedule of the scheduled methods: ``schedule_kind`` from
    ``beta0`` to 0 with ``schedule_options`` (``rate`` for exponential, ``n_stages`` for step; see
    :func:`default_schedule_options`). ``target_coupling``: coupling of the target term of
    l2-reg / gft-*. ``cache_size``/``n_trajectories``: pretrained coupling / drift caches (fixed,
    independent of ``n_target``). ``n_evals`` evaluations evenly spaced over training (plus step 0);
    dopri5 at the evaluations closest to ``dopri_fractions`` of training.
    """

    steps: int = 400
    batch_size: int = 128
    lr: float = 2e-3
    ema_decay: float = 0.999
    beta0: float = 2.0
    schedule_kind: str = "cosine"
    schedule_options: tuple[tuple[str, float], ...] = ()
    target_coupling: str = "ot"
    cache_size: int = 1024
    n_trajectories: int = 512
    n_evals: int = 10
    dopri_fractions: tuple[float, ...] = (0.0, 0.5, 1.0)

    def __post_init__(self) -> None:
        put = lambda name, value: object.__setattr__(self, name, value)  # noqa: E731
        for name in ("steps", "batch_size", "cache_size", "n_trajectories", "n_evals"):
            put(name, check_positive_int(name, getattr(self, name)))
        put("batch_size", check_positive_int("batch_size", self.batch_size, minimum=2))
        put("lr", check_finite_number("lr", self.lr, minimum=0.0, strict=True))
        put("beta0", check_finite_number("beta0", self.beta0, minimum=0.0))
        kind = check_choice("schedule_kind", self.schedule_kind, tuple(k for k in SCHEDULES if k != "custom"))
        put("schedule_kind", kind)
        if self.schedule_options:
            try:
                opts = dict(self.schedule_options)
            except (TypeError, ValueError) as err:
                raise TypeError("schedule_options must be (name, value) pairs or a dict, got "
                                f"{self.schedule_options!r}") from err
        else:
            opts = default_schedule_options(kind)
        check_schedule_options(opts)
        put("schedule_options", tuple(sorted(opts.items())))
        self.schedule()  # validates beta0, kind and options with the library's messages
        fr = tuple(check_finite_number("dopri_fractions[]", f, minimum=0.0, maximum=1.0)
                   for f in self.dopri_fractions)
        put("dopri_fractions", fr)
        TrainConfig(steps=self.steps, lr=self.lr, ema_decay=self.ema_decay)  # validates ema_decay

    def schedule(self) -> CoolingSchedule:
        """The cooling schedule the scheduled methods use (``steps`` values, last one 0)."""
        return make_schedule(self.schedule_kind, self.beta0, self.steps, **dict(self.schedule_options))

    @property
    def eval_every(self) -> int:
        return max(1, self.steps // self.n_evals)

    def eval_steps(self) -> np.ndarray:
        """Steps at which the callback runs (0 is evaluated before training)."""
        grid = list(range(self.eval_every, self.steps + 1, self.eval_every))
        if grid[-1] != self.steps:
            grid.append(self.steps)
        return np.asarray([0, *grid], dtype=np.int64)

    def dopri_steps(self) -> tuple[int, ...]:
        ev = self.eval_steps()
        return tuple(sorted({int(ev[np.argmin(np.abs(ev - f * self.steps))]) for f in self.dopri_fractions}))

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["schedule_options"] = dict(self.schedule_options)
        return d

    def method_options(self, seed: int) -> dict[str, Any]:
        """Keyword arguments of :func:`gftlib.experiments.methods.build_method` for this budget (the
        drift cache draws stratified jittered times, ``time_jitter=True``: a fixed time grid lets a
        network with time features fit the pretrained term at the grid times only, T2 notebook)."""
        return dict(batch_size=self.batch_size, steps=self.steps, beta0=self.beta0,
                    schedule_kind=self.schedule_kind, schedule_options=dict(self.schedule_options),
                    target_coupling=self.target_coupling, cache_size=self.cache_size,
                    n_trajectories=self.n_trajectories, time_jitter=True, seed=seed)

    def key_for(self, method: str) -> dict[str, Any]:
        """The fields that can change ``method``'s run (schedule/caches dropped where unused)."""
        d = self.as_dict()
        if method not in SCHEDULED_METHODS:
            for k in ("beta0", "schedule_kind", "schedule_options", "target_coupling"):
                d.pop(k)
        if method not in ("gft-coupling", "reflow"):
            d.pop("cache_size")
        if method != "gft-drift":
            d.pop("n_trajectories")
        return d


@dataclass(frozen=True)
class TaskSetup:
    """What a notebook needs after its parameters cell: the task, the budget, methods, seeds, device,
    and ``n_repeats``, the number of independent samples behind the W2 standard error."""

    task: Task2D
    config: FinetuneConfig
    methods: tuple[str, ...]
    seeds: tuple[int, ...]
    device: torch.device
    n_repeats: int = 20


def resolve_setup(params: Mapping[str, Any]) -> TaskSetup:
    """Build (and so validate) the task and budget from a notebook's resolved parameters.

    ``params``: the dict of :func:`gftlib.experiments.profiles.resolve_parameters` with ``seed``,
    ``profile``, ``device``, ``n_seeds``, ``source``, ``target``, ``n_target``, ``steps``,
    ``batch_size``, ``beta0``, ``schedule_kind`` and ``methods``. Internal sizes come from
    :data:`PROFILE_SETTINGS`. Invalid values raise with the library's message.
    """
    profile = check_choice("profile", params["profile"], PROFILES)
    s = PROFILE_SETTINGS[profile]
    n_seeds = check_positive_int("n_seeds", params["n_seeds"])
    methods = check_methods(params["methods"])
    task = Task2D(source=params["source"], target=params["target"], n_target=params["n_target"],
                  n_target_pool=s["n_target_pool"],
                  n_heldout=s["n_heldout"], n_eval=s["n_eval"], n_source=s["n_source"], seed=params["seed"],
                  hidden=s["hidden"], depth=s["depth"], time_features=s["time_features"],
                  pretrain_steps=s["pretrain_steps"], pretrain_batch=s["pretrain_batch"],
                  pretrain_lr=s["lr"], eval_method=s["eval_method"], eval_steps=s["eval_steps"])
    config = FinetuneConfig(steps=params["steps"], batch_size=params["batch_size"], lr=s["lr"],
                            beta0=params["beta0"], schedule_kind=params["schedule_kind"],
                            cache_size=s["cache_size"], n_trajectories=s["n_trajectories"],
                            n_evals=min(s["n_evals"], check_positive_int("steps", params["steps"])),
                            dopri_fractions=s["dopri_fractions"])
    device = resolve_device(params["device"])
    seeds = tuple(task.seed + i for i in range(n_seeds))
    return TaskSetup(task=task, config=config, methods=methods, seeds=seeds, device=device,
                     n_repeats=s["n_repeats"])


# --------------------------------------------------------------------------------------------- training
def pretrain(task: Task2D, *, device: str | torch.device = "cpu") -> nn.Module:
    """The source model: CFM (independent coupling) on ``task.source_train()`` from a random init
    seeded with ``task.seed``; returns the EMA network (eval mode, on the CPU). Cached."""
    dev = resolve_device(device)

    def build() -> dict[str, Any]:
        model = task.build_model(seed=task.seed)
        objective = FlowMatchingObjective(task.source_train(), batch_size=task.pretrain_batch,
                                          coupling="independent", seed=task.seed)
        cfg = TrainConfig(steps=task.pretrain_steps, lr=task.pretrain_lr, seed=task.seed, device=str(dev),
                          progress=False, log_every=max(1, task.pretrain_steps // 50))
        res = train(model, objective, cfg)
        return {"ema": {k: v.detach().cpu().clone() for k, v in res.ema_model.state_dict().items()},
                "history": res.history}

    key = {"kind": "tasks2d-pretrain", "task": task.pretrain_key(), "device": dev.type}
    with _single_thread():
        state = cached_torch("tasks2d-pretrain", key, build)
    return load_model(task, state["ema"])


def load_model(task: Task2D, state: Mapping[str, Tensor], *, device: str | torch.device = "cpu") -> nn.Module:
    """An MLP of the task's architecture with weights ``state`` (eval mode, no gradients)."""
    model = task.build_model()
    model.load_state_dict(dict(state))
    return model.to(resolve_device(device)).eval().requires_grad_(False)


@dataclass(frozen=True)
class FinetuneRun:
    """One fine-tuning run. Evaluation arrays share ``eval_steps`` (E,) with step 0 = the initial
    model; dopri arrays share ``dopri_steps``; loss arrays share ``log_steps`` (means over each log
    interval; ``beta`` is the temperature at the logged step). ``schedule_final_beta``: beta at the
    last update (None without a schedule). ``ema_state``: the final EMA weights (CPU)."""

    method: str
    seed: int
    eval_steps: np.ndarray
    w2: np.ndarray
    path_length: np.ndarray
    straightness: np.ndarray
    dopri_steps: np.ndarray
    dopri_nfe: np.ndarray
    dopri_w2: np.ndarray
    log_steps: np.ndarray
    beta: np.ndarray
    loss_total: np.ndarray
    loss_target: np.ndarray
    loss_pretrained: np.ndarray
    schedule_final_beta: float | None
    ema_state: dict[str, Tensor] = field(repr=False)

    @property
    def final_w2(self) -> float:
        return float(self.w2[-1])

    @property
    def final_path_length(self) -> float:
        return float(self.path_length[-1])

    @property
    def final_straightness(self) -> float:
        return float(self.straightness[-1])

    @property
    def final_dopri_nfe(self) -> float:
        return float(self.dopri_nfe[-1])


def _evaluator(task: Task2D, config: FinetuneConfig,
               device: torch.device) -> Callable[[nn.Module, int], dict]:
    heldout = task.target_heldout()
    x0 = task.eval_noise().to(device)
    dopri = set(config.dopri_steps())

    def evaluate(model: nn.Module, step: int) -> dict[str, float]:
        res = sample_ode(model, x0, method=task.eval_method, steps=task.eval_steps)
        out = {"w2": wasserstein2(res.x, heldout), "path_length": mean_path_length(res),
               "straightness": mean_straightness(res)}
        if int(step) in dopri:
            d = sample_ode(model, x0, method="dopri5", atol=task.dopri_tol, rtol=task.dopri_tol)
            out["dopri_nfe"] = float(d.nfe)
            out["dopri_w2"] = wasserstein2(d.x, heldout)
        return out

    return evaluate


def _finetune_uncached(task: Task2D, method: str, seed: int, config: FinetuneConfig,
                       device: torch.device) -> FinetuneRun:
    pretrained = None if method == "scratch" else pretrain(task, device=device)
    cfg = TrainConfig(steps=config.steps, lr=config.lr, ema_decay=config.ema_decay, seed=seed,
                      device=str(device),
                      eval_every=config.eval_every, log_every=max(1, config.steps // 60), progress=False)
    run = run_method(method, target_data=task.target_train(), pretrained_model=pretrained,
                     new_model=lambda: task.build_model(seed=seed), evaluate=_evaluator(task, config, device),
                     eval_key="w2", train_config=cfg, device=device, **config.method_options(seed))
    evals, logs, col = run.evals, run.logs, run.column
    dop = [h for h in evals if "dopri_nfe" in h]
    return FinetuneRun(
        method=method, seed=seed,
        eval_steps=col(evals, "step", np.int64), w2=col(evals, "w2"), path_length=col(evals, "path_length"),
        straightness=col(evals, "straightness"),
        dopri_steps=col(dop, "step", np.int64), dopri_nfe=col(dop, "dopri_nfe"),
        dopri_w2=col(dop, "dopri_w2"),
        log_steps=col(logs, "step", np.int64), beta=col(logs, "beta"), loss_total=col(logs, "total"),
        loss_target=col(logs, "target"), loss_pretrained=col(logs, "pretrained"),
        schedule_final_beta=run.final_beta(config.steps),
        ema_state={k: v.detach().cpu().clone() for k, v in run.result.ema_model.state_dict().items()},
    )


def finetune(task: Task2D, method: str, seed: int, config: FinetuneConfig, *,
             device: str | torch.device = "cpu") -> FinetuneRun:
    """Fine-tune (or, for "scratch", train) on ``task.target_train()`` with ``method`` and ``seed``
    (model init for scratch, data order, noise, caches). Cached on every parameter that matters."""
    method = check_choice("method", method, METHODS)
    seed = check_positive_int("seed", seed, minimum=0)
    if not isinstance(task, Task2D):
        raise TypeError(f"task must be a Task2D, got {type(task).__name__}")
    if not isinstance(config, FinetuneConfig):
        raise TypeError(f"config must be a FinetuneConfig, got {type(config).__name__}")
    dev = resolve_device(device)
    task_key = task.as_dict()
    if method == "scratch":  # the pretrained model plays no part
        for k in ("source", "n_source", "pretrain_steps", "pretrain_batch", "pretrain_lr"):
            task_key.pop(k)
    key = {"kind": "tasks2d-finetune", "task": task_key, "method": method, "seed": seed,
           "config": config.key_for(method), "device": dev.type}
    with _single_thread():
        return cached_torch(f"tasks2d-{method}", key,
                            lambda: _finetune_uncached(task, method, seed, config, dev))


def run_methods(task: Task2D, methods: Sequence[str], seeds: Sequence[int], config: FinetuneConfig, *,
                device: str | torch.device = "cpu") -> dict[str, list[FinetuneRun]]:
    """``{method: [run for each seed]}`` (each run cached)."""
    return {m: [finetune(task, m, s, config, device=device) for s in seeds] for m in methods}


@torch.no_grad()
def sample_model(task: Task2D, model: nn.Module, *, n: int | None = None, x0: Tensor | None = None,
                 device: str | torch.device = "cpu") -> Tensor:
    """(n, 2) samples of ``model`` with the evaluation solver (CPU tensor), from ``x0`` (n, 2) or, by
    default, from the first ``n`` (all) points of the fixed evaluation noise."""
    dev = resolve_device(device)
    if x0 is None:
        x0 = task.eval_noise()
        if n is not None:
            x0 = x0[: check_positive_int("n", n)]
    elif not isinstance(x0, Tensor) or x0.ndim != 2 or x0.shape[1] != 2:
        shape = getattr(x0, "shape", type(x0).__name__)
        raise ValueError(f"x0 must be a tensor of shape (n, 2), got {shape}")
    with _single_thread():
        return sample_ode(model.to(dev), x0.to(dev), method=task.eval_method, steps=task.eval_steps).x.cpu()


def independent_noise(task: Task2D, n: int) -> Tensor:
    """(n, 2) standard normal noise independent of the evaluation noise (its own stream)."""
    return torch.randn(check_positive_int("n", n), 2, generator=_generator(task.seed, "extra_noise"))


# --------------------------------------------------------------------------------------------- evaluation
@dataclass(frozen=True)
class Reference:
    """Reference W2 distances of a task, each between ``n_eval`` points and a held-out set of
    ``n_heldout`` points (the sizes every evaluation uses).

    ``floor`` / ``floor_se``: mean and standard deviation over ``n_repeats`` independent target
    samples of W2(target sample, target held-out): the sampling noise floor a perfect model would
    reach, and the standard error of one W2 evaluation at these sizes (the held-out set is the same
    in every comparison, so only the sample side varies). ``source_floor``/``source_floor_se``: the
    same for the source. ``source_target``: W2(source sample, target held-out).
    ``pretrained_target`` / ``pretrained_source``: W2 of the pretrained model's samples (evaluation
    noise, evaluation solver) to the target / source held-out sets.
    """

    floor: float
    floor_se: float
    source_floor: float
    source_floor_se: float
    source_target: float
    pretrained_target: float
    pretrained_source: float


def reference_distances(task: Task2D, pretrained: nn.Module, *, n_repeats: int = 10,
                        device: str | torch.device = "cpu") -> Reference:
    """The reference distances of :class:`Reference` for ``task`` and its pretrained model
    (``pretrain(task)``; cached on the task, ``n_repeats`` and the device type)."""
    n_repeats = check_positive_int("n_repeats", n_repeats, minimum=2)
    dev = resolve_device(device)

    def build() -> Reference:
        tgt_held, src_held = task.target_heldout(), task.source_heldout()
        gen_t, gen_s = _generator(task.seed, "floor"), _generator(task.seed, "source_eval")
        tgt = [wasserstein2(make_2d(task.target, task.n_eval, generator=gen_t), tgt_held)
               for _ in range(n_repeats)]
        src_samples = [make_2d(task.source, task.n_eval, generator=gen_s) for _ in range(n_repeats)]
        src = [wasserstein2(x, src_held) for x in src_samples]
        pre = sample_model(task, pretrained, device=dev)
        return Reference(floor=float(np.mean(tgt)), floor_se=float(np.std(tgt, ddof=1)),
                         source_floor=float(np.mean(src)), source_floor_se=float(np.std(src, ddof=1)),
                         source_target=wasserstein2(src_samples[0], tgt_held),
                         pretrained_target=wasserstein2(pre, tgt_held),
                         pretrained_source=wasserstein2(pre, src_held))

    key = {"kind": "tasks2d-reference", "task": task.as_dict(), "n_repeats": n_repeats, "device": dev.type}
    with _single_thread():
        return cached_torch("tasks2d-reference", key, build)


@dataclass(frozen=True)
class Stability:
    """Stability of a method's W2 curves over seeds: per-seed ``max_jump`` and
    ``early_degradation`` (n_seeds,), and ``seed_spread``: the mean over evaluation steps (> 0) of
    the across-seed standard deviation (ddof = 1; 0 for one seed)."""

    max_jump: np.ndarray
    early_degradation: np.ndarray
    seed_spread: float


def stability(runs: Sequence[FinetuneRun], *, early_fraction: float = 0.25) -> Stability:
    """:class:`Stability` of the W2 curves of ``runs`` (same evaluation steps)."""
    if not runs:
        raise ValueError("runs must hold at least one FinetuneRun, got none")
    steps = runs[0].eval_steps
    if any(not np.array_equal(r.eval_steps, steps) for r in runs):
        raise ValueError("runs must share their evaluation steps (same FinetuneConfig)")
    curves = np.stack([r.w2 for r in runs])
    spread = float(curves[:, 1:].std(axis=0, ddof=1).mean()) if len(runs) > 1 else 0.0
    return Stability(max_jump=np.asarray([max_upward_jump(c) for c in curves]),
                     early_degradation=np.asarray([early_degradation(steps, c, fraction=early_fraction)
                                                   for c in curves]),
                     seed_spread=spread)


@dataclass(frozen=True)
class QualityCurve:
    """W2 to the held-out target against NFE: Euler with ``euler_steps`` (NFE = steps), and dopri5.

    ``euler_error``: mean over samples of |x_euler - x_dopri5| (same noise): the Euler solver's
    global error at each step count, measured against the accurate adaptive solution."""

    euler_steps: np.ndarray
    euler_w2: np.ndarray
    euler_path_length: np.ndarray
    euler_error: np.ndarray
    dopri_nfe: int
    dopri_w2: float


@torch.no_grad()
def quality_vs_nfe(task: Task2D, model: nn.Module, *, euler_steps: Sequence[int] = EULER_STEPS,
                   device: str | torch.device = "cpu") -> QualityCurve:
    """Push the fixed evaluation noise through ``model`` with Euler (each count in ``euler_steps``)
    and dopri5 (``task.dopri_tol``); W2 of each sample set to the held-out target."""
    dev = resolve_device(device)
    steps = [check_positive_int("euler_steps[]", k) for k in euler_steps]
    if not steps:
        raise ValueError("euler_steps must hold at least one step count, got []")
    heldout, x0, model = task.target_heldout(), task.eval_noise().to(dev), model.to(dev)
    w2, length, error = [], [], []
    with _single_thread():
        d = sample_ode(model, x0, method="dopri5", atol=task.dopri_tol, rtol=task.dopri_tol)
        for k in steps:
            res = sample_ode(model, x0, method="euler", steps=k)
            w2.append(wasserstein2(res.x, heldout))
            length.append(mean_path_length(res))
            error.append(float((res.x - d.x).double().norm(dim=1).mean()))
        return QualityCurve(euler_steps=np.asarray(steps, dtype=np.int64), euler_w2=np.asarray(w2),
                            euler_path_length=np.asarray(length), euler_error=np.asarray(error),
                            dopri_nfe=int(d.nfe), dopri_w2=wasserstein2(d.x, heldout))


def nfe_to_reach(curve: QualityCurve, level: float) -> float:
    """Smallest Euler NFE of ``curve`` whose W2 is <= ``level`` (``inf`` if none reaches it)."""
    level = check_finite_number("level", level, minimum=0.0)
    ok = np.flatnonzero(curve.euler_w2 <= level)
    return float(curve.euler_steps[ok].min()) if ok.size else math.inf


def coverage(samples: Tensor, reference: Tensor, *, k: int = 5) -> float:
    """Coverage (Naeem et al., 2020): the fraction of ``reference`` points (m, d) whose k-nearest-
    neighbour ball among the reference points contains at least one of ``samples`` (n, d). In [0, 1];
    1 means every region of the reference is covered (a diversity measure, insensitive to outliers)."""
    k = check_positive_int("k", k)
    ref, smp = reference.detach().double().cpu(), samples.detach().double().cpu()
    if ref.ndim != 2 or smp.ndim != 2 or ref.shape[1] != smp.shape[1]:
        raise ValueError(f"samples and reference must be (n, d) and (m, d), got {tuple(smp.shape)} and "
                         f"{tuple(ref.shape)}")
    if ref.shape[0] <= k:
        raise ValueError(f"reference must have more than k={k} points, got {ref.shape[0]}")
    d_ref = torch.cdist(ref, ref)
    radius = d_ref.kthvalue(k + 1, dim=1).values  # the 0 distance to itself is the first
    nearest = torch.cdist(ref, smp).min(dim=1).values
    return float((nearest <= radius).double().mean())


def plot_mean_band(ax: Any, x: Sequence[float], curves: Sequence[Sequence[float]], *, color: Any,
                   label: str | None = None, **kwargs: Any) -> None:
    """Mean over rows of ``curves`` (n_seeds, len(x)) as a line with a ± 1 std band (ddof = 1)."""
    c = np.asarray(curves, dtype=np.float64)
    mean = c.mean(axis=0)
    std = c.std(axis=0, ddof=1) if c.shape[0] > 1 else np.zeros_like(mean)
    ax.plot(x, mean, color=color, label=label, **kwargs)
    ax.fill_between(x, mean - std, mean + std, color=color, alpha=0.2, linewidth=0)


#: One-sided 99.9 % critical value of the standard normal distribution.
Z_999: float = 3.090232306167813


def closer_margin(ref: Reference, *, z: float = Z_999) -> float:
    """``z * sqrt(2) * ref.floor_se``: the one-sided critical value (99.9 % by default) of the
    difference of two independent W2 evaluations at the task's sizes, each with standard error
    ``ref.floor_se``. A model is *resolvably* closer to the target than the pretrained model when
    its W2 is below ``ref.pretrained_target - closer_margin(ref)``."""
    z = check_finite_number("z", z, minimum=0.0)
    return float(z * math.sqrt(2.0) * ref.floor_se)


def shift_is_resolvable(ref: Reference, *, z: float = Z_999) -> bool:
    """Whether the fitting check has power: the pretrained model is farther from the target than the
    noise floor (a perfect model) by more than twice :func:`closer_margin`, so that any model that
    closes at least half of that gap is resolvably closer to the target than the pretrained one."""
    return bool(ref.pretrained_target - ref.floor > 2.0 * closer_margin(ref, z=z))


def independent_coupling_distance(task: Task2D) -> float:
    """E|x1 - x0| for x0 ~ N(0, I) (the evaluation noise) independent of x1 ~ the target training
    set, averaged over all pairs: THEORY T5's bound on the path length of the flow of the
    independent coupling (Jensen)."""
    x0 = task.eval_noise().double()
    x1 = task.target_train().double()
    return float(torch.cdist(x0, x1).mean())


def ends_at_zero(method: str, config: FinetuneConfig) -> bool:
    """Whether ``method``'s objective is plain CFM on the target at the last step (beta = 0 there)."""
    method = check_choice("method", method, METHODS)
    return method not in SCHEDULED_METHODS or config.schedule().final == 0.0


def record_claims(report: Any, entries: Sequence[Mapping[str, Any]]) -> None:
    """Store claim entries (:func:`gftlib.experiments.verdict.claim_entry`) in the report: in its
    ``claims`` list when the Report has one (written at the top level of the results JSON, where
    :mod:`gftlib.experiments.summary` reads them), otherwise under ``numbers["claims"]``."""
    entries = [dict(e) for e in entries]
    if isinstance(getattr(report, "claims", None), list):
        report.claims.extend(entries)
    else:
        report.numbers.setdefault("claims", []).extend(entries)
