"""E5's profiles, the validated setup of its parameters cell, and its claim rows.

:data:`PROFILE_TABLE` holds the notebook's user-facing knobs per profile, :data:`PROFILE_SETTINGS`
the internal sizes (model, pretraining, evaluation). :func:`resolve_setup` builds (and so validates)
one :class:`gftlib.experiments.tasks.toy2d.Task2D` per seed and the four scenario budgets;
:func:`claim_rows` turns per-seed values into claim rows (:func:`gftlib.experiments.claims.compare_claim`,
paired by seed: every method of a seed shares its target sample, pretrained model and noise; the rows
are built by :func:`gftlib.experiments.seeded2d.claim_rows`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from gftlib.experiments import seeded2d as S2
from gftlib.experiments.tasks import toy2d as T2
from gftlib.experiments.methods import check_methods
from gftlib.experiments.profiles import PROFILES, profile_values
from gftlib.experiments.scenarios import BASELINES, GFT_FORMS, SCENARIO_METHODS, Budget, task_for_seed
from gftlib.validation import check_choice, check_finite_number, check_positive_int, resolve_device

__all__ = ["PROFILE_TABLE", "PROFILE_SETTINGS", "DRY_RUN_SIZES", "DRY_RUN_SETTINGS", "ScenarioSetup", "resolve_setup", "claim_rows"]

#: User-facing knobs of notebooks/e5_scenarios.ipynb per profile.
PROFILE_TABLE: dict[str, dict[str, Any]] = {
    "smoke": {"n_seeds": 2, "source": "checkerboard", "target": "moons", "n_targets": [32, 64],
              "steps": 20, "batch_size": 64, "lr": 5e-3, "stress_lr": 2e-2, "diffusion": 0.5, "beta0": 2.0,
              "schedule_kind": "cosine", "methods": ["ft-ot", "gft-drift"]},
    "quick": {"n_seeds": 5, "source": "checkerboard", "target": "moons", "n_targets": [32, 128, 512],
              "steps": 80, "batch_size": 64, "lr": 5e-3, "stress_lr": 2e-2, "diffusion": 0.5, "beta0": 2.0,
              "schedule_kind": "cosine", "methods": ["ft", "ft-ot", "l2-reg", "gft-drift", "gft-coupling"]},
    "paper": {"n_seeds": 10, "source": "checkerboard", "target": "moons", "n_targets": [32, 128, 512],
              "steps": 2000, "batch_size": 256, "lr": 1e-3, "stress_lr": 5e-3, "diffusion": 0.5, "beta0": 2.0,
              "schedule_kind": "cosine", "methods": ["ft", "ft-ot", "l2-reg", "gft-drift", "gft-coupling"]},
}

#: Internal sizes per profile (model, pretraining, evaluation, caches).
PROFILE_SETTINGS: dict[str, dict[str, Any]] = {
    "smoke": {"hidden": 48, "depth": 3, "time_features": 8, "n_source": 1024, "pretrain_steps": 150,
              "pretrain_batch": 128, "pretrain_lr": 1e-2, "n_target_pool": 1024, "n_heldout": 256,
              "n_eval": 256, "eval_steps": 8, "cache_size": 256, "n_trajectories": 128, "refresh_every": 15,
              "stress_evals": 3, "em_steps": 24, "n_repeats": 3},
    "quick": {"hidden": 64, "depth": 3, "time_features": 16, "n_source": 4096, "pretrain_steps": 400,
              "pretrain_batch": 128, "pretrain_lr": 5e-3, "n_target_pool": 4096, "n_heldout": 512,
              "n_eval": 512, "eval_steps": 8, "cache_size": 1024, "n_trajectories": 512, "refresh_every": 40,
              "stress_evals": 8, "em_steps": 32, "n_repeats": 5},
    "paper": {"hidden": 256, "depth": 3, "time_features": 32, "n_source": 16384, "pretrain_steps": 20000,
              "pretrain_batch": 512, "pretrain_lr": 1e-3, "n_target_pool": 8192, "n_heldout": 1024,
              "n_eval": 1024, "eval_steps": 16, "cache_size": 4096, "n_trajectories": 1024,
              "refresh_every": 50, "stress_evals": 20, "em_steps": 64, "n_repeats": 20},
}


#: Dry-run sizes (``dry_run=True``): any profile's scenarios and methods at tiny sizes, for the tests.
DRY_RUN_SIZES: dict[str, Any] = {"n_seeds": 2, "n_targets": [16, 32], "steps": 6, "batch_size": 8}
DRY_RUN_SETTINGS: dict[str, Any] = {
    "hidden": 8, "time_features": 4, "n_source": 64, "pretrain_steps": 4, "pretrain_batch": 32,
    "n_target_pool": 64, "n_heldout": 32, "n_eval": 32, "eval_steps": 2, "cache_size": 16,
    "n_trajectories": 8, "refresh_every": 3, "stress_evals": 2, "em_steps": 4, "n_repeats": 2}

@dataclass(frozen=True)
class ScenarioSetup:
    """What E5 needs after its parameters cell. ``tasks[n]``: one Task2D per seed with ``n_target = n``
    (the same seeds, data streams and pretrained models for every n: smaller training sets are the
    first points of larger ones); budgets: ``base`` (limited data, efficiency), ``stress`` (learning
    rate ``stress_lr``, W2 curve), ``sde`` (g = ``diffusion``)."""

    tasks: dict[int, tuple[T2.Task2D, ...]]
    seeds: tuple[int, ...]
    methods: tuple[str, ...]
    base: Budget
    stress: Budget
    sde: Budget
    n_repeats: int
    device: torch.device

    @property
    def n_largest(self) -> int:
        return max(self.tasks)


def _n_targets(value: Any, pool: int) -> tuple[int, ...]:
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or not value:
        raise ValueError(f"n_targets must be a non-empty list of training-set sizes, got {value!r}")
    sizes = tuple(check_positive_int("n_targets[]", v, minimum=2) for v in value)
    if len(set(sizes)) != len(sizes) or any(n > pool for n in sizes):
        raise ValueError(f"n_targets must be distinct sizes in [2, {pool}] (the target pool), got {list(value)}")
    return tuple(sorted(sizes))


def resolve_setup(params: Mapping[str, Any]) -> ScenarioSetup:
    """Build and validate E5's tasks and budgets from the resolved notebook parameters."""
    s = profile_values(PROFILE_SETTINGS, check_choice("profile", params["profile"], PROFILES),
                       dry_run=params.get("dry_run", False), dry_run_sizes=DRY_RUN_SETTINGS)
    n_seeds = check_positive_int("n_seeds", params["n_seeds"])
    methods = check_methods(params["methods"])
    refused = [m for m in methods if m not in SCENARIO_METHODS]
    if refused:
        raise ValueError(f"methods must be fine-tuning methods, each one of {', '.join(SCENARIO_METHODS)} "
                         "(E5 compares fine-tuning of the pretrained model: 'scratch' does not start from it, "
                         f"'reflow' has no target term); got {list(methods)}, refused {refused}")
    sizes = _n_targets(params["n_targets"], s["n_target_pool"])
    if sizes[-1] > s["n_heldout"]:
        raise ValueError(f"n_targets must not exceed n_heldout={s['n_heldout']} (the memorisation measure "
                         f"needs a held-out set of the training set's size), got {list(sizes)}")
    base_task = T2.Task2D(source=params["source"], target=params["target"], n_target=sizes[-1],
                          n_target_pool=s["n_target_pool"], n_heldout=s["n_heldout"], n_eval=s["n_eval"],
                          n_source=s["n_source"], seed=params["seed"], hidden=s["hidden"], depth=s["depth"],
                          time_features=s["time_features"], pretrain_steps=s["pretrain_steps"],
                          pretrain_batch=s["pretrain_batch"], pretrain_lr=s["pretrain_lr"],
                          eval_steps=s["eval_steps"])
    seeds = tuple(base_task.seed + i for i in range(n_seeds))
    tasks = {n: tuple(task_for_seed(base_task, sd, n_target=n) for sd in seeds) for n in sizes}
    common = dict(steps=params["steps"], batch_size=params["batch_size"], beta0=params["beta0"],
                  schedule_kind=params["schedule_kind"], cache_size=s["cache_size"],
                  n_trajectories=s["n_trajectories"], refresh_every=s["refresh_every"], em_steps=s["em_steps"])
    base = Budget(lr=params["lr"], **common)
    check_finite_number("stress_lr", params["stress_lr"], minimum=0.0, strict=True)  # Budget names it "lr"
    stress = Budget(lr=params["stress_lr"], n_evals=min(s["stress_evals"], int(params["steps"])), **common)
    g = check_finite_number("diffusion", params["diffusion"], minimum=0.0, strict=True)
    sde = Budget(lr=params["lr"], diffusion=g, **common)
    return ScenarioSetup(tasks=tasks, seeds=seeds, methods=methods, base=base, stress=stress,
                         sde=sde, n_repeats=s["n_repeats"], device=resolve_device(params["device"]))


def claim_rows(claim: str, metric: str, better: str, values: Mapping[str, Sequence[float]], *,
               scenario: str, figure: str, seeds: Sequence[int]) -> list[dict[str, Any]]:
    """One paired claim row per (GFT form, baseline) present in ``values`` ({method: per-seed values}):
    :func:`gftlib.experiments.seeded2d.claim_rows` for one difference claim, in E5's order (GFT forms
    as :data:`gftlib.experiments.scenarios.GFT_FORMS`, baselines as ``BASELINES``)."""
    spec = {"claim": claim, "metric": metric, "better": better, "figure": figure}
    return S2.claim_rows([spec], {m: {metric: v} for m, v in values.items()}, scenario=scenario,
                         seeds=seeds, figure_prefix="", gft_forms=GFT_FORMS, baselines=BASELINES)
