"""Seed units of the 2-D experiments (E1, E3): one source/target pair, one seed, every method.

A *unit* ``(pair, seed)`` draws its own target sample, held-out set, evaluation noise and
pretrained model (``Task2D(seed=seed)``) and trains every method with that seed (data order, noise,
caches). All methods of a unit therefore share the data, the pretrained model and the evaluation
noise: their per-unit values are paired, and claims use paired tests over units
(:func:`gftlib.experiments.claims.compare_claim` with ``paired=True``). Runs are cached by
:func:`gftlib.experiments.tasks.toy2d.finetune`.

:func:`unit_metrics` turns a unit's runs into the per-method numbers of the claims (this project's
measures, THEORY "Measures used by the experiments"; :mod:`gftlib.eval.stability`, :mod:`gftlib.eval.diversity`).
The metrics in :data:`WALL_TIME_KEYS` are wall times (seconds of training, evaluations excluded,
:mod:`gftlib.experiments.walltime`): they depend on the machine and its load, and a cached run keeps
the time of its first computation; a notebook records them apart from the reproducible numbers
(:data:`gftlib.experiments.report.MACHINE_DEPENDENT_KEY`) and flags their claim rows
``machine_dependent``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from gftlib.data.datasets import make_2d
from gftlib.eval.diversity import prdc
from gftlib.experiments.tasks import toy2d as T2
from gftlib.experiments.tasks.toy2d_eval import W2Reference, reference_distances
from gftlib.experiments.claims import compare_claim
from gftlib.eval.stability import (
    early_degradation,
    instantaneous_variance,
    max_upward_jump,
    relative_level,
    spearman_rho,
    seconds_to_reach,
    steps_to_reach,
)

__all__ = ["Unit", "pair_name", "parse_pairs", "seeded_task", "run_unit", "unit_metrics", "coverage_se",
           "add_speed", "claim_rows", "BASELINES", "GFT_FORMS", "WALL_TIME_KEYS"]

#: The baselines every claim is tested against (one row each) and the GFT forms.
BASELINES: tuple[str, ...] = ("ft", "ft-ot", "l2-reg")
GFT_FORMS: tuple[str, ...] = ("gft-coupling", "gft-drift")

#: The per-method metrics that are wall times in seconds (machine- and load-dependent).
WALL_TIME_KEYS: tuple[str, ...] = ("seconds_to_level", "setup_seconds", "train_seconds")


def pair_name(source: str, target: str) -> str:
    return f"{source}->{target}"


def parse_pairs(pairs: Any) -> list[tuple[str, str]]:
    """Validate ``pairs``: a non-empty list of [source, target] names (repeats refused)."""
    if isinstance(pairs, (str, bytes)) or not isinstance(pairs, Sequence) or not pairs:
        raise ValueError(f"pairs must be a non-empty list of [source, target] pairs, got {pairs!r}")
    out = []
    for p in pairs:
        if isinstance(p, (str, bytes)) or not isinstance(p, Sequence) or len(p) != 2:
            raise ValueError(f"pairs must hold [source, target] pairs of names, got {p!r}")
        T2.Task2D(source=p[0], target=p[1])  # validates the names with the library's message
        out.append((str(p[0]), str(p[1])))
    if len(set(out)) != len(out):
        raise ValueError(f"pairs must not repeat a pair, got {pairs!r}")
    return out


def seeded_task(task: T2.Task2D, seed: int) -> T2.Task2D:
    """``task`` with its data and pretraining drawn from ``seed`` (one unit's task)."""
    return dataclasses.replace(task, seed=int(seed))


@dataclass(frozen=True)
class Unit:
    """One (pair, seed): its task, pretrained model, reference distances and one run per method."""

    pair: str
    seed: int
    task: T2.Task2D
    pretrained: nn.Module
    ref: W2Reference
    runs: dict[str, T2.FinetuneRun]


def run_unit(setup: T2.TaskSetup, seed: int, methods: Sequence[str]) -> Unit:
    """Pretrain (cached), measure the references and fine-tune every method for one seed."""
    task = seeded_task(setup.task, seed)
    pre = T2.pretrain(task, device=setup.device)
    ref = reference_distances(task, pre, n_repeats=setup.n_repeats, device=setup.device)
    per_method = T2.run_methods(task, methods, [seed], setup.config, device=setup.device)
    runs = {m: rs[0] for m, rs in per_method.items()}
    return Unit(pair=pair_name(task.source, task.target), seed=int(seed), task=task, pretrained=pre,
                ref=ref, runs=runs)


def coverage_se(task: T2.Task2D, n_repeats: int, *, k: int = 5) -> float:
    """Standard deviation (ddof = 1) over ``n_repeats`` fresh target samples of their coverage of the
    held-out set: the resolution of one coverage evaluation at the task's sizes."""
    gen = torch.Generator().manual_seed(10_007 + task.seed)
    held = task.target_heldout()
    vals = [prdc(held, make_2d(task.target, task.n_eval, generator=gen), k=k)["coverage"]
            for _ in range(n_repeats)]
    return float(np.std(vals, ddof=1))


def unit_metrics(unit: Unit) -> dict[str, dict[str, float]]:
    """Per method of ``unit``: final ``w2``, ``path_length``, ``straightness``, ``dopri_nfe``;
    stability ``iv_loss`` (instantaneous variance of the logged target loss), ``iv_w2`` (of the W2
    evaluations), ``spearman`` (rho of step vs W2), ``max_jump``, ``early_degradation``; diversity
    ``precision``, ``recall``, ``density``, ``coverage`` of the final EMA samples vs the held-out set;
    wall times (:data:`WALL_TIME_KEYS`) ``setup_seconds`` (method and caches) and ``train_seconds``
    (the whole run), in seconds of training, evaluations excluded."""
    held = unit.task.target_heldout()
    out = {}
    for m, r in unit.runs.items():
        x = T2.sample_model(unit.task, T2.load_model(unit.task, r.ema_state))
        out[m] = {"w2": r.final_w2, "path_length": r.final_path_length,
                  "straightness": r.final_straightness, "dopri_nfe": r.final_dopri_nfe,
                  "iv_loss": instantaneous_variance(r.loss_target), "iv_w2": instantaneous_variance(r.w2),
                  "spearman": spearman_rho(r.eval_steps, r.w2), "max_jump": max_upward_jump(r.w2),
                  "early_degradation": early_degradation(r.eval_steps, r.w2), **prdc(held, x),
                  "setup_seconds": r.setup_seconds, "train_seconds": r.train_seconds}
    return out


def add_speed(unit: Unit, metrics: dict[str, dict[str, float]], *, tolerance: float = 0.05,
              baselines: Sequence[str] = BASELINES) -> float | None:
    """Add ``steps_to_level`` to every method: the first evaluation step whose W2 is within
    ``tolerance`` of the best final W2 among the ``baselines`` present, and ``seconds_to_level``:
    the training wall time at that evaluation (:func:`gftlib.eval.stability.seconds_to_reach` of
    ``train_seconds_at_eval``). A run that never reaches the level is censored at the budget
    (``censored`` = 1, the last evaluation's step and seconds). Returns the level (None when no
    baseline ran)."""
    present = [b for b in baselines if b in unit.runs]
    if not present:
        return None
    level = relative_level(min(unit.runs[b].final_w2 for b in present), tolerance=tolerance)
    for m, r in unit.runs.items():
        s = steps_to_reach(r.eval_steps, r.w2, level)
        sec = seconds_to_reach(r.train_seconds_at_eval, r.w2, level)
        metrics[m]["censored"] = float(not np.isfinite(s))
        metrics[m]["steps_to_level"] = float(r.eval_steps[-1]) if not np.isfinite(s) else s
        metrics[m]["seconds_to_level"] = float(r.train_seconds_at_eval[-1]) if not np.isfinite(sec) else sec
    return level


def claim_rows(claims: Sequence[Mapping[str, Any]], values: Mapping[str, Mapping[str, Sequence[float]]],
               *, scenario: str, seeds: Sequence[int], figure_prefix: str,
               gft_forms: Sequence[str] = GFT_FORMS, baselines: Sequence[str] = BASELINES) -> list[dict]:
    """One paired claim row per (claim, GFT form, baseline) present in ``values[method][metric]``
    (values per unit, the same unit order for every method). Each claim is a mapping with ``claim``,
    ``metric``, ``better``, ``figure`` and, for equivalence claims, ``kind`` and ``margin``; a claim
    with ``"machine_dependent": True`` (a wall-time metric) gives rows flagged so."""
    rows = []
    for c in claims:
        for g in gft_forms:
            for b in baselines:
                if g not in values or b not in values:
                    continue
                rows.append(compare_claim(
                    c["claim"], c["metric"], c["better"], values[g][c["metric"]], values[b][c["metric"]],
                    gft_method=g, baseline_method=b, scenario=scenario, figure=f"{figure_prefix}{c['figure']}",
                    paired=True, kind=c.get("kind", "difference"), margin=c.get("margin"),
                    margin_reason=c.get("margin_reason", ""), seeds=seeds,
                    machine_dependent=bool(c.get("machine_dependent", False))))
    return rows
