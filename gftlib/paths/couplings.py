"""Minibatch couplings of source (noise) and target (data) batches.

A coupling takes ``x0: (n, *shape)`` (source, t = 0) and ``x1: (n, *shape)`` (data, t = 1) and returns
a :class:`CoupledBatch` whose rows are the pairs: ``x0`` unchanged and ``x1[index]``.

- ``independent``: a uniformly random permutation of x1 drawn from the generator.
- ``ot``: exact minibatch OT for the squared-Euclidean cost of the flattened inputs (an assignment
  problem, solved with ``scipy.optimize.linear_sum_assignment``); a permutation, every source and
  every target point used exactly once.
- ``sinkhorn``: entropic OT plan P from POT (``ot.sinkhorn``, uniform marginals). For every source
  row i a partner j is drawn from the normalised row P[i] / P[i].sum() with the generator, so every
  source point is used exactly once, while a target point may be used several times or not at all.
  The pairs are an exact sample of the plan's conditional P(j | i); their empirical cost has
  expectation <P, C> (the plan's cost with C the per-pair cost).

Cost matrices and plans are computed on the CPU in float64; the results are returned on the
inputs' device and dtype. Degenerate input raises; no coupling ever falls back to another.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch
from torch import Tensor

from gftlib.validation import (
    check_choice,
    check_finite_number,
    check_positive_int,
    check_same_shape,
    check_tensor,
)

__all__ = [
    "CoupledBatch",
    "Coupling",
    "ot_permutation",
    "squared_cost_matrix",
    "IndependentCoupling",
    "ExactOTCoupling",
    "SinkhornCoupling",
    "make_coupling",
    "COUPLINGS",
]

COUPLINGS: tuple[str, ...] = ("independent", "ot", "sinkhorn")


@dataclass(frozen=True)
class CoupledBatch:
    """Paired rows: ``(x0[i], x1[i])`` is pair i. ``x1 = x1_input[index]``; ``index``: (n,) long
    (a permutation for ``independent`` and ``ot``; possibly with repeats for ``sinkhorn``)."""

    x0: Tensor
    x1: Tensor
    index: Tensor


class Coupling(Protocol):
    def __call__(self, x0: Tensor, x1: Tensor, *,
                 generator: torch.Generator | None = None) -> CoupledBatch: ...


def _check_batches(x0: Tensor, x1: Tensor, *, min_n: int) -> None:
    check_tensor("x0", x0, min_ndim=2)
    check_tensor("x1", x1, min_ndim=2)
    if x0.shape[0] != x1.shape[0]:
        raise ValueError(
            f"x0 and x1 must have the same batch size, got {x0.shape[0]} and {x1.shape[0]}"
        )
    check_same_shape("x0", x0, "x1", x1)
    if x0.shape[0] < min_n:
        raise ValueError(f"the batch size must be >= {min_n} for this coupling, got n={x0.shape[0]}")


def _check_generator(generator: Any, who: str) -> torch.Generator:
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"{who} needs generator=torch.Generator, got {type(generator).__name__}")
    return generator


def squared_cost_matrix(x0: Tensor, x1: Tensor) -> np.ndarray:
    """C[i, j] = |x0[i] - x1[j]|^2 of the flattened rows, float64 numpy array (n, n), computed on CPU.

    GEMM form |a|^2 + |b|^2 - 2 a.b in float64, after centring both sets on their joint mean (the
    cost is translation invariant; centring shrinks the norms and so the cancellation error). The
    absolute error per entry is at most about ``4 d eps (|a_i|^2 + |b_j|^2)`` with d the flattened
    dimension and eps = 2.2e-16 (centred norms); negative round-off is clamped to 0. Memory is
    O(n^2 + n d), never the (n, n, d) difference tensor.
    """
    a = x0.detach().reshape(x0.shape[0], -1).to("cpu", torch.float64)
    b = x1.detach().reshape(x1.shape[0], -1).to("cpu", torch.float64)
    centre = torch.cat([a, b]).mean(dim=0, keepdim=True)
    a = a - centre
    b = b - centre
    cost = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * (a @ b.T)
    return cost.clamp_(min=0.0).numpy()


def ot_permutation(x0: Tensor, x1: Tensor) -> Tensor:
    """perm (n,) long, on x0's device, such that sum_i |x0[i] - x1[perm[i]]|^2 is minimal."""
    from scipy.optimize import linear_sum_assignment

    _check_batches(x0, x1, min_n=2)
    cost = squared_cost_matrix(x0, x1)
    rows, cols = linear_sum_assignment(cost)
    if not (np.array_equal(rows, np.arange(len(rows))) and len(np.unique(cols)) == len(cols)):
        raise RuntimeError("linear_sum_assignment did not return a permutation")  # never expected
    return torch.as_tensor(cols, dtype=torch.long, device=x0.device)


def _pair(x0: Tensor, x1: Tensor, index: Tensor) -> CoupledBatch:
    index = index.to(x1.device)
    return CoupledBatch(x0=x0, x1=x1[index], index=index)


class IndependentCoupling:
    """Independent pairing: x1 randomly permuted with ``generator`` (required)."""

    name = "independent"

    def __repr__(self) -> str:
        return "IndependentCoupling()"

    def __call__(self, x0: Tensor, x1: Tensor, *, generator: torch.Generator | None = None) -> CoupledBatch:
        _check_batches(x0, x1, min_n=1)
        gen = _check_generator(generator, "IndependentCoupling")
        perm = torch.randperm(x0.shape[0], generator=gen, device=gen.device)
        return _pair(x0, x1, perm)


class ExactOTCoupling:
    """Exact minibatch OT (squared Euclidean): a permutation minimising the total cost. Deterministic;
    ``generator`` is accepted for interface compatibility and unused."""

    name = "ot"

    def __repr__(self) -> str:
        return "ExactOTCoupling()"

    def __call__(self, x0: Tensor, x1: Tensor, *, generator: torch.Generator | None = None) -> CoupledBatch:
        return _pair(x0, x1, ot_permutation(x0, x1))


class SinkhornCoupling:
    """Entropic OT coupling: POT's Sinkhorn plan, one partner per source row drawn from that row.

    ``reg`` > 0 is the entropic regularisation; with ``normalize_cost=True`` (default) the cost
    matrix is divided by its maximum first, so ``reg`` is relative to the largest pairwise cost
    (scale free across data sets). ``method`` is passed to ``ot.sinkhorn`` (default
    ``"sinkhorn_log"``, stable for small ``reg``). A plan with non-finite entries or an empty row
    raises (no fallback).
    """

    name = "sinkhorn"
    METHODS = ("sinkhorn", "sinkhorn_log", "sinkhorn_stabilized")

    def __init__(self, reg: float = 0.05, *, normalize_cost: bool = True, method: str = "sinkhorn_log",
                 num_iter_max: int = 1000, stop_threshold: float = 1e-9) -> None:
        self.reg = check_finite_number("reg", reg, minimum=0.0, strict=True)
        if not isinstance(normalize_cost, bool):
            raise TypeError(f"normalize_cost must be a bool, got {normalize_cost!r}")
        self.normalize_cost = normalize_cost
        self.method = check_choice("method", method, self.METHODS)
        self.num_iter_max = check_positive_int("num_iter_max", num_iter_max)
        self.stop_threshold = check_finite_number("stop_threshold", stop_threshold, minimum=0.0, strict=True)

    def __repr__(self) -> str:
        return (f"SinkhornCoupling(reg={self.reg:g}, normalize_cost={self.normalize_cost}, "
                f"method={self.method!r})")

    def plan(self, x0: Tensor, x1: Tensor) -> np.ndarray:
        """The entropic plan P (n, n), float64 numpy, rows and columns summing to ~1/n."""
        import ot

        _check_batches(x0, x1, min_n=2)
        n = x0.shape[0]
        cost = squared_cost_matrix(x0, x1)
        if self.normalize_cost:
            peak = cost.max()
            if peak <= 0:
                raise ValueError(
                    "all points of x0 and x1 coincide: the cost matrix is zero, cannot normalise it"
                )
            cost = cost / peak
        w = np.full(n, 1.0 / n)
        plan = ot.sinkhorn(w, w, cost, self.reg, method=self.method, numItermax=self.num_iter_max,
                           stopThr=self.stop_threshold)
        plan = np.asarray(plan, dtype=np.float64)
        if not np.isfinite(plan).all():
            raise ValueError(
                f"Sinkhorn plan has non-finite entries (reg={self.reg:g}, method={self.method!r}); "
                f"increase reg or use method='sinkhorn_log'"
            )
        if (plan.sum(axis=1) <= 0).any():
            raise ValueError(f"Sinkhorn plan has an empty row (reg={self.reg:g}); increase reg")
        return plan

    def __call__(self, x0: Tensor, x1: Tensor, *, generator: torch.Generator | None = None) -> CoupledBatch:
        gen = _check_generator(generator, "SinkhornCoupling")
        plan = torch.as_tensor(self.plan(x0, x1), dtype=torch.float64)
        probs = (plan / plan.sum(dim=1, keepdim=True)).to(gen.device)
        index = torch.multinomial(probs, 1, replacement=True, generator=gen).squeeze(1)
        return _pair(x0, x1, index)


def make_coupling(name: str, **kwargs: Any) -> Coupling:
    """Build a coupling by name: ``"independent"`` | ``"ot"`` | ``"sinkhorn"`` (kwargs: reg, ...)."""
    check_choice("coupling", name, COUPLINGS)
    cls = {"independent": IndependentCoupling, "ot": ExactOTCoupling, "sinkhorn": SinkhornCoupling}[name]
    try:
        return cls(**kwargs)
    except TypeError as err:
        if "argument" in str(err):
            raise TypeError(f"invalid options for coupling {name!r}: {sorted(kwargs)} ({err})") from err
        raise
