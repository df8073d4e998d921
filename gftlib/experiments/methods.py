"""The fine-tuning methods compared in the experiments, as (objective, init, schedule) triples.

=============  ===============================================================  ==========  ===========
name           objective                                                        init        schedule
=============  ===============================================================  ==========  ===========
scratch        CFM on the target, independent coupling                          random      none
ft             CFM on the target, independent coupling                          pretrained  none
ft-ot          CFM on the target, exact minibatch OT coupling                   pretrained  none
l2-reg         CFM on the target (``target_coupling``) + beta * |b - b_pre|^2   pretrained  beta0 -> 0
               on the *target* path points (naive baseline, TargetPathRegularizer)
gft-drift      CFM on the target (``target_coupling``) + beta * drift-form      pretrained  beta0 -> 0
               pretrained term (PretrainedDriftCache)
gft-coupling   CFM on the target (``target_coupling``) + beta * coupling-form   pretrained  beta0 -> 0
               pretrained term (PretrainedCouplingCache)
reflow         CFM on cached pretrained pairs (x0, Phi_pre(x0)) only; no        pretrained  none
               target term (ReflowObjective): stays at p_pre, straightens paths
=============  ===============================================================  ==========  ===========

``l2-reg`` uses the same cooling schedule and the same target coupling as GFT, so that the only
difference is where the pretrained term is evaluated (target path vs pretrained flow). The frozen
pretrained network is a deep copy of ``pretrained_model`` (eval mode, no gradients) on ``device``;
whether the trained network starts from the pretrained weights is ``MethodSpec.init_from_pretrained``
(the caller copies them).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from gftlib.paths.interpolants import Interpolant
from gftlib.gft.objective import FlowMatchingObjective, Objective
from gftlib.gft.coupling_cache import PretrainedCouplingCache
from gftlib.gft.drift_cache import PretrainedDriftCache
from gftlib.gft.pretrained_cache import PretrainedCache
from gftlib.gft.reflow import ReflowObjective
from gftlib.gft.regularizer import TargetPathRegularizer
from gftlib.paths.couplings import COUPLINGS
from gftlib.schedules import SCHEDULES, CoolingSchedule, make_schedule
from gftlib.training.config import TrainConfig, TrainResult
from gftlib.training import train
from gftlib.experiments.walltime import RunClock, RunTiming
from gftlib.validation import (
    check_choice,
    check_finite_number,
    check_positive_int,
    check_tensor,
    resolve_device,
)

SCHEDULE_OPTIONS: tuple[str, ...] = ("beta_final", "rate", "n_stages", "values")

__all__ = ["MethodRun", "run_method", "first_update_caches", "check_schedule_options", "check_methods",
           "METHODS", "METHOD_DESCRIPTIONS", "MethodSpec", "build_method", "freeze"]


def check_schedule_options(options: Mapping[str, Any]) -> None:
    """Reject option names that no cooling schedule takes (before make_schedule's raw TypeError)."""
    unknown = sorted(set(options) - set(SCHEDULE_OPTIONS))
    if unknown:
        raise ValueError(f"schedule_options has unknown key(s) {unknown}; allowed: "
                         "beta_final, rate (exponential), n_stages (step), values (custom)")


METHODS: tuple[str, ...] = ("scratch", "ft", "ft-ot", "l2-reg", "gft-drift", "gft-coupling", "reflow")

METHOD_DESCRIPTIONS: dict[str, str] = {
    "scratch": "CFM on the target from a random init (independent coupling)",
    "ft": "standard fine-tuning: CFM on the target from the pretrained weights (independent coupling)",
    "ft-ot": "fine-tuning with exact minibatch OT coupling from the pretrained weights",
    "l2-reg": "naive L2-to-pretrained regulariser on the target path, cooled beta0 -> 0",
    "gft-drift": "GFT, drift form: pretrained term on simulated pretrained trajectories, cooled beta0 -> 0",
    "gft-coupling": "GFT, coupling form: pretrained term on cached pretrained pairs, cooled beta0 -> 0",
    "reflow": "reflow: CFM on cached pretrained pairs (x0, Phi_pre(x0)) only, from the pretrained weights",
}

_GFT_LIKE = ("l2-reg", "gft-drift", "gft-coupling")


@dataclass(frozen=True)
class MethodSpec:
    """A method ready to train: ``objective`` (gftlib.gft.objective.Objective), whether the trained
    model starts from the pretrained weights, the cooling ``schedule`` (None: beta = 0 throughout)."""

    name: str
    objective: Objective
    init_from_pretrained: bool
    schedule: CoolingSchedule | None
    description: str


def freeze(model: nn.Module | Callable[[Tensor, Tensor], Tensor], device: torch.device
           ) -> nn.Module | Callable[[Tensor, Tensor], Tensor]:
    """A frozen copy of a network (deep copy, eval mode, requires_grad off, on ``device``); a plain
    callable (e.g. an analytic field) is returned as is."""
    if isinstance(model, nn.Module):
        frozen = copy.deepcopy(model).to(device).eval()
        frozen.requires_grad_(False)
        return frozen
    if not callable(model):
        raise TypeError(
            f"pretrained_model must be an nn.Module or a callable field(x, t), got {type(model).__name__}")
    return model


def build_method(
    name: str,
    *,
    target_data: Tensor,
    pretrained_model: nn.Module | Callable[[Tensor, Tensor], Tensor] | None,
    batch_size: int,
    steps: int,
    beta0: float = 4.0,
    schedule_kind: str = "cosine",
    schedule_options: Mapping[str, Any] | None = None,
    target_coupling: str = "ot",
    interpolant: Interpolant | None = None,
    diffusion: float = 0.0,
    cache_size: int | None = None,
    n_trajectories: int | None = None,
    time_grid: int | Tensor = 32,
    time_jitter: bool = False,
    solver_method: str = "euler",
    solver_steps: int = 32,
    refresh_every: int | None = None,
    chunk_size: int = 1024,
    time_weight: Callable[[Tensor], Tensor] | None = None,
    normalize: bool = True,
    seed: int = 0,
    device: str | torch.device = "auto",
) -> MethodSpec:
    """Build method ``name`` (one of :data:`METHODS`) for ``target_data`` (N, *shape).

    ``pretrained_model``: the pretrained velocity network (or an analytic callable); None is only
    allowed for "scratch". ``batch_size``: global batch. ``steps``: training steps (the schedule's
    length). ``beta0``, ``schedule_kind``, ``schedule_options`` (e.g. {"rate": 5} or
    {"n_stages": 4}): the cooling schedule of l2-reg / gft-*. ``target_coupling``: coupling of the
    target term of l2-reg / gft-* ("ot" default; ft uses "independent", ft-ot "ot", scratch
    "independent"). ``interpolant``/``diffusion``: the conditional path and its g (shared by both
    terms). With g > 0 ``pretrained_model`` must be the pretrained *SDE drift* for g (probability-flow
    velocity + g^2/2 score), and both caches use it as such: the drift cache and the coupling cache
    simulate the pretrained SDE by Euler–Maruyama (``solver_method="euler"``, anything else is
    refused), so the cached pairs of gft-coupling and reflow are (x0, X_1) of that SDE, a coupling
    of p0 and p_pre (THEORY T4). ``cache_size``: pairs in
    the coupling cache (gft-coupling, reflow; default N). ``n_trajectories`` (default min(N, 1024))
    and ``time_grid`` (default 32 midpoints; ``time_jitter=True``: a stratified random draw per
    build, see PretrainedDriftCache): drift cache (gft-drift). ``solver_method``,
    ``solver_steps``: the frozen pretrained sampler. ``refresh_every``: cache refresh period in
    pretrained batches (None: never). ``seed``: data order (seed) and caches (seed + 1).
    ``device`` ("auto" | "cpu" | "cuda[:N]", default "auto" like TrainConfig): where the target
    data, the frozen network and the caches live (use the training device; batches are moved to the
    model's device in any case). Cache build cost: the coupling cache runs the pretrained sampler on
    ``cache_size`` points, the drift cache on ``n_trajectories`` (once per refresh).
    """
    name, batch_size, steps, beta0, seed, dev = _check_scalars(name, target_data, batch_size, steps, beta0,
                                                               seed, device)
    n_items, shape = int(target_data.shape[0]), tuple(target_data.shape[1:])
    target_data = target_data.to(dev)
    interpolant = _check_interpolant(interpolant)
    _check_schedule_and_coupling(schedule_kind, schedule_options, target_coupling)
    cache_size = n_items if cache_size is None else check_positive_int("cache_size", cache_size)
    n_trajectories = (min(n_items, 1024) if n_trajectories is None
                      else check_positive_int("n_trajectories", n_trajectories))
    frozen = None if name == "scratch" else _frozen_pretrained(name, pretrained_model, dev)

    common = dict(batch_size=batch_size, interpolant=interpolant, diffusion=diffusion,
                  time_weight=time_weight, normalize=normalize, seed=seed)
    cache_common = dict(solver_method=solver_method, solver_steps=solver_steps, refresh_every=refresh_every,
                        device=dev, seed=seed + 1, diffusion=diffusion, chunk_size=chunk_size,
                        dtype=target_data.dtype)
    schedule = None
    if name in _GFT_LIKE:
        schedule = make_schedule(schedule_kind, beta0, steps, **dict(schedule_options or {}))
    objective = _objective(name, target_data, frozen, shape, common, cache_common,
                           target_coupling=target_coupling, n_trajectories=n_trajectories,
                           time_grid=time_grid, time_jitter=time_jitter, cache_size=cache_size)
    return MethodSpec(name=name, objective=objective, init_from_pretrained=name != "scratch",
                      schedule=schedule, description=METHOD_DESCRIPTIONS[name])


def _check_scalars(name: str, target_data: Tensor, batch_size: int, steps: int, beta0: float, seed: int,
                   device: str | torch.device) -> tuple[str, int, int, float, int, torch.device]:
    """:func:`build_method`'s method name, data, sizes, beta0, seed and device, validated in order."""
    name = check_choice("name", name, METHODS)
    check_tensor("target_data", target_data, min_ndim=2)
    batch_size = check_positive_int("batch_size", batch_size)
    steps = check_positive_int("steps", steps)
    beta0 = check_finite_number("beta0", beta0, minimum=0.0)
    seed = check_positive_int("seed", seed, minimum=0)
    return name, batch_size, steps, beta0, seed, resolve_device(device)


def _check_interpolant(interpolant: Interpolant | None) -> Interpolant:
    """The conditional path (default: ``Interpolant()``)."""
    interpolant = Interpolant() if interpolant is None else interpolant
    if not isinstance(interpolant, Interpolant):
        raise TypeError(
            f"interpolant must be a gftlib.paths.interpolants.Interpolant, got {type(interpolant).__name__}")
    return interpolant


def _check_schedule_and_coupling(schedule_kind: str, schedule_options: Mapping[str, Any] | None,
                                 target_coupling: str) -> None:
    """The cooling schedule's kind and options and the target coupling, checked for every method."""
    if schedule_options is not None and not isinstance(schedule_options, Mapping):
        raise TypeError(f"schedule_options must be a dict or None, got {type(schedule_options).__name__}")
    check_schedule_options(schedule_options or {})
    check_choice("schedule_kind", schedule_kind, SCHEDULES)  # validated for every method, used by some
    check_choice("target_coupling", target_coupling, COUPLINGS)


def _frozen_pretrained(name: str, pretrained_model: nn.Module | Callable[[Tensor, Tensor], Tensor] | None,
                       device: torch.device) -> nn.Module | Callable[[Tensor, Tensor], Tensor]:
    """The frozen pretrained network of every method but "scratch" (:func:`freeze`)."""
    if pretrained_model is None:
        raise ValueError(
            f"method {name!r} needs pretrained_model (only 'scratch' trains without one), got None")
    return freeze(pretrained_model, device)


def _objective(name: str, target_data: Tensor, frozen: Any, shape: tuple[int, ...], common: dict[str, Any],
               cache_common: dict[str, Any], *, target_coupling: str, n_trajectories: int,
               time_grid: int | Tensor, time_jitter: bool, cache_size: int) -> Objective:
    """The objective of method ``name`` (see the module docstring's table). ``common``: the target
    term's settings; ``cache_common``: the pretrained-term caches' settings."""
    interpolant = common["interpolant"]
    if name in ("scratch", "ft"):
        return FlowMatchingObjective(target_data, coupling="independent", **common)
    if name == "ft-ot":
        return FlowMatchingObjective(target_data, coupling="ot", **common)
    if name == "l2-reg":
        return FlowMatchingObjective(target_data, coupling=target_coupling,
                                     pretrained=TargetPathRegularizer(frozen), **common)
    if name == "gft-drift":
        term = PretrainedDriftCache(frozen, shape, n_trajectories=n_trajectories, time_grid=time_grid,
                                    t_eps=interpolant.t_eps, jitter=time_jitter, **cache_common)
        return FlowMatchingObjective(target_data, coupling=target_coupling, pretrained=term, **common)
    cache = PretrainedCouplingCache(frozen, shape, size=cache_size, interpolant=interpolant, **cache_common)
    if name == "gft-coupling":
        return FlowMatchingObjective(target_data, coupling=target_coupling, pretrained=cache, **common)
    return ReflowObjective(cache, batch_size=common["batch_size"], time_weight=common["time_weight"])  # reflow


def check_methods(methods: Any) -> tuple[str, ...]:
    """Validate a notebook's ``methods`` list: non-empty, names from :data:`METHODS`, no repeats."""
    if isinstance(methods, str) or not isinstance(methods, Iterable):
        raise TypeError(f"methods must be a list of method names from {METHODS}, got {methods!r}")
    methods = tuple(check_choice("methods[]", m, METHODS) for m in methods)
    if not methods:
        raise ValueError(f"methods must name at least one of {METHODS}, got []")
    if len(set(methods)) != len(methods):
        raise ValueError(f"methods must not repeat a name, got {list(methods)}")
    return methods


@dataclass(frozen=True)
class MethodRun:
    """One training run of a method (see :func:`run_method`). ``evals``: the evaluation rows, step 0
    first (``{"step": s, **evaluate(model, s)}``); ``logs``: the loss rows of the training history;
    ``timing``: the wall time of training at every evaluation
    (:class:`~gftlib.experiments.walltime.RunTiming`)."""

    spec: MethodSpec
    result: TrainResult
    evals: list[dict[str, Any]]
    logs: list[dict[str, Any]]
    timing: RunTiming

    @staticmethod
    def column(rows: list[dict[str, Any]], key: str, dtype: Any = np.float64) -> np.ndarray:
        """``rows[i][key]`` as an array (e.g. ``run.column(run.evals, "w2")``)."""
        return np.asarray([r[key] for r in rows], dtype=dtype)

    def final_beta(self, steps: int) -> float | None:
        """beta at the last of ``steps`` updates (None without a schedule)."""
        return None if self.spec.schedule is None else float(self.spec.schedule(steps - 1))


def first_update_caches(spec: MethodSpec) -> list[PretrainedCache]:
    """The pretrained-term caches that the first update of ``spec`` builds: reflow's pairs, and the
    cache of l2-reg / gft-* when beta at the first update (``schedule(0)``) is > 0 (the pretrained
    batch is drawn only then)."""
    objective = spec.objective
    if isinstance(objective, ReflowObjective):
        return [objective.cache]
    term = getattr(objective, "pretrained", None)
    if isinstance(term, PretrainedCache) and spec.schedule is not None and float(spec.schedule(0)) > 0:
        return [term]
    return []


def run_method(method: str, *, target_data: Tensor, pretrained_model: nn.Module | None,
               new_model: Callable[[], nn.Module], evaluate: Callable[[nn.Module, int], dict[str, float]],
               eval_key: str, train_config: TrainConfig, device: torch.device, **method_options: Any
               ) -> MethodRun:
    """Build ``method`` (:func:`build_method` with ``method_options``), start from the pretrained
    weights or ``new_model()`` as the method says, evaluate before training (step 0) and train with
    ``train_config`` (its ``eval_every`` calls ``evaluate``). Rows of the history that contain
    ``eval_key`` are evaluations; rows with ``"total"`` are loss logs.

    Wall time (:mod:`gftlib.experiments.walltime`): the clock starts before the method is built;
    the caches the first update would build (:func:`first_update_caches`) are built before step 0
    instead, so ``timing.setup_seconds`` holds them. A cache generation is a pure function of its
    seed and generation number (:class:`gftlib.gft.pretrained_cache.PretrainedCache`), so building
    it earlier changes no number of the run. Evaluations are timed and excluded."""
    clock = RunClock()
    spec = build_method(method, target_data=target_data, pretrained_model=pretrained_model, device=device,
                        **method_options)
    for cache in first_update_caches(spec):
        cache.prepare()
    if spec.init_from_pretrained:
        model = copy.deepcopy(pretrained_model).requires_grad_(True)
    else:
        model = new_model()
    model = model.to(device).train()
    clock.mark_setup()
    timed = clock.timed(evaluate)
    first = clock.timed(lambda m, step: evaluate(copy.deepcopy(m).eval(), step))(model, 0)
    res = train(model, spec.objective, train_config, schedule=spec.schedule, evaluate=timed)
    timing = clock.finish()
    evals = [{"step": 0, **first}] + [h for h in res.history if eval_key in h]
    logs = [h for h in res.history if "total" in h]
    return MethodRun(spec=spec, result=res, evals=evals, logs=logs, timing=timing)
