"""Scenario runners of E5: settings from the paper's motivation where a pretrained term could matter.

Every scenario uses the 2-D task of :mod:`gftlib.experiments.tasks.toy2d` (a :class:`Task2D` per seed, so
a seed sets the target sample, the held-out set, the evaluation noise, the pretrained model and the
training randomness) and one :class:`Budget` (identical for every method). Conventions: t = 0 noise,
t = 1 data; points are ``(n, 2)`` float32.

- The pretrained model is trained here, not by :func:`toy2d.pretrain`: with ``diffusion = 0`` it is
  **OT-CFM** (exact minibatch OT coupling, straight conditional paths), a model with short paths
  and a cheap adaptive solve whose erosion by fine-tuning scenario (c) measures; with
  ``diffusion = g > 0`` it is the **SDE drift** of the Brownian bridge x_t = (1-t) x0 + t x1 +
  g sqrt(t(1-t)) z (independent coupling; regression target (x1 - x_t)/(1 - t), THEORY's conditional
  SDE drift with sigma = g), sampled by Euler-Maruyama (scenario (d)).
- Fine-tuning runs one method of :mod:`gftlib.experiments.methods` with the same interpolant and g as
  the pretrained model (THEORY T2: both terms must share g), GFT's drift cache with jittered,
  refreshed times. With g > 0 both caches simulate the pretrained SDE by Euler-Maruyama
  (:func:`gftlib.experiments.methods.build_method`), so both GFT forms apply.
- Evaluation (EMA model, fixed evaluation noise; the SDE noise is fixed per task too, so methods are
  compared on common random numbers): exact W2 to the held-out target, path length and straightness
  (of the drift part for SDEs), at the end also the dopri5 NFE (ODE) and the memorisation statistics
  of :mod:`gftlib.eval.memorization` against the training set and held-out sets of its size.

Runs go through the runner shared with the 2-D and image tasks
(:class:`gftlib.experiments.tasks.runner.TaskRunner`); runs and pretrained models are cached.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from gftlib.data.datasets import make_2d
from gftlib.eval import stability as ST
from gftlib.experiments.cache import cached_torch
from gftlib.experiments.methods import MethodRun, check_methods
from gftlib.experiments.tasks import toy2d as T2
from gftlib.experiments.tasks.budget import SCHEDULED_METHODS
from gftlib.experiments.tasks.runner import TaskRunner, pretrain_source, single_thread, timing_fields
from gftlib.experiments.tasks.toy2d_eval import w2_floors
from gftlib.paths.interpolants import Interpolant
from gftlib.eval.memorization import closer_to_train_z, memorization
from gftlib.eval.metrics import mean_path_length, mean_straightness, wasserstein2
from gftlib.gft.objective import FlowMatchingObjective
from gftlib.solvers.common import SampleResult
from gftlib.solvers.ode import sample_ode
from gftlib.solvers.sde import sample_sde
from gftlib.schedules import SCHEDULES, make_schedule
from gftlib.training import TrainConfig
from gftlib.validation import (check_choice, check_finite_number, check_int_fields, check_positive_int,
                               resolve_device)

__all__ = ["SCENARIO_METHODS", "BASELINES", "GFT_FORMS", "Budget", "ScenarioRun",
           "PretrainedReference", "pretrain_scenario", "sample", "pretrained_reference", "run_scenario",
           "run_grid", "task_for_seed", "final_values", "curve_stability", "STABILITY_KEYS", "steps_to_level",
           "null_memorization", "pooled_floor_se", "ScenarioRunner"]

#: The methods compared in every scenario: the strongest fair baselines and both GFT forms.
SCENARIO_METHODS: tuple[str, ...] = ("ft", "ft-ot", "l2-reg", "gft-drift", "gft-coupling")
BASELINES: tuple[str, ...] = ("ft", "ft-ot", "l2-reg")
GFT_FORMS: tuple[str, ...] = ("gft-drift", "gft-coupling")

_SDE_NOISE_ROLE = 9173  # seeds the Euler-Maruyama noise of the evaluation (per task seed)


@dataclass(frozen=True)
class Budget:
    """One fine-tuning budget and evaluation plan, identical for every method (validated).

    ``steps`` AdamW updates of ``batch_size`` at ``lr`` (gradient clipping ``grad_clip``, EMA
    ``ema_decay`` with the trainer's warm-up). Cooling schedule ``schedule_kind`` from ``beta0`` to 0.
    Caches: ``cache_size`` pretrained pairs (gft-coupling), ``n_trajectories`` drift trajectories
    (gft-drift, jittered times, both caches refreshed every ``refresh_every`` batches).
    ``diffusion`` g (0: ODE; > 0: Brownian bridge of diffusion g, Euler-Maruyama with ``em_steps``
    steps, times in [t_eps, 1 - t_eps]). ``n_evals``: evaluations over training besides step 0 (1:
    the final model only; step 0 is then not evaluated, see :func:`pretrained_reference`).
    """

    steps: int = 200
    batch_size: int = 128
    lr: float = 2e-3
    grad_clip: float | None = 1.0
    ema_decay: float = 0.99
    beta0: float = 2.0
    schedule_kind: str = "cosine"
    cache_size: int = 1024
    n_trajectories: int = 512
    refresh_every: int = 25
    diffusion: float = 0.0
    em_steps: int = 32
    t_eps: float = 1e-3
    n_evals: int = 1

    def __post_init__(self) -> None:
        put = lambda name, value: object.__setattr__(self, name, value)  # noqa: E731
        check_int_fields(self, {"steps": 1, "cache_size": 1, "n_trajectories": 1, "refresh_every": 1,
                                "em_steps": 1, "n_evals": 1})
        put("batch_size", check_positive_int("batch_size", self.batch_size, minimum=2))
        if self.n_evals > self.steps:
            raise ValueError(f"n_evals must be an integer in [1, steps={self.steps}], got {self.n_evals}")
        put("lr", check_finite_number("lr", self.lr, minimum=0.0, strict=True))
        if self.grad_clip is not None:
            put("grad_clip", check_finite_number("grad_clip", self.grad_clip, minimum=0.0, strict=True))
        put("beta0", check_finite_number("beta0", self.beta0, minimum=0.0))
        put("schedule_kind", check_choice("schedule_kind", self.schedule_kind,
                                          tuple(k for k in SCHEDULES if k != "custom")))
        put("diffusion", check_finite_number("diffusion", self.diffusion, minimum=0.0))
        put("t_eps", check_finite_number("t_eps", self.t_eps, minimum=0.0, maximum=0.49))
        if self.diffusion > 0 and self.t_eps <= 0:
            raise ValueError(f"t_eps must be > 0 when diffusion > 0 (the bridge drift is singular at t = 1), "
                             f"got {self.t_eps!r}")
        make_schedule(self.schedule_kind, self.beta0, self.steps)  # the library's checks
        TrainConfig(steps=self.steps, lr=self.lr, ema_decay=self.ema_decay, grad_clip=self.grad_clip)

    @property
    def stochastic(self) -> bool:
        return self.diffusion > 0

    def interpolant(self) -> Interpolant:
        """The conditional path shared by pretraining and every fine-tuning term."""
        return Interpolant(sigma=self.diffusion, t_eps=self.t_eps) if self.stochastic else Interpolant()

    def ends_at_zero(self, method: str) -> bool:
        """Whether ``method`` ends as plain CFM on the target (beta = 0 at the last step; a
        ``constant`` schedule keeps beta0, so the scheduled methods then end at the mixture of T2)."""
        return method not in SCHEDULED_METHODS or make_schedule(
            self.schedule_kind, self.beta0, self.steps).final == 0.0

    def eval_steps(self) -> np.ndarray:
        """Steps with an evaluation: the final one only (``n_evals = 1``), else 0 and n_evals points."""
        if self.n_evals == 1:
            return np.asarray([self.steps], dtype=np.int64)
        every = self.steps // self.n_evals
        grid = list(range(every, self.steps + 1, every))
        if grid[-1] != self.steps:
            grid.append(self.steps)
        return np.asarray([0, *grid], dtype=np.int64)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def task_for_seed(base: T2.Task2D, seed: int, **changes: Any) -> T2.Task2D:
    """``base`` with its seed (data, held-out set, evaluation noise, pretraining) set to ``seed``."""
    return T2.Task2D(**{**base.as_dict(), **changes, "seed": check_positive_int("seed", seed, minimum=0)})


# --------------------------------------------------------------------------------------------- models
def pretrain_scenario(task: T2.Task2D, *, diffusion: float = 0.0, t_eps: float = 1e-3,
                      device: str | torch.device = "cpu") -> nn.Module:
    """The pretrained source model of the scenarios (EMA network, eval mode, CPU): OT-CFM for
    ``diffusion = 0``, the Brownian-bridge SDE drift of diffusion g for ``diffusion = g > 0``. Cached."""
    g = check_finite_number("diffusion", diffusion, minimum=0.0)
    dev = resolve_device(device)
    interp = Interpolant(sigma=g, t_eps=t_eps) if g > 0 else Interpolant()

    objective = lambda: FlowMatchingObjective(  # noqa: E731
        task.source_train(), batch_size=task.pretrain_batch, coupling="independent" if g > 0 else "ot",
        interpolant=interp, diffusion=g, seed=task.seed)
    key = {"kind": "scenario-pretrain", "task": task.pretrain_key(), "diffusion": g,
           "t_eps": t_eps if g > 0 else 0.0, "device": dev.type}
    with single_thread():
        state = pretrain_source(task, objective, name="scenario-pretrain", key=key, device=dev, n_logs=20)
    return T2.load_model(task, state["ema"])


@torch.no_grad()
def sample(task: T2.Task2D, model: nn.Module, budget: Budget, *, x0: Tensor | None = None) -> SampleResult:
    """Push ``x0`` (default: the task's evaluation noise) through ``model`` with the scenario's sampler:
    the task's fixed ODE solver (g = 0) or Euler-Maruyama with ``budget.em_steps`` and noise seeded by
    the task seed (g > 0; the same noise for every model of a task)."""
    x0 = task.eval_noise() if x0 is None else x0
    model = model.to(x0.device).eval()
    if not budget.stochastic:
        return sample_ode(model, x0, method=task.eval_method, steps=task.eval_steps)
    gen = torch.Generator().manual_seed(task.seed * 100_003 + _SDE_NOISE_ROLE)
    return sample_sde(model, x0, diffusion=budget.diffusion, steps=budget.em_steps, generator=gen)


def _metrics(task: T2.Task2D, model: nn.Module, budget: Budget, *, final: bool) -> dict[str, float]:
    """W2 to the held-out target, path length, straightness; at the end also the dopri5 NFE (ODE)
    and the memorisation statistics (``mem_*`` of :func:`memorization`, ``mem_z`` of
    :func:`closer_to_train_z`)."""
    heldout = task.target_heldout()
    res = sample(task, model, budget)
    out = {"w2": wasserstein2(res.x, heldout), "path_length": mean_path_length(res),
           "straightness": mean_straightness(res)}
    if final:
        if not budget.stochastic:
            x0 = task.eval_noise()
            out["dopri_nfe"] = float(sample_ode(model, x0, method="dopri5", atol=task.dopri_tol,
                                                rtol=task.dopri_tol).nfe)
        mem = memorization(res.x, task.target_train(), heldout)
        out.update({f"mem_{k}": float(v) for k, v in mem.as_dict().items()})
        out["mem_z"] = closer_to_train_z(res.x, task.target_train(), heldout)[1]
    return out


# --------------------------------------------------------------------------------------------- references
@dataclass(frozen=True)
class PretrainedReference:
    """Per task: the pretrained model's final metrics (as :func:`_metrics`, against the *target*),
    its W2 to the source held-out set, and the W2 noise floors: mean and standard deviation over
    ``n_repeats`` fresh samples of the evaluation size against the target (``floor``, ``floor_se``)
    and the source (``source_floor``, ``source_floor_se``) held-out sets; ``source_target``:
    W2(fresh source sample, target held-out)."""

    metrics: dict[str, float]
    pretrained_source: float
    floor: float
    floor_se: float
    source_floor: float
    source_floor_se: float
    source_target: float


def pretrained_reference(task: T2.Task2D, budget: Budget, *, n_repeats: int = 8,
                         device: str | torch.device = "cpu") -> PretrainedReference:
    """:class:`PretrainedReference` of ``task``'s scenario model for ``budget.diffusion``. Cached."""
    n_repeats = check_positive_int("n_repeats", n_repeats, minimum=2)
    dev = resolve_device(device)

    def build() -> PretrainedReference:
        pre = pretrain_scenario(task, diffusion=budget.diffusion, t_eps=budget.t_eps, device=dev)
        floors = _floors(task, n_repeats)
        return PretrainedReference(
            metrics=_metrics(task, pre, budget, final=True),
            pretrained_source=wasserstein2(sample(task, pre, budget).x, task.source_heldout()), **floors)

    key = {"kind": "scenario-reference", "task": task.as_dict(), "budget": _reference_key(budget),
           "n_repeats": n_repeats, "device": dev.type}
    with single_thread():
        return cached_torch("scenario-reference", key, build)


def _floors(task: T2.Task2D, n_repeats: int) -> dict[str, float]:
    """The W2 noise floors of :class:`PretrainedReference` (no model involved; cached per task)."""

    def build() -> dict[str, float]:
        gen = torch.Generator().manual_seed(task.seed * 100_003 + _SDE_NOISE_ROLE + 1)
        return w2_floors(task, n_repeats, gen, gen)

    key = {"kind": "scenario-floors", "task": task.as_dict(), "n_repeats": n_repeats}
    with single_thread():
        return cached_torch("scenario-floors", key, build)


def null_memorization(task: T2.Task2D) -> tuple[float, float]:
    """``(f, z)`` of :func:`gftlib.eval.memorization.closer_to_train_z` for a fresh target sample of the
    evaluation size, independent of the training and held-out sets (the null: E f = 1/2, z ~ N(0, 1))."""
    gen = torch.Generator().manual_seed(task.seed * 100_003 + _SDE_NOISE_ROLE + 2)
    fresh = make_2d(task.target, task.n_eval, generator=gen)
    return closer_to_train_z(fresh, task.target_train(), task.target_heldout())


def _reference_key(budget: Budget) -> dict[str, Any]:
    return {"diffusion": budget.diffusion, "t_eps": budget.t_eps if budget.stochastic else 0.0,
            "em_steps": budget.em_steps if budget.stochastic else 0}


# --------------------------------------------------------------------------------------------- runs
@dataclass(frozen=True)
class ScenarioRun:
    """One fine-tuning run: ``eval_steps`` (E,) and the ``w2`` curve there (the last entry is the
    final model); ``final``: the final metrics (:func:`_metrics`); loss logs ``log_steps``,
    ``loss_target``, ``beta``; ``samples``: (n_eval, 2) final samples of the evaluation noise; wall
    times as in :class:`~gftlib.experiments.tasks.runner.RunRecord` (at ``eval_steps``)."""

    method: str
    seed: int
    eval_steps: np.ndarray
    w2: np.ndarray
    final: dict[str, float]
    log_steps: np.ndarray
    loss_target: np.ndarray
    beta: np.ndarray
    samples: Tensor
    train_seconds_at_eval: np.ndarray
    setup_seconds: float
    train_seconds: float
    evaluation_seconds: float


def _method_options(budget: Budget, seed: int) -> dict[str, Any]:
    return dict(batch_size=budget.batch_size, steps=budget.steps, beta0=budget.beta0,
                schedule_kind=budget.schedule_kind, target_coupling="ot", cache_size=budget.cache_size,
                n_trajectories=budget.n_trajectories, time_jitter=True, refresh_every=budget.refresh_every,
                interpolant=budget.interpolant(), diffusion=budget.diffusion, seed=seed)


def _evaluator(task: T2.Task2D, budget: Budget) -> Callable[[nn.Module, int], dict[str, float]]:
    wanted = set(int(s) for s in budget.eval_steps())

    def evaluate(model: nn.Module, step: int) -> dict[str, float]:
        if int(step) not in wanted:
            return {}
        return _metrics(task, model, budget, final=int(step) == budget.steps)

    return evaluate


class ScenarioRunner(TaskRunner[T2.Task2D, Budget, ScenarioRun]):
    """The scenarios' pieces of the shared runner: the scenario model (:func:`pretrain_scenario`)
    for every method, the training seed of a task is its own seed, evaluations at
    :meth:`Budget.eval_steps` with the final metrics of :func:`_metrics`."""

    name = "scenario"
    eval_key = "w2"
    one_thread = True
    task_type = T2.Task2D
    config_type = Budget

    def check(self, task: T2.Task2D, method: str, seed: int, budget: Budget) -> tuple[str, int]:
        (method,) = check_methods([method])
        if method not in SCENARIO_METHODS + ("scratch",):
            raise ValueError(f"method must be one of {SCENARIO_METHODS + ('scratch',)} (fine-tuning methods "
                             f"of the scenarios), got {method!r}")
        return method, seed

    def pretrained(self, task: T2.Task2D, method: str, budget: Budget, device: torch.device) -> nn.Module:
        return pretrain_scenario(task, diffusion=budget.diffusion, t_eps=budget.t_eps, device=device)

    def train_config(self, budget: Budget, seed: int, device: torch.device) -> TrainConfig:
        every = budget.steps if budget.n_evals == 1 else budget.steps // budget.n_evals
        return TrainConfig(steps=budget.steps, lr=budget.lr, ema_decay=budget.ema_decay,
                           grad_clip=budget.grad_clip, seed=seed, device=str(device), eval_every=every,
                           log_every=max(1, budget.steps // 50), progress=False)

    def method_options(self, task: T2.Task2D, budget: Budget, seed: int) -> dict[str, Any]:
        return _method_options(budget, seed)

    def evaluator(self, task: T2.Task2D, budget: Budget,
                  device: torch.device) -> Callable[[nn.Module, int], dict[str, float]]:
        return _evaluator(task, budget)

    def collect(self, task: T2.Task2D, method: str, seed: int, budget: Budget, run: MethodRun,
                device: torch.device) -> ScenarioRun:
        evals = [e for e in run.evals if "w2" in e]
        final = {k: float(v) for k, v in evals[-1].items() if k != "step"}
        model = T2.load_model(task, run.result.ema_model.state_dict())
        return ScenarioRun(method=method, seed=seed, eval_steps=run.column(evals, "step", np.int64),
                           w2=run.column(evals, "w2"), final=final,
                           log_steps=run.column(run.logs, "step", np.int64),
                           loss_target=run.column(run.logs, "target"), beta=run.column(run.logs, "beta"),
                           samples=sample(task, model, budget).x.cpu(), **timing_fields(run, evals))

    def run_key(self, task: T2.Task2D, method: str, seed: int, budget: Budget) -> dict[str, Any]:
        return {"task": task.as_dict(), "method": method, "budget": budget.as_dict()}


RUNNER = ScenarioRunner()


def run_scenario(task: T2.Task2D, method: str, budget: Budget, *,
                 device: str | torch.device = "cpu") -> ScenarioRun:
    """Fine-tune ``task``'s scenario model on ``task.target_train()`` with ``method`` (training seed
    = ``task.seed``), one of :data:`SCENARIO_METHODS` or ``scratch``. Cached on the task, method,
    budget and device type."""
    return RUNNER.finetune(task, method, task.seed, budget, device=device)


def run_grid(tasks: Sequence[T2.Task2D], methods: Sequence[str], budget: Budget, *,
             device: str | torch.device = "cpu") -> dict[str, list[ScenarioRun]]:
    """``{method: [run for each task]}`` (one task per seed; each run cached)."""
    return RUNNER.run_methods([(t, t.seed) for t in tasks], check_methods(methods), budget, device=device)


def final_values(runs: Mapping[str, Sequence[ScenarioRun]], key: str) -> dict[str, list[float]]:
    """``{method: [run.final[key] per seed]}``."""
    return {m: [float(r.final[key]) for r in rs] for m, rs in runs.items()}


STABILITY_KEYS: tuple[str, ...] = ("w2_iv", "loss_iv", "spearman", "max_jump", "early_degradation")


def curve_stability(runs: Sequence[ScenarioRun], *, early_fraction: float = 0.25) -> dict[str, list[float]]:
    """Per-seed stability measures (:mod:`gftlib.eval.stability`, lower is more stable for all):
    ``w2_iv``: instantaneous variance of the W2 curve; ``loss_iv``: of the logged target loss
    (means over log intervals); ``spearman``: Spearman rho of step and W2 (-1: monotone improvement);
    ``max_jump``; ``early_degradation``. Needs an evaluation at step 0 (``Budget.n_evals >= 2``)."""
    out: dict[str, list[float]] = {k: [] for k in STABILITY_KEYS}
    for r in runs:
        if r.eval_steps.size < 3 or r.eval_steps[0] != 0:
            raise ValueError("curve_stability needs W2 curves evaluated at step 0 and later (n_evals >= 2)")
        out["w2_iv"].append(ST.instantaneous_variance(r.w2))
        out["loss_iv"].append(ST.instantaneous_variance(r.loss_target))
        out["spearman"].append(ST.spearman_rho(r.eval_steps, r.w2))
        out["max_jump"].append(ST.max_upward_jump(r.w2))
        out["early_degradation"].append(ST.early_degradation(r.eval_steps, r.w2, fraction=early_fraction))
    return out


def steps_to_level(runs: Mapping[str, Sequence[ScenarioRun]], *, tolerance: float = 0.05
                   ) -> tuple[float, dict[str, list[float]]]:
    """Training speed: the level "within ``tolerance`` of the best final mean W2 over the methods"
    and, per method and seed, the first evaluation step whose W2 reaches it (``inf``: never)."""
    best = min(float(np.mean([r.w2[-1] for r in rs])) for rs in runs.values())
    level = ST.relative_level(best, tolerance=tolerance)
    return level, {m: [ST.steps_to_reach(r.eval_steps, r.w2, level) for r in rs] for m, rs in runs.items()}


def pooled_floor_se(refs: Sequence[PretrainedReference]) -> float:
    """The pooled standard error of one W2 evaluation over seeds, sqrt(mean_seed floor_se^2) (the
    same evaluation sizes for every seed, so one SE; pooling the seeds' variances gives it
    n_seeds * (n_repeats - 1) degrees of freedom). The margin of "resolvably different" is
    :func:`gftlib.experiments.checks.difference_margin` of it."""
    if not refs:
        raise ValueError("refs must hold at least one PretrainedReference, got none")
    return math.sqrt(float(np.mean([r.floor_se**2 for r in refs])))
