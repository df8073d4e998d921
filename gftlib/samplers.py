"""ODE and SDE samplers for velocity / drift fields, with path length and straightness.

Conventions: integration runs forward from ``t0`` (default 0, noise) to ``t1`` (default 1, data).
A field is ``field(x, t) -> v`` with ``x: (n, *shape)``, ``t: (n,)`` and ``v`` shaped like ``x``;
the solvers' scalar time is broadcast to ``(n,)`` in the dtype and on the device of ``x``.

Path length of sample i is ``L_i = int_{t0}^{t1} |field(x_i(t), t)| dt`` (Euclidean norm over all
non-batch dimensions); straightness is ``|x_i(t1) - x_i(t0)| / L_i`` (1 for a straight path traversed
in one direction). :func:`sample_ode` integrates ``L`` with the *same* solver steps as ``x``
(augmented state ``(x, L)``, ``dL/dt = |field(x, t)|``), but the adaptive step control of dopri5
measures the error of ``x`` alone (the RMS norm torchdiffeq uses for a plain solve of ``x``): the
length rides along and never changes the steps, so the samples and the NFE are those of the plain
solve of ``dx/dt = field(x, t)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from gftlib.types import VelocityField
from gftlib.validation import check_choice, check_finite_number, check_positive_int, check_tensor

__all__ = ["SampleResult", "sample_ode", "sample_sde", "sde_states_at", "ODE_METHODS",
           "FIXED_STEP_METHODS", "EVALS_PER_STEP"]

#: ODE methods accepted by :func:`sample_ode` (all from torchdiffeq).
ODE_METHODS: tuple[str, ...] = ("euler", "midpoint", "rk4", "dopri5")
#: Methods with a fixed uniform grid of ``steps`` steps.
FIXED_STEP_METHODS: tuple[str, ...] = ("euler", "midpoint", "rk4")
#: Field evaluations per step of the fixed-step methods (as torchdiffeq implements them).
EVALS_PER_STEP: dict[str, int] = {"euler": 1, "midpoint": 2, "rk4": 4}


@dataclass(frozen=True)
class SampleResult:
    """Output of a sampler.

    x: (n, *shape) samples at ``t1``; nfe: field evaluations actually made (one evaluation = one
    call on the whole batch); path_length: (n,); straightness: (n,) in [0, 1] (1 = straight; 1 by
    definition where the path length is 0); times: (T,) and trajectory: (T, n, *shape) when a
    trajectory was requested, else None.
    """

    x: Tensor
    nfe: int
    path_length: Tensor
    straightness: Tensor
    times: Tensor | None = None
    trajectory: Tensor | None = None


def _flat_norm(v: Tensor) -> Tensor:
    """(n, *shape) -> (n,) Euclidean norm over the non-batch dimensions."""
    return v.reshape(v.shape[0], -1).norm(dim=1)


def _x_only_norm(state: tuple[Tensor, Tensor]) -> Tensor:
    """torchdiffeq's RMS norm of the ``x`` part of the augmented state ``(x, L)`` (ignores ``L``)."""
    return state[0].abs().pow(2).mean().sqrt()


def _straightness(x_start: Tensor, x_end: Tensor, length: Tensor) -> Tensor:
    """|x_end - x_start| / length, clamped to [0, 1]; 1 where length == 0."""
    chord = _flat_norm(x_end - x_start)
    safe = torch.where(length > 0, length, torch.ones_like(length))
    s = torch.where(length > 0, chord / safe, torch.ones_like(length))
    return s.clamp(0.0, 1.0)


def _check_interval(t0: float, t1: float) -> tuple[float, float]:
    t0 = check_finite_number("t0", t0)
    t1 = check_finite_number("t1", t1)
    if not t0 < t1:
        raise ValueError(f"t0 must be < t1, got t0={t0!r}, t1={t1!r}")
    return t0, t1


def _time_dtype(x: Tensor) -> torch.dtype:
    # Grid times in float64 where the device supports it (exact uniform grids); else x's dtype.
    return torch.float64 if x.device.type in ("cpu", "cuda") else x.dtype


def _check_trajectory_times(trajectory_times: Sequence[float] | Tensor, t0: float, t1: float) -> Tensor:
    tt = torch.as_tensor(trajectory_times, dtype=torch.float64).reshape(-1)
    if tt.numel() == 0 or not bool(torch.isfinite(tt).all()):
        raise ValueError(
            f"trajectory_times must be a non-empty list of finite times, got {trajectory_times!r}")
    if tt.numel() > 1 and not bool((tt[1:] > tt[:-1]).all()):
        raise ValueError(f"trajectory_times must be strictly increasing, got {tt.tolist()}")
    if float(tt[0]) < t0 or float(tt[-1]) > t1:
        raise ValueError(f"trajectory_times must lie in [t0, t1] = [{t0:g}, {t1:g}], got {tt.tolist()}")
    return tt


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
    t0, t1 = _check_interval(t0, t1)
    x0 = check_tensor("x0", x0, min_ndim=2)
    if not x0.is_floating_point():
        raise TypeError(f"x0 must be a floating-point tensor, got dtype {x0.dtype}")
    if not callable(field):
        raise TypeError(f"field must be callable as field(x, t), got {type(field).__name__}")
    want_traj = bool(return_trajectory) or trajectory_times is not None
    if want_traj and trajectory_times is None and method not in FIXED_STEP_METHODS:
        raise ValueError(f"method={method!r} is adaptive: pass trajectory_times to get a trajectory")

    n = x0.shape[0]
    tdtype = _time_dtype(x0)
    dev = x0.device
    if method in FIXED_STEP_METHODS:
        grid = torch.linspace(t0, t1, steps + 1, dtype=torch.float64).to(device=dev, dtype=tdtype)
    else:
        grid = torch.tensor([t0, t1], dtype=torch.float64).to(device=dev, dtype=tdtype)
    if trajectory_times is not None:
        traj_t = _check_trajectory_times(trajectory_times, t0, t1).to(device=dev, dtype=tdtype)
        # Output times: t0, the requested times, t1 (t0/t1 are needed for the chord and the length).
        out_t = torch.unique(torch.cat([grid[:1], traj_t, grid[-1:]]))  # sorted
    else:
        traj_t = grid if want_traj else None
        out_t = grid if method in FIXED_STEP_METHODS and want_traj else grid[[0, -1]]

    counter = [0]

    def rhs(t: Tensor, state: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        x, _ = state
        counter[0] += 1
        tb = t.to(dtype=x.dtype).expand(n)
        v = field(x, tb)
        if not isinstance(v, Tensor) or v.shape != x.shape:
            raise ValueError(f"field must return a tensor of shape {tuple(x.shape)}, "
                             f"got {getattr(v, 'shape', type(v).__name__)}")
        return v, _flat_norm(v).to(x.dtype)

    options = {}
    if method in FIXED_STEP_METHODS:
        fixed_grid = grid
        options["grid_constructor"] = lambda func, y0, t: fixed_grid
    else:  # step control on x alone: the path length must not change the steps (nor the NFE)
        options["norm"] = _x_only_norm
    state0 = (x0, torch.zeros(n, dtype=x0.dtype, device=dev))
    from torchdiffeq import odeint  # here, not at module level: it imports scipy.integrate (~1 s)

    with torch.set_grad_enabled(bool(grad) and torch.is_grad_enabled()):
        xs, ls = odeint(rhs, state0, out_t, method=method, atol=atol, rtol=rtol, options=options)
    x_end, length = xs[-1], ls[-1]
    times = trajectory = None
    if want_traj:
        assert traj_t is not None
        idx = torch.searchsorted(out_t, traj_t)
        times, trajectory = traj_t.to(x0.dtype), xs[idx]
    return SampleResult(x=x_end, nfe=counter[0], path_length=length,
                        straightness=_straightness(x0, x_end, length), times=times, trajectory=trajectory)


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
    t0, t1 = _check_interval(t0, t1)
    x0 = check_tensor("x0", x0, min_ndim=2)
    if not x0.is_floating_point():
        raise TypeError(f"x0 must be a floating-point tensor, got dtype {x0.dtype}")
    if not callable(drift):
        raise TypeError(f"drift must be callable as drift(x, t), got {type(drift).__name__}")
    if callable(diffusion):
        g_fn = diffusion
    else:
        g_const = check_finite_number("diffusion", diffusion, minimum=0.0)
        g_fn = lambda t: g_const  # noqa: E731
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
            b = drift(x, torch.full((n,), tk, dtype=x0.dtype, device=x0.device))
            if not isinstance(b, Tensor) or b.shape != x.shape:
                raise ValueError(f"drift must return a tensor of shape {tuple(x.shape)}, "
                                 f"got {getattr(b, 'shape', type(b).__name__)}")
            z = torch.randn(x0.shape, generator=generator, device=generator.device, dtype=x0.dtype)
            z = z.to(x0.device)
            x = x + b * dt + (g * dt ** 0.5) * z
            length = length + _flat_norm(b) * dt
            displacement = displacement + b * dt
            if traj is not None:
                traj.append(x)
    straight = _straightness(torch.zeros_like(displacement), displacement, length)
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
    x0 = check_tensor("x0", x0, min_ndim=2)
    tt = _check_trajectory_times(times, 0.0, 1.0)
    grid = torch.linspace(0.0, 1.0, steps + 1, dtype=torch.float64)
    n = x0.shape[0]
    out = torch.empty((tt.numel(), *x0.shape), dtype=x0.dtype, device=x0.device)

    def noise() -> Tensor:
        z = torch.randn(x0.shape, generator=generator, device=generator.device, dtype=x0.dtype)
        return z.to(x0.device)

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
                out[k] = x if dt <= 0 else x + b * dt + (g * dt ** 0.5) * noise()
                k += 1
            if not last:
                dt = upper - tj
                x = x + b * dt + (g * dt ** 0.5) * noise()
    return out
