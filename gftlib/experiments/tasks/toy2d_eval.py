"""Evaluation helpers of the 2-D task (:mod:`gftlib.experiments.tasks.toy2d`) used by E1, E3 and E4.

:func:`reference_distances` (:class:`W2Reference`: the W2 noise floor of the task's evaluation
sizes and the source / target / pretrained distances; :func:`w2_floors` is its model-free part,
shared with :mod:`gftlib.experiments.scenarios`), :func:`stability` (across-seed spread of the W2
curve, largest upward jump, early degradation), :func:`quality_vs_nfe` (Euler 1..64 steps and
dopri5), :func:`nfe_to_reach`, :func:`coverage` (diversity) and
:func:`independent_coupling_distance` (THEORY T5's path-length bound). Margins and resolvability
of a "closer than the pretrained model" check: :func:`gftlib.experiments.checks.difference_margin`
with ``W2Reference.floor_se`` and :func:`gftlib.experiments.checks.gain_is_resolvable`.
Conventions: t = 0 noise, t = 1 data; points are ``(n, 2)``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from gftlib.data.datasets import make_2d
from gftlib.eval.metrics import mean_path_length, wasserstein2
from gftlib.eval.stability import early_degradation, max_upward_jump
from gftlib.experiments.cache import cached_torch
from gftlib.experiments.tasks.runner import single_thread
from gftlib.experiments.tasks.toy2d import EULER_STEPS, FinetuneRun, Task2D, role_generator, sample_model
from gftlib.solvers.ode import sample_ode
from gftlib.validation import check_finite_number, check_positive_int, resolve_device

__all__ = ["W2Reference", "w2_floors", "reference_distances", "Stability", "stability", "QualityCurve",
           "quality_vs_nfe", "nfe_to_reach", "coverage", "independent_coupling_distance"]


@dataclass(frozen=True)
class W2Reference:
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


def w2_floors(task: Task2D, n_repeats: int, target_generator: torch.Generator,
              source_generator: torch.Generator) -> dict[str, float]:
    """The model-free fields of :class:`W2Reference`: ``n_repeats`` fresh target samples of size
    ``n_eval`` drawn from ``target_generator``, then as many source samples from
    ``source_generator`` (the same generator may serve both), each against its held-out set
    (``floor``/``floor_se``: mean and std, ddof = 1; ``source_floor``/``source_floor_se``), and
    ``source_target``: W2(first source sample, target held-out)."""
    tgt_held, src_held = task.target_heldout(), task.source_heldout()
    tgt = [make_2d(task.target, task.n_eval, generator=target_generator) for _ in range(n_repeats)]
    src = [make_2d(task.source, task.n_eval, generator=source_generator) for _ in range(n_repeats)]
    w_t = [wasserstein2(x, tgt_held) for x in tgt]
    w_s = [wasserstein2(x, src_held) for x in src]
    return {"floor": float(np.mean(w_t)), "floor_se": float(np.std(w_t, ddof=1)),
            "source_floor": float(np.mean(w_s)), "source_floor_se": float(np.std(w_s, ddof=1)),
            "source_target": wasserstein2(src[0], tgt_held)}


def reference_distances(task: Task2D, pretrained: nn.Module, *, n_repeats: int = 10,
                        device: str | torch.device = "cpu") -> W2Reference:
    """The reference distances of :class:`W2Reference` for ``task`` and its pretrained model
    (``pretrain(task)``; cached on the task, ``n_repeats`` and the device type)."""
    n_repeats = check_positive_int("n_repeats", n_repeats, minimum=2)
    dev = resolve_device(device)

    def build() -> W2Reference:
        floors = w2_floors(task, n_repeats, role_generator(task.seed, "floor"),
                           role_generator(task.seed, "source_eval"))
        pre = sample_model(task, pretrained, device=dev)
        return W2Reference(**floors, pretrained_target=wasserstein2(pre, task.target_heldout()),
                           pretrained_source=wasserstein2(pre, task.source_heldout()))

    key = {"kind": "tasks2d-reference", "task": task.as_dict(), "n_repeats": n_repeats, "device": dev.type}
    with single_thread():
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
    with single_thread():
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


def independent_coupling_distance(task: Task2D) -> float:
    """E|x1 - x0| for x0 ~ N(0, I) (the evaluation noise) independent of x1 ~ the target training
    set, averaged over all pairs: THEORY T5's bound on the path length of the flow of the
    independent coupling (Jensen)."""
    x0 = task.eval_noise().double()
    x1 = task.target_train().double()
    return float(torch.cdist(x0, x1).mean())
