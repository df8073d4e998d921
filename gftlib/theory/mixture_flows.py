"""Particle flows of analytic Gaussian-mixture drifts (THEORY T2), and the drifts its controls use.

Conventions: t = 0 noise (x0 ~ N(0, I_d)), t = 1 data; particles are float64 ``(n, d)`` tensors.
The fields come from :mod:`gftlib.theory.analytic`: ``GaussianMixturePath.velocity`` (g = 0),
``GaussianMixturePath.drift`` (SDE drift for diffusion g), :func:`gftlib.theory.analytic.gft_mixture_drift`
(the GFT minimizer b*_beta). Two wrong drifts serve as negative controls:

- :func:`naive_l2_drift`: ``(v_tgt + beta v_pre) / (1 + beta)``, the pointwise optimum of the naive
  L2-to-pretrained regularizer evaluated on the target path; THEORY gives it no terminal-law
  guarantee, and its ODE flow does not end at ``(q + beta p_pre) / (1 + beta)``;
- :func:`ode_velocity_in_sde_drift`: b*_beta with the pretrained term's ODE velocity instead of its
  SDE drift (the ``(g^2/2) score`` term missing), which breaks the mixture property for g > 0.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from gftlib.theory.analytic import GaussianMixture, GaussianMixturePath, gft_mixture_drift
from gftlib.eval.metrics import ks_statistic
from gftlib.solvers.ode import sample_ode
from gftlib.solvers.sde import sample_sde
from gftlib.validation import check_finite_number, check_positive_int, resolve_device

__all__ = ["marginal_mixture", "run_flows", "ks_against", "naive_l2_drift", "ode_velocity_in_sde_drift",
           "check_time_grid"]

Field = Callable[[Tensor, Tensor], Tensor]


def _check_paths(tpath: GaussianMixturePath, ppath: GaussianMixturePath) -> None:
    for name, p in (("tpath", tpath), ("ppath", ppath)):
        if not isinstance(p, GaussianMixturePath):
            raise TypeError(f"{name} must be a GaussianMixturePath, got {type(p).__name__}")
    if tpath.dim != ppath.dim:
        raise ValueError(f"tpath and ppath must have the same dimension, got {tpath.dim} and {ppath.dim}")


def marginal_mixture(tpath: GaussianMixturePath, ppath: GaussianMixturePath, t: float,
                     beta: float) -> GaussianMixture:
    """m^beta_t = (p^tgt_t + beta p^pre_t) / (1 + beta) as one GaussianMixture."""
    _check_paths(tpath, ppath)
    return tpath.marginal(t).mix(ppath.marginal(t), check_finite_number("beta", beta, minimum=0.0))


def check_time_grid(times: Sequence[float], steps: int, name: str = "steps") -> tuple[float, ...]:
    """Validate increasing times in (0, 1] that a uniform grid of ``steps`` steps on [0, 1] hits."""
    steps = check_positive_int(name, steps)
    ts = tuple(check_finite_number("times[]", t, minimum=0.0, maximum=1.0) for t in times)
    if not ts or ts[0] <= 0 or any(b <= a for a, b in zip(ts, ts[1:])):
        raise ValueError(f"times must be a non-empty increasing list in (0, 1], got {list(times)}")
    for t in ts:
        if abs(t * steps - round(t * steps)) > 1e-9:
            raise ValueError(f"{name}={steps} puts no grid point at t={t:g}; use a multiple of {1 / t:g}")
    return ts


def _segments(times: tuple[float, ...], steps: int):
    start = 0.0
    for t in times:
        yield start, t, int(round((t - start) * steps))
        start = t


def run_flows(tpath: GaussianMixturePath, ppath: GaussianMixturePath, beta: float, n: int,
              generator: torch.Generator, *, diffusion: float, ode_steps: int, sde_steps: int,
              times: Sequence[float] = (0.5, 1.0), processes: Sequence[str] = ("ode", "sde"),
              ode_field: Field | None = None, drift: Field | None = None,
              device: str | torch.device = "cpu") -> dict[tuple[str, float], Tensor]:
    """Particles at ``times`` of the ODE (RK4, g = 0) and SDE (Euler-Maruyama, g = ``diffusion``)
    flows of b*_beta, both from the same ``n`` noise points x0 ~ N(0, I) (float64).

    ``processes`` selects "ode" and/or "sde"; ``ode_field`` / ``drift`` replace the ODE velocity /
    the SDE drift (negative controls). The flows run segment by segment between the ``times`` (no
    trajectory is stored). Returns ``{(process, t): (n, d) CPU tensor}``.
    """
    _check_paths(tpath, ppath)
    n = check_positive_int("n", n)
    g = check_finite_number("diffusion", diffusion, minimum=0.0)
    procs = tuple(processes)
    if not procs or any(p not in ("ode", "sde") for p in procs) or len(set(procs)) != len(procs):
        raise ValueError(f"processes must be a non-empty subset of ('ode', 'sde'), got {list(processes)}")
    ts = check_time_grid(times, ode_steps, "ode_steps")
    check_time_grid(times, sde_steps, "sde_steps")
    dev = resolve_device(device)
    x0 = torch.randn(n, tpath.dim, generator=generator, dtype=torch.float64).to(dev)
    out: dict[tuple[str, float], Tensor] = {}
    if "ode" in procs:
        field = ode_field if ode_field is not None else gft_mixture_drift(tpath, ppath, beta, 0.0)
        x = x0
        for a, b, k in _segments(ts, ode_steps):
            x = sample_ode(field, x, method="rk4", steps=k, t0=a, t1=b).x
            out[("ode", b)] = x.cpu()
    if "sde" in procs:
        sde_field = drift if drift is not None else gft_mixture_drift(tpath, ppath, beta, g)
        x = x0
        for a, b, k in _segments(ts, sde_steps):
            x = sample_sde(sde_field, x, diffusion=g, steps=k, generator=generator, t0=a, t1=b).x
            out[("sde", b)] = x.cpu()
    return out


def ks_against(x: Tensor, mix: GaussianMixture, direction: Tensor | None = None) -> float:
    """KS statistic of the projections <u, x_i> of particles ``x`` (n, d) against the exact CDF of the
    projected mixture (``direction`` u a unit vector (d,); default e_1)."""
    u = torch.zeros(mix.dim, dtype=torch.float64) if direction is None else direction.double()
    if direction is None:
        u[0] = 1.0
    return ks_statistic(x.double() @ u, lambda y: mix.cdf_projected(y, u))


def naive_l2_drift(tpath: GaussianMixturePath, ppath: GaussianMixturePath, beta: float) -> Field:
    """(v_tgt + beta v_pre) / (1 + beta) (probability-flow velocities): the pointwise optimum of the
    naive L2 regularizer on the target path. A negative control: no terminal-law guarantee."""
    _check_paths(tpath, ppath)
    b = check_finite_number("beta", beta, minimum=0.0)

    def field(x: Tensor, t: Tensor) -> Tensor:
        return ((tpath.velocity(x, t) + b * ppath.velocity(x, t)) / (1.0 + b)).to(x.dtype)

    return field


def ode_velocity_in_sde_drift(tpath: GaussianMixturePath, ppath: GaussianMixturePath, beta: float,
                              diffusion: float) -> Field:
    """lam b_tgt^SDE + (1 - lam) v_pre with lam = p^tgt_t / (p^tgt_t + beta p^pre_t): b*_beta with the
    pretrained ODE velocity in place of its SDE drift (a negative control of T2's shared-g condition)."""
    weights = gft_mixture_drift(tpath, ppath, beta, diffusion)

    def field(x: Tensor, t: Tensor) -> Tensor:
        lam = weights.weight_target(x, t)[:, None]
        return (lam * tpath.drift(x, t, weights.diffusion) + (1 - lam) * ppath.velocity(x, t)).to(x.dtype)

    return field
