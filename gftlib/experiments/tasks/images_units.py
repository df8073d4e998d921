"""E2's independent replicates: one *unit* per seed, as in E1.

A unit is the image task with its ``seed`` replaced (:func:`seeded_task`): every random draw of the
task comes from that seed (:mod:`gftlib.experiments.tasks.images_data`, one stream per role), so a unit
has its own source training images, pretrained model (init and training; a loaded checkpoint is the
same in every unit), limited target sample, held-out set H, null samples and evaluation noise, and
every method of the unit is fine-tuned with the same seed (data order, noise, caches). Methods are
paired *within* a unit (they share the pretrained model, the target sample and H); units are
independent, so the seed-to-seed spread of a paired difference covers all three sources of
randomness (issue 11: target sample, pretrained model, training randomness).

References (null distances, the source check) are measured per unit against that unit's H and S;
figures show their means over units (:func:`pooled_reference`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from gftlib.eval.features import InceptionFeatures
from gftlib.experiments.checks import null_upper_bound, separation_tolerance
from gftlib.experiments.tasks import images as TI
from gftlib.experiments.tasks import images_eval as TIE
from gftlib.experiments.tasks.images_data import ImageTask
from gftlib.validation import check_positive_int

__all__ = ["seeded_task", "ImageUnit", "SourceCheck", "build_units", "run_units", "source_check",
           "reference_numbers", "pooled_reference", "heldout_decrease", "unit_distances", "unit_prdc",
           "diversity_references"]


def seeded_task(task: ImageTask, seed: int) -> ImageTask:
    """``task`` with every data draw and its pretraining taken from ``seed`` (one unit's task)."""
    return dataclasses.replace(task, seed=check_positive_int("seed", seed, minimum=0))


@dataclass(frozen=True)
class SourceCheck:
    """Check 2 of E2 for one unit: ``value`` = sqrt FD(pretrained, S); the bound it must not exceed is
    ``null_bound + tolerance`` (99.9 % prediction bound of the unit's ``null`` sqrt-FD replicates of
    held-out source samples, plus a quarter of the lower-estimated sqrt FD(H, S) = ``target``)."""

    value: float
    null: np.ndarray
    null_bound: float
    target: float
    tolerance: float

    @property
    def bound(self) -> float:
        return self.null_bound + self.tolerance


def source_check(src: TIE.SourceReference) -> SourceCheck:
    """:class:`SourceCheck` from a unit's :class:`~gftlib.experiments.tasks.images_eval.SourceReference`.

    sqrt(FD) is the W2 distance between Gaussian fits of the features, a metric, so
    :func:`~gftlib.experiments.checks.separation_tolerance` (triangle inequality) applies: a model within
    the bound is at least three times closer to the source than the target is."""
    null = np.sqrt(np.asarray(src.null_fd, dtype=np.float64))
    bound = null_upper_bound(null)
    target = float(np.sqrt(src.target_fd))
    return SourceCheck(value=float(np.sqrt(src.pretrained_fd)), null=null, null_bound=bound, target=target,
                       tolerance=separation_tolerance([target - bound]))


@dataclass(frozen=True)
class ImageUnit:
    """One seed's replicate: its ``task`` (:func:`seeded_task`), the pretrained model's evaluation
    ``pretrained``, its reference distances to H ``ref`` and to S ``src``."""

    seed: int
    task: ImageTask
    pretrained: TI.Generated
    ref: TIE.DistanceReference
    src: TIE.SourceReference


def build_units(task: ImageTask, seeds: Sequence[int], *, inception: InceptionFeatures | None = None,
                device: str | torch.device = "cpu") -> list[ImageUnit]:
    """Pretrain (cached) and measure the references of one unit per seed, in the order of ``seeds``."""
    if not seeds or len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds must be a non-empty list of distinct integers, got {list(seeds)!r}")
    units = []
    for seed in seeds:
        t = seeded_task(task, seed)
        pre = TI.generate_pretrained(t, device=device)
        units.append(ImageUnit(seed=int(seed), task=t, pretrained=pre,
                               ref=TIE.reference_metrics(t, pre, inception=inception, device=device),
                               src=TIE.source_reference(t, pre, device=device)))
    return units


def run_units(units: Sequence[ImageUnit], methods: Sequence[str], config: TI.ImageFinetuneConfig, *,
              device: str | torch.device = "cpu") -> dict[str, list[TI.ImageRun]]:
    """``{method: [run of each unit]}``: every method fine-tuned in every unit with the unit's seed."""
    return TI.RUNNER.run_methods([(u.task, u.seed) for u in units], methods, config, device=device)


def reference_numbers(unit: ImageUnit, metrics: Sequence[str]) -> dict[str, Any]:
    """The JSON record of one unit's references: per metric the null mean, std, values and 99.9 %
    bound and the train-distribution / source / noise / pretrained distances; the pretrained path
    length and straightness; the source check."""
    ref = unit.ref
    out: dict[str, Any] = {
        k: {"null_mean": float(ref.null_values(k).mean()), "null_std": float(ref.null_values(k).std(ddof=1)),
            "null_values": ref.null_values(k).tolist(), "null_bound_99.9": null_upper_bound(ref.null_values(k)),
            "train_distribution": getattr(ref.train_ref, k), "source": getattr(ref.source, k),
            "noise": getattr(ref.noise, k), "pretrained": getattr(ref.pretrained, k)} for k in metrics}
    check = source_check(unit.src)
    out["pretrained_path_length"] = unit.pretrained.mean_path_length
    out["pretrained_straightness"] = unit.pretrained.mean_straightness
    out["source_check"] = {"sqrt_fd_pretrained_to_source": check.value, "sqrt_fd_null_values": check.null.tolist(),
                           "sqrt_fd_null_bound_99.9": check.null_bound, "sqrt_fd_target_to_source": check.target,
                           "model_tolerance": check.tolerance}
    return out


def pooled_reference(units: Sequence[ImageUnit], metric: str) -> dict[str, float]:
    """Means over units of the ``metric`` references (``null_mean``, ``null_std``, ``train_distribution``,
    ``source``, ``noise``, ``pretrained``): the reference lines of the figures and the scale of the
    equivalence margin. ``null_std`` is the root mean square of the units' null stds."""
    if not units:
        raise ValueError("units must not be empty")
    nulls = [u.ref.null_values(metric) for u in units]
    return {"null_mean": float(np.mean([v.mean() for v in nulls])),
            "null_std": float(np.sqrt(np.mean([v.var(ddof=1) for v in nulls]))),
            **{name: float(np.mean([getattr(getattr(u.ref, attr), metric) for u in units]))
               for name, attr in (("train_distribution", "train_ref"), ("source", "source"), ("noise", "noise"),
                                  ("pretrained", "pretrained"))}}


def heldout_decrease(units: Sequence[ImageUnit], runs: Sequence[TI.ImageRun], method: str) -> TIE.PairedDecrease:
    """Paired test of check 3 for ``method``: d_i = mean over units of (initial - final) held-out CFM
    loss of pair i (each unit's own fixed pairs; pairs are i.i.d. within a unit and units are
    independent, so the d_i are i.i.d.). ``runs``: the method's run of each unit, in unit order."""
    if len(runs) != len(units):
        raise ValueError(f"runs must hold one run per unit ({len(units)}), got {len(runs)}")
    before = np.mean([TIE.initial_heldout_loss(u.task, method, u.pretrained) for u in units], axis=0)
    after = np.mean([np.asarray(r.final.heldout_loss, dtype=np.float64) for r in runs], axis=0)
    return TIE.paired_decrease(before, after)


def unit_distances(units: Sequence[ImageUnit], runs: Mapping[str, Sequence[TI.ImageRun]], *,
                   inception: InceptionFeatures | None = None,
                   device: str | torch.device = "cpu") -> dict[str, list[TIE.DistanceSet]]:
    """``{method: [distances to its unit's H of the final samples, for each unit]}`` (one feature pass
    over H per unit)."""
    methods = list(runs)
    out: dict[str, list[TIE.DistanceSet]] = {m: [] for m in methods}
    for i, u in enumerate(units):
        d = TIE.distances(u.task, [runs[m][i].final.samples for m in methods], inception=inception, device=device)
        for m, value in zip(methods, d):
            out[m].append(value)
    return out


def unit_prdc(units: Sequence[ImageUnit], runs: Mapping[str, Sequence[TI.ImageRun]], *,
              device: str | torch.device = "cpu") -> dict[str, list[dict[str, float]]]:
    """``{method: [precision / recall / density / coverage (k = 5) of the final samples against its
    unit's H in the Fréchet feature space, for each unit]}``."""
    methods = list(runs)
    out: dict[str, list[dict[str, float]]] = {m: [] for m in methods}
    for i, u in enumerate(units):
        for m, value in zip(methods, TIE.feature_prdc(u.task, [runs[m][i].final.samples for m in methods],
                                                      device=device)):
            out[m].append(value)
    return out


def diversity_references(units: Sequence[ImageUnit], *,
                         device: str | torch.device = "cpu") -> dict[str, dict[str, float]]:
    """Means over units of the feature-space diversity of two references against each unit's H:
    ``"null_sample"`` (an independent held-out target sample: a perfect model) and ``"pretrained"``."""
    per_unit = [TIE.feature_prdc(u.task, [u.task.target_null(0), u.pretrained.samples], device=device)
                for u in units]
    return {name: {k: float(np.mean([p[i][k] for p in per_unit])) for k in per_unit[0][i]}
            for i, name in enumerate(("null_sample", "pretrained"))}
