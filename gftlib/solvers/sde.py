"""SDE sampler: Euler–Maruyama for ``dX = drift(X, t) dt + g(t) dW`` from t0 (noise) to t1 (data).

:func:`sample_sde` returns the samples with the drift part's path length and straightness (the
Brownian part has infinite length); :func:`sde_states_at` reads the same chain off at given times
(the drift-form pretrained cache's points). Conventions as in :mod:`gftlib.solvers.common`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from gftlib.solvers.common import (SampleResult, check_field_output, check_sampler_inputs,
                                   check_trajectory_times, flat_norm, straightness)
from gftlib.types import VelocityField
from gftlib.validation import check_finite_number, check_positive_int

__all__ = ["sample_sde", "sde_states_at"]


def _gaussian(like: Tensor, generator: torch.Generator) -> Tensor:
    """z ~ N(0, I) shaped like ``like``, drawn on the generator's device, then moved to ``like``'s."""
    z = torch.randn(like.shape, generator=generator, device=generator.device, dtype=like.dtype)
    return z.to(like.device)


def _diffusion_fn(diffusion: float | Callable[[float], float]) -> Callable[[float], float]:
    """g(t) as a callable: a constant float g >= 0 is checked once, a callable is returned as is."""
    if callable(diffusion):
        return diffusion
    g_const = check_finite_number("diffusion", diffusion, minimum=0.0)
    return lambda t: g_const


def sample_sde(
    drift: VelocityField,
    x0: Tensor,
    *,
    diffusion: float | Callable[[float], float],
    steps: int = 100,
    generator: torch.Generator | None = None,
    t0: float = 0.0,
    t1: float = 1.0,
    return_trajectory: bool = False,
    grad: bool = False,
) -> SampleResult:
    """Euler–Maruyama for ``dX = drift(X, t) dt + g(t) dW`` on a uniform grid of ``steps`` steps.

    ``x_{k+1} = x_k + drift(x_k, t_k) dt + g(t_k) sqrt(dt) z_k``, ``z_k ~ N(0, I)`` drawn from
    ``generator`` (drawn on the generator's device, then moved to ``x0``'s device; None uses a new
    CPU generator seeded with 0, never torch's global RNG). ``diffusion`` is a float g >= 0 or a
    callable ``g(t: float) -> float`` (checked finite and >= 0 at every step).
    NFE = steps. path_length is the length of the *drift part*, ``sum_k |drift(x_k, t_k)| dt``: the
    Brownian part has infinite length, so it is excluded. straightness is the drift part's
    ``|sum_k drift_k dt| / sum_k |drift_k| dt`` (in [0, 1] by the triangle inequality), not the
    chord of the noisy path. Trajectory (when requested): the ``steps + 1`` grid states.
    """
    steps = check_positive_int("steps", steps)
    x0, t0, t1 = check_sampler_inputs("drift", drift, x0, t0, t1)
    g_fn = _diffusion_fn(diffusion)
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
    if generator is None:
        generator = torch.Generator().manual_seed(0)

    n = x0.shape[0]
    grid = torch.linspace(t0, t1, steps + 1, dtype=torch.float64)
    x = x0
    length = torch.zeros(n, dtype=x0.dtype, device=x0.device)
    displacement = torch.zeros_like(x0)
    traj = [x0] if return_trajectory else None
    with torch.set_grad_enabled(bool(grad) and torch.is_grad_enabled()):
        for k in range(steps):
            tk = float(grid[k])
            dt = float(grid[k + 1] - grid[k])
            g = check_finite_number("diffusion(t)", g_fn(tk), minimum=0.0)
            tb = torch.full((n,), tk, dtype=x0.dtype, device=x0.device)
            b = check_field_output("drift", drift(x, tb), x)
            x = x + b * dt + (g * dt ** 0.5) * _gaussian(x0, generator)
            length = length + flat_norm(b) * dt
            displacement = displacement + b * dt
            if traj is not None:
                traj.append(x)
    straight = straightness(torch.zeros_like(displacement), displacement, length)
    times = trajectory = None
    if traj is not None:
        times, trajectory = grid.to(device=x0.device, dtype=x0.dtype), torch.stack(traj)
    return SampleResult(x=x, nfe=steps, path_length=length, straightness=straight,
                        times=times, trajectory=trajectory)


def sde_states_at(
    drift: VelocityField,
    x0: Tensor,
    times: Sequence[float] | Tensor,
    *,
    diffusion: float,
    steps: int,
    generator: torch.Generator,
) -> Tensor:
    """States of the Euler–Maruyama chain of :func:`sample_sde` (uniform grid of ``steps`` steps on
    [0, 1]) at the increasing ``times`` in [0, 1]: (T, n, *shape).

    The chain itself is exactly the sampler's (same grid); a time t in [t_j, t_{j+1}) is read off by
    one partial step from the grid state, ``x_j + drift(x_j, t_j) (t - t_j) + g sqrt(t - t_j) z'``
    with fresh ``z'``, whose law is the chain's marginal at t (the chain is not continued from it).
    Noise comes from ``generator`` in a fixed order (reproducible). Runs under ``torch.no_grad()``.
    """
    steps = check_positive_int("steps", steps)
    g = check_finite_number("diffusion", diffusion, minimum=0.0)
    x0, _, _ = check_sampler_inputs("drift", drift, x0, 0.0, 1.0)
    tt = check_trajectory_times(times, 0.0, 1.0)
    grid = torch.linspace(0.0, 1.0, steps + 1, dtype=torch.float64)
    n = x0.shape[0]
    out = torch.empty((tt.numel(), *x0.shape), dtype=x0.dtype, device=x0.device)
    x, k = x0, 0
    with torch.no_grad():
        for j in range(steps + 1):
            tj, last = float(grid[j]), j == steps
            upper = math.inf if last else float(grid[j + 1])
            if last and k == tt.numel():
                break
            b = drift(x, torch.full((n,), tj, dtype=x0.dtype, device=x0.device))
            while k < tt.numel() and float(tt[k]) < upper:
                dt = float(tt[k]) - tj
                out[k] = x if dt <= 0 else x + b * dt + (g * dt ** 0.5) * _gaussian(x0, generator)
                k += 1
            if not last:
                dt = upper - tj
                x = x + b * dt + (g * dt ** 0.5) * _gaussian(x0, generator)
    return out
