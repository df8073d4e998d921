"""ODE sampler: integrate a velocity field with torchdiffeq, with path length, straightness and NFE.

:func:`sample_ode` integrates the path length ``L`` with the *same* solver steps as ``x``
(augmented state ``(x, L)``, ``dL/dt = |field(x, t)|``), but the adaptive step control of dopri5
measures the error of ``x`` alone (the RMS norm torchdiffeq uses for a plain solve of ``x``): the
length rides along and never changes the steps, so the samples and the NFE are those of the plain
solve of ``dx/dt = field(x, t)``. Conventions as in :mod:`gftlib.solvers.common` (t = 0 noise,
t = 1 data); the solver's scalar time is broadcast to ``(n,)`` in the dtype and on the device of ``x``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor
from torchdiffeq import odeint

from gftlib.solvers.common import (SampleResult, check_field_output, check_sampler_inputs,
                                   check_trajectory_times, flat_norm, straightness)
from gftlib.types import VelocityField
from gftlib.validation import check_choice, check_finite_number, check_positive_int

__all__ = ["sample_ode", "ODE_METHODS", "FIXED_STEP_METHODS", "EVALS_PER_STEP"]

#: ODE methods accepted by :func:`sample_ode` (all from torchdiffeq).
ODE_METHODS: tuple[str, ...] = ("euler", "midpoint", "rk4", "dopri5")
#: Methods with a fixed uniform grid of ``steps`` steps.
FIXED_STEP_METHODS: tuple[str, ...] = ("euler", "midpoint", "rk4")
#: Field evaluations per step of the fixed-step methods (as torchdiffeq implements them).
EVALS_PER_STEP: dict[str, int] = {"euler": 1, "midpoint": 2, "rk4": 4}

_State = tuple[Tensor, Tensor]  # the augmented state (x, L)


def _x_only_norm(state: _State) -> Tensor:
    """torchdiffeq's RMS norm of the ``x`` part of the augmented state ``(x, L)`` (ignores ``L``)."""
    return state[0].abs().pow(2).mean().sqrt()


def _time_dtype(x: Tensor) -> torch.dtype:
    # Grid times in float64 where the device supports it (exact uniform grids); else x's dtype.
    return torch.float64 if x.device.type in ("cpu", "cuda") else x.dtype


@dataclass(frozen=True)
class _Times:
    """The solver's grid (fixed-step: ``steps + 1`` uniform times; dopri5: ``[t0, t1]``), the times
    odeint reports (``out``, sorted, starting at t0 and ending at t1) and the trajectory's times
    (``trajectory``, None when no trajectory is wanted)."""

    grid: Tensor
    out: Tensor
    trajectory: Tensor | None


def _solver_times(method: str, steps: int, t0: float, t1: float, x0: Tensor, want_traj: bool,
                  trajectory_times: Sequence[float] | Tensor | None) -> _Times:
    """Where the solver steps and where it reports, in float64 on ``x0``'s device (where supported)."""
    tdtype, dev = _time_dtype(x0), x0.device
    fixed = method in FIXED_STEP_METHODS
    if fixed:
        grid = torch.linspace(t0, t1, steps + 1, dtype=torch.float64).to(device=dev, dtype=tdtype)
    else:
        grid = torch.tensor([t0, t1], dtype=torch.float64).to(device=dev, dtype=tdtype)
    if trajectory_times is not None:
        traj_t = check_trajectory_times(trajectory_times, t0, t1).to(device=dev, dtype=tdtype)
        # Output times: t0, the requested times, t1 (t0/t1 are needed for the chord and the length).
        return _Times(grid, torch.unique(torch.cat([grid[:1], traj_t, grid[-1:]])), traj_t)  # sorted
    out = grid if fixed and want_traj else grid[[0, -1]]
    return _Times(grid, out, grid if want_traj else None)


def _counted_rhs(field: VelocityField, n: int) -> tuple[Callable[[Tensor, _State], _State], list[int]]:
    """The augmented right-hand side ``(x, L) -> (field(x, t), |field(x, t)|)`` and its call counter."""
    counter = [0]

    def rhs(t: Tensor, state: _State) -> _State:
        x, _ = state
        counter[0] += 1
        v = check_field_output("field", field(x, t.to(dtype=x.dtype).expand(n)), x)
        return v, flat_norm(v).to(x.dtype)

    return rhs, counter


def _solver_options(method: str, grid: Tensor) -> dict[str, object]:
    """Fixed-step methods step on ``grid``; dopri5 controls the error of ``x`` alone (the path length
    must not change the steps, nor the NFE)."""
    if method in FIXED_STEP_METHODS:
        return {"grid_constructor": lambda func, y0, t: grid}
    return {"norm": _x_only_norm}


def sample_ode(
    field: VelocityField,
    x0: Tensor,
    *,
    method: str = "euler",
    steps: int = 32,
    atol: float = 1e-5,
    rtol: float = 1e-5,
    t0: float = 0.0,
    t1: float = 1.0,
    return_trajectory: bool = False,
    trajectory_times: Sequence[float] | Tensor | None = None,
    grad: bool = False,
) -> SampleResult:
    """Integrate ``dx/dt = field(x, t)`` from ``x(t0) = x0`` to ``t1`` with torchdiffeq.

    method: "euler" | "midpoint" | "rk4" use a uniform grid of ``steps`` steps (NFE = 1, 2, 4 times
    ``steps``); "dopri5" is adaptive with ``atol``/``rtol`` (which control the error of the
    samples; the path length is integrated on the same steps without entering the step control,
    so ``nfe`` and ``x`` equal a plain solve of ``x``) and ``steps`` is ignored. ``nfe`` is counted by
    wrapping ``field``.
    Trajectory: with ``return_trajectory`` the states at the step grid (fixed-step methods) or at
    ``trajectory_times`` (required for dopri5; any method may pass them: fixed-step methods still
    step on their uniform grid and torchdiffeq interpolates linearly between grid points).
    grad=False runs under ``torch.no_grad()``; grad=True back-propagates through the solver steps.
    In float16/bfloat16 the path length accumulates in that dtype too, and dopri5 needs tolerances
    above the dtype's resolution (float16 with the default 1e-5 fails with "underflow in dt").
    The computation uses ``x0``'s device and dtype.
    """
    method = check_choice("method", method, ODE_METHODS)
    steps = check_positive_int("steps", steps)
    atol = check_finite_number("atol", atol, minimum=0.0, strict=True)
    rtol = check_finite_number("rtol", rtol, minimum=0.0, strict=True)
    x0, t0, t1 = check_sampler_inputs("field", field, x0, t0, t1)
    want_traj = bool(return_trajectory) or trajectory_times is not None
    if want_traj and trajectory_times is None and method not in FIXED_STEP_METHODS:
        raise ValueError(f"method={method!r} is adaptive: pass trajectory_times to get a trajectory")

    n = x0.shape[0]
    times = _solver_times(method, steps, t0, t1, x0, want_traj, trajectory_times)
    rhs, counter = _counted_rhs(field, n)
    state0 = (x0, torch.zeros(n, dtype=x0.dtype, device=x0.device))
    with torch.set_grad_enabled(bool(grad) and torch.is_grad_enabled()):
        xs, ls = odeint(rhs, state0, times.out, method=method, atol=atol, rtol=rtol,
                        options=_solver_options(method, times.grid))
    x_end, length = xs[-1], ls[-1]
    out_times = trajectory = None
    if times.trajectory is not None:
        idx = torch.searchsorted(times.out, times.trajectory)
        out_times, trajectory = times.trajectory.to(x0.dtype), xs[idx]
    return SampleResult(x=x_end, nfe=counter[0], path_length=length,
                        straightness=straightness(x0, x_end, length), times=out_times, trajectory=trajectory)
