"""Girsanov log ratios of simulated or given paths (see :mod:`gftlib.theory.girsanov` for the math).

Conventions: t = 0 noise, t = 1 data; trajectories (K + 1, n, d); drifts ``b(x, t) -> (n, d)``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from gftlib.theory.girsanov.common import Diffusion, check_drifts, diffusion_fn, eval_drift, mean_and_se, sq_norm
from gftlib.solvers.sde import sample_sde
from gftlib.types import VelocityField
from gftlib.validation import check_positive_int, check_tensor

__all__ = ["PathLogRatio", "log_likelihood_ratios", "simulate_log_likelihood_ratios"]


def _estimate(values: Callable[[PathLogRatio], Tensor], index: int, doc: str) -> property:
    """A read-only property: element ``index`` (0 mean, 1 standard error) of ``mean_and_se(values(self))``."""
    return property(lambda self: mean_and_se(values(self))[index], doc=doc)


@dataclass(frozen=True)
class PathLogRatio:
    """Per-path Girsanov quantities for n paths simulated under P^1.

    log_ratio: (n,) discretised log dP^1/dP^2 of each path (the Euler–Maruyama chain log density ratio).
    kl_integral: (n,) ``sum_k |b1 - b2|^2 dt_k / (2 g_k^2)`` along the same path.
    Both have expectation KL(P^1 || P^2) of the discretised chains; their difference is a mean-zero
    martingale, so the paired difference has the small standard error :attr:`se_difference`.
    """

    log_ratio: Tensor
    kl_integral: Tensor

    @property
    def n(self) -> int:
        return int(self.log_ratio.numel())

    kl_log_ratio = _estimate(lambda r: r.log_ratio, 0, "KL estimate: mean log ratio over paths.")
    se_log_ratio = _estimate(lambda r: r.log_ratio, 1, "Standard error of :attr:`kl_log_ratio`.")
    kl_path_integral = _estimate(lambda r: r.kl_integral, 0,
                                 "KL estimate: mean of the along-path integral of |b1 - b2|^2 / (2 g^2).")
    se_path_integral = _estimate(lambda r: r.kl_integral, 1, "Standard error of :attr:`kl_path_integral`.")
    mean_difference = _estimate(lambda r: r.log_ratio - r.kl_integral, 0,
                                "Mean of ``log_ratio - kl_integral`` (expectation exactly 0 for Euler–Maruyama "
                                "chains).")
    se_difference = _estimate(lambda r: r.log_ratio - r.kl_integral, 1,
                              "Standard error of the paired difference ``log_ratio - kl_integral``.")


def log_likelihood_ratios(
    trajectory: Tensor,
    times: Tensor,
    drift_1: VelocityField,
    drifts_2: Sequence[VelocityField],
    *,
    diffusion: Diffusion,
) -> list[PathLogRatio]:
    """Discretised Girsanov log ratios log dP^1/dP^(2,j) of given paths, one per drift in ``drifts_2``.

    trajectory: (K + 1, n, d) states on the grid ``times`` (K + 1,), strictly increasing (as
    returned by ``sample_sde(..., return_trajectory=True)``). Drifts are evaluated at the left grid
    point of each step (``drift_1`` once per step for all j); ``diffusion`` is g > 0 (float) or
    ``g(t) -> float`` (> 0 at every grid time). The paths may come from any law; the KL reading of
    :class:`PathLogRatio` assumes they are P^1 paths.
    """
    check_tensor("trajectory", trajectory, min_ndim=3)
    check_tensor("times", times, ndim=1)
    if times.numel() != trajectory.shape[0] or times.numel() < 2:
        raise ValueError(f"times must have one entry per trajectory state (>= 2), got {times.numel()} times "
                         f"for {trajectory.shape[0]} states")
    tt = times.detach().double().cpu()
    if not bool((tt[1:] > tt[:-1]).all()):
        raise ValueError(f"times must be strictly increasing, got {tt.tolist()[:6]}...")
    if not callable(drift_1):
        raise TypeError(f"drift_1 must be callable as drift_1(x, t), got {type(drift_1).__name__}")
    others = check_drifts(drifts_2)
    g_fn = diffusion_fn(diffusion)
    n = trajectory.shape[1]
    zeros = torch.zeros(n, dtype=torch.float64, device=trajectory.device)
    log_ratio = [zeros.clone() for _ in others]
    integral = [zeros.clone() for _ in others]
    with torch.no_grad():
        for k in range(tt.numel() - 1):
            tk, dt = float(tt[k]), float(tt[k + 1] - tt[k])
            g2 = g_fn(tk) ** 2
            x = trajectory[k]
            dx = (trajectory[k + 1] - x).double().reshape(n, -1)
            b1 = eval_drift("drift_1", drift_1, x, tk).double()
            sq1 = sq_norm(b1)
            for j, f in enumerate(others):
                b2 = eval_drift(f"drifts_2[{j}]", f, x, tk).double()
                db = b1 - b2
                log_ratio[j] += (db.reshape(n, -1) * dx).sum(dim=1) / g2 - (sq1 - sq_norm(b2)) * dt / (2 * g2)
                integral[j] += sq_norm(db) * dt / (2 * g2)
    return [PathLogRatio(log_ratio=lr, kl_integral=it) for lr, it in zip(log_ratio, integral)]


def simulate_log_likelihood_ratios(
    drift_1: VelocityField,
    drifts_2: Sequence[VelocityField],
    x0: Tensor,
    *,
    diffusion: Diffusion,
    steps: int,
    generator: torch.Generator,
    t0: float = 0.0,
    t1: float = 1.0,
    chunk_size: int | None = None,
) -> list[PathLogRatio]:
    """Simulate n = len(x0) Euler–Maruyama paths of P^1 (``gftlib.solvers.sde.sample_sde``, noise from
    ``generator``) from ``x0`` (n, d) and return their :func:`log_likelihood_ratios` against every
    drift in ``drifts_2`` (same diffusion). Paths are simulated ``chunk_size`` at a time (None: all
    at once), so memory is O(steps * chunk_size * d). Chunks consume ``generator`` one after the
    other, so a different ``chunk_size`` gives a different (equally valid) draw."""
    steps = check_positive_int("steps", steps)
    check_tensor("x0", x0, min_ndim=2)
    if chunk_size is not None:
        chunk_size = check_positive_int("chunk_size", chunk_size)
    others = check_drifts(drifts_2)
    g_fn = diffusion_fn(diffusion)
    times = torch.linspace(t0, t1, steps + 1, dtype=torch.float64)  # the sampler's grid, exactly
    n = x0.shape[0]
    size = n if chunk_size is None else chunk_size
    parts: list[list[PathLogRatio]] = []
    for start in range(0, n, size):
        res = sample_sde(drift_1, x0[start:start + size], diffusion=g_fn, steps=steps, generator=generator,
                         t0=t0, t1=t1, return_trajectory=True)
        assert res.trajectory is not None
        parts.append(log_likelihood_ratios(res.trajectory, times, drift_1, others, diffusion=g_fn))
    return [PathLogRatio(log_ratio=torch.cat([pp[j].log_ratio for pp in parts]),
                         kl_integral=torch.cat([pp[j].kl_integral for pp in parts]))
            for j in range(len(others))]


