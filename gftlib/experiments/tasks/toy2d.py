"""The 2-D domain-shift task shared by E1 (domain shift), E3 (few-step inference) and E4 (ablations).

A :class:`Task2D` fixes the data: a *source* distribution the model is pretrained on, a *target*
distribution it is fine-tuned to (a pool of ``n_target_pool`` target samples whose first
``n_target`` are the training set, so smaller sets are nested in larger ones), a held-out target
set that only the evaluation sees, and a fixed batch of evaluation noise. Conventions: t = 0 noise
(x0 ~ N(0, I)), t = 1 data; points are ``(n, 2)`` float32; every 2-D distribution of
:mod:`gftlib.data.datasets` is standardised (mean 0, variance 1 per coordinate).

:func:`pretrain` trains the MLP velocity field on the source (plain CFM, independent coupling) and
:func:`finetune` runs one method of :mod:`gftlib.experiments.methods` through the shared
:class:`gftlib.experiments.tasks.runner.TaskRunner` (budget:
:class:`gftlib.experiments.tasks.budget.FinetuneConfig`), with an evaluation callback that records,
on the EMA model, over training:

- ``w2``: exact W2 (:func:`gftlib.eval.metrics.wasserstein2`) between ``n_eval`` samples of the model (the
  fixed evaluation noise pushed through the fixed solver ``eval_method``/``eval_steps``) and the
  held-out target set;
- ``path_length`` and ``straightness`` of those paths (:mod:`gftlib.solvers.ode`);
- ``dopri_nfe`` (and ``dopri_w2``): evaluations used by dopri5 at a few checkpoints only.

Both are cached (key: every parameter that can change the result, plus the source of the package),
so E1, E3 and E4 share the runs. Every method gets the same optimizer, steps, batch size and
evaluation budget. The evaluation helpers of the notebooks are in
:mod:`gftlib.experiments.tasks.toy2d_eval`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from gftlib.data.datasets import DISTRIBUTIONS_2D, make_2d
from gftlib.eval.metrics import mean_path_length, mean_straightness, wasserstein2
from gftlib.experiments.methods import METHODS, MethodRun, check_methods
from gftlib.experiments.profiles import PROFILES, profile_values
from gftlib.experiments.tasks.budget import FinetuneConfig
from gftlib.experiments.tasks.runner import (RunRecord, TaskRunner, load_weights, pretrain_source,
                                             record_fields, single_thread)
from gftlib.gft.objective import FlowMatchingObjective
from gftlib.models import build_model
from gftlib.rng import seeded_generator, stream_seed
from gftlib.solvers.ode import FIXED_STEP_METHODS, sample_ode
from gftlib.training import TrainConfig
from gftlib.validation import (check_choice, check_finite_number, check_int_fields, check_positive_int,
                               resolve_device)

__all__ = [
    "PROFILE_TABLE",
    "PROFILE_SETTINGS",
    "DRY_RUN_SIZES",
    "DRY_RUN_SETTINGS",
    "E1_PAIRS",
    "EULER_STEPS",
    "Task2D",
    "TaskSetup",
    "FinetuneRun",
    "Toy2DRunner",
    "role_generator",
    "resolve_setup",
    "pretrain",
    "finetune",
    "run_methods",
    "load_model",
    "sample_model",
    "independent_noise",
]

#: Euler step counts of the quality-vs-NFE curve (E3).
EULER_STEPS: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64)

#: The notebooks' user-facing knobs per profile (E1, E3 and E4 share it, so the same profile and
#: seed give the same cached runs). ``methods`` is a list of names from METHODS.
PROFILE_TABLE: dict[str, dict[str, Any]] = {
    # smoke: reflow and scratch too, so the test suite runs E1's checks on methods they do not apply to
    "smoke": {"n_seeds": 2, "source": "checkerboard", "target": "moons", "n_target": 512, "steps": 100,
              "batch_size": 128, "beta0": 2.0, "schedule_kind": "cosine",
              "methods": ["ft", "ft-ot", "gft-coupling", "reflow", "scratch"]},
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

#: Dry-run sizes (``dry_run=True``, :func:`gftlib.experiments.profiles.profile_values`): any
#: profile's code path at tiny sizes, for the tests. Only sizes: methods, pairs, schedules and the
#: evaluation solver stay the profile's.
DRY_RUN_SIZES: dict[str, Any] = {"n_seeds": 2, "n_target": 32, "steps": 6, "batch_size": 16}
DRY_RUN_SETTINGS: dict[str, Any] = {
    "hidden": 8, "time_features": 4, "n_source": 64, "pretrain_steps": 4, "pretrain_batch": 32,
    "n_target_pool": 128, "n_heldout": 64, "n_eval": 64, "eval_steps": 2, "n_evals": 1, "cache_size": 16,
    "n_trajectories": 8, "n_repeats": 3}

# Independent random streams of a task (one generator per role, seeded from (seed, role)).
_ROLES = {"source": 0, "target_pool": 1, "heldout": 2, "eval_noise": 3, "floor": 4, "source_heldout": 5,
          "source_eval": 6, "extra_noise": 7}


def role_generator(seed: int, role: str) -> torch.Generator:
    """The task's random stream for ``role`` (a key of the module's role table), seeded from (seed, role)."""
    return seeded_generator(stream_seed(int(seed), _ROLES[role], bits=63))


# --------------------------------------------------------------------------------------------- the task
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
        check_int_fields(self, {"n_target_pool": 2, "n_heldout": 2, "n_eval": 2, "n_source": 2, "hidden": 1,
                                "depth": 1, "time_features": 1, "pretrain_steps": 1, "pretrain_batch": 1,
                                "eval_steps": 1})
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
        return make_2d(self.source, self.n_source, generator=role_generator(self.seed, "source"))

    def target_pool(self) -> Tensor:
        """(n_target_pool, 2): every available target training sample."""
        return make_2d(self.target, self.n_target_pool, generator=role_generator(self.seed, "target_pool"))

    def target_train(self) -> Tensor:
        """(n_target, 2): the first n_target samples of the pool (nested across n_target)."""
        return self.target_pool()[: self.n_target].clone()

    def target_heldout(self) -> Tensor:
        """(n_heldout, 2) held-out target samples (never trained on)."""
        return make_2d(self.target, self.n_heldout, generator=role_generator(self.seed, "heldout"))

    def source_heldout(self) -> Tensor:
        """(n_heldout, 2) held-out source samples."""
        return make_2d(self.source, self.n_heldout, generator=role_generator(self.seed, "source_heldout"))

    def eval_noise(self) -> Tensor:
        """(n_eval, 2) fixed evaluation noise x0 ~ N(0, I) (the same for every model and step)."""
        return torch.randn(self.n_eval, 2, generator=role_generator(self.seed, "eval_noise"))

    def build_model(self, *, seed: int | None = None) -> nn.Module:
        """The task's MLP velocity field (weights from ``seed``; None: the global RNG)."""
        # The library's default time scale (1000, DDPM-style) makes a 2-D field oscillate in t, which
        # inflates the step count of adaptive solvers (dopri5 NFE ~4x at tol 1e-5) without improving W2.
        return build_model("mlp", dim=2, hidden=self.hidden, depth=self.depth,
                           time_features=self.time_features, time_scale=self.time_scale, seed=seed)


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
    :data:`PROFILE_SETTINGS` (:data:`DRY_RUN_SETTINGS` when ``params["dry_run"]``). Invalid values
    raise with the library's message.
    """
    profile = check_choice("profile", params["profile"], PROFILES)
    s = profile_values(PROFILE_SETTINGS, profile, dry_run=params.get("dry_run", False),
                       dry_run_sizes=DRY_RUN_SETTINGS)
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
    objective = lambda: FlowMatchingObjective(  # noqa: E731
        task.source_train(), batch_size=task.pretrain_batch, coupling="independent", seed=task.seed)
    key = {"kind": "tasks2d-pretrain", "task": task.pretrain_key(), "device": dev.type}
    with single_thread():
        state = pretrain_source(task, objective, name="tasks2d-pretrain", key=key, device=dev)
    return load_model(task, state["ema"])


def load_model(task: Task2D, state: Mapping[str, Tensor], *, device: str | torch.device = "cpu") -> nn.Module:
    """An MLP of the task's architecture with weights ``state`` (eval mode, no gradients)."""
    return load_weights(task.build_model(), state, device=device)


@dataclass(frozen=True)
class FinetuneRun(RunRecord):
    """One fine-tuning run of the 2-D task: :class:`~gftlib.experiments.tasks.runner.RunRecord` plus arrays
    sharing ``eval_steps`` (E,) with step 0 = the initial model (``w2``, ``path_length``, ``straightness``,
    and the record's ``train_seconds_at_eval``) and dopri arrays sharing ``dopri_steps``."""

    eval_steps: np.ndarray
    w2: np.ndarray
    path_length: np.ndarray
    straightness: np.ndarray
    dopri_steps: np.ndarray
    dopri_nfe: np.ndarray
    dopri_w2: np.ndarray

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


class Toy2DRunner(TaskRunner[Task2D, FinetuneConfig, FinetuneRun]):
    """The 2-D task's pieces of the shared runner: W2 / path-length evaluations, one CPU thread."""

    name = "tasks2d"
    eval_key = "w2"
    one_thread = True
    task_type = Task2D
    config_type = FinetuneConfig
    scratch_ignores = ("source", "n_source", "pretrain_steps", "pretrain_batch", "pretrain_lr")

    def pretrained(self, task: Task2D, method: str, config: FinetuneConfig,
                   device: torch.device) -> nn.Module | None:
        return None if method == "scratch" else pretrain(task, device=device)

    def train_config(self, config: FinetuneConfig, seed: int, device: torch.device) -> TrainConfig:
        return TrainConfig(steps=config.steps, lr=config.lr, ema_decay=config.ema_decay, seed=seed,
                           device=str(device), eval_every=config.eval_every,
                           log_every=max(1, config.steps // 60), progress=False)

    def method_options(self, task: Task2D, config: FinetuneConfig, seed: int) -> dict[str, Any]:
        return config.method_options(seed)

    def evaluator(self, task: Task2D, config: FinetuneConfig,
                  device: torch.device) -> Callable[[nn.Module, int], dict[str, float]]:
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

    def collect(self, task: Task2D, method: str, seed: int, config: FinetuneConfig, run: MethodRun,
                device: torch.device) -> FinetuneRun:
        evals, col = run.evals, run.column
        dop = [h for h in evals if "dopri_nfe" in h]
        return FinetuneRun(
            **record_fields(run, method, seed, config.steps),
            eval_steps=col(evals, "step", np.int64), w2=col(evals, "w2"),
            path_length=col(evals, "path_length"), straightness=col(evals, "straightness"),
            dopri_steps=col(dop, "step", np.int64), dopri_nfe=col(dop, "dopri_nfe"),
            dopri_w2=col(dop, "dopri_w2"))


RUNNER = Toy2DRunner()


def finetune(task: Task2D, method: str, seed: int, config: FinetuneConfig, *,
             device: str | torch.device = "cpu") -> FinetuneRun:
    """Fine-tune (or, for "scratch", train) on ``task.target_train()`` with ``method`` and ``seed``
    (model init for scratch, data order, noise, caches). Cached on every parameter that matters."""
    return RUNNER.finetune(task, method, seed, config, device=device)


def run_methods(task: Task2D, methods: Sequence[str], seeds: Sequence[int], config: FinetuneConfig, *,
                device: str | torch.device = "cpu") -> dict[str, list[FinetuneRun]]:
    """``{method: [run for each seed]}`` (each run cached)."""
    return RUNNER.run_methods([(task, s) for s in seeds], methods, config, device=device)


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
    with single_thread():
        return sample_ode(model.to(dev), x0.to(dev), method=task.eval_method, steps=task.eval_steps).x.cpu()


def independent_noise(task: Task2D, n: int) -> Tensor:
    """(n, 2) standard normal noise independent of the evaluation noise (its own stream)."""
    return torch.randn(check_positive_int("n", n), 2, generator=role_generator(task.seed, "extra_noise"))
