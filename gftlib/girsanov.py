"""Path-space KL divergences of SDEs that share one diffusion (Girsanov), by Monte Carlo.

Two processes ``dX = b_i(X, t) dt + g(t) dW`` (i = 1, 2) on [t0, t1] with the same diffusion
``g > 0`` and the same initial law. Girsanov's theorem gives

    log dP^1/dP^2 (X) = int (b1 - b2) . dX / g^2 - int (|b1|^2 - |b2|^2) / (2 g^2) dt,
    KL(P^1 || P^2)    = E_{P^1} int |b1 - b2|^2 / (2 g^2) dt.

On an Euler–Maruyama grid ``t_0 < ... < t_K`` the discretised log ratio

    L = sum_k (b1 - b2)(X_k, t_k) . (X_{k+1} - X_k) / g_k^2
        - sum_k (|b1|^2 - |b2|^2)(X_k, t_k) dt_k / (2 g_k^2)

is *exactly* the log density ratio of the two Euler–Maruyama Markov chains (their transitions are
N(x + b_i dt, g^2 dt I)). Along a chain of P^1, ``L - I = sum_k (b1 - b2) . dW_k / g_k`` with
``I = sum_k |b1 - b2|^2 dt_k / (2 g_k^2)``: a martingale of mean 0, so ``E L = E I`` holds without
discretisation error (only Monte Carlo error). Against the continuous KL both differ by the weak
error of Euler–Maruyama, O(dt).

Conventions: t = 0 noise, t = 1 data; points (n, d); drifts ``b(x (n, d), t (n,)) -> (n, d)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from gftlib.analytic import GaussianMixture
from gftlib.samplers import sample_sde
from gftlib.types import VelocityField
from gftlib.validation import check_finite_number, check_positive_int, check_tensor

__all__ = [
    "PathLogRatio",
    "MarginalKL",
    "log_likelihood_ratio",
    "log_likelihood_ratios",
    "simulate_log_likelihood_ratio",
    "simulate_log_likelihood_ratios",
    "path_kl_from_marginals",
    "path_kls_from_marginals",
    "affine_drift_path_kl",
    "mean_and_se",
    "mixture_sde_stiffness",
    "stiffness_adjusted_steps",
]

Diffusion = float | Callable[[float], float]


def mean_and_se(values: Tensor) -> tuple[float, float]:
    """Sample mean and its standard error ``std(ddof=1) / sqrt(n)`` of a 1-D tensor (float64)."""
    v = values.detach().double().reshape(-1)
    n = v.numel()
    if n < 2:
        raise ValueError(f"need at least 2 values for a standard error, got {n}")
    return float(v.mean()), float(v.std(unbiased=True) / math.sqrt(n))


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

    @property
    def kl_log_ratio(self) -> float:
        """KL estimate: mean log ratio over paths."""
        return mean_and_se(self.log_ratio)[0]

    @property
    def se_log_ratio(self) -> float:
        return mean_and_se(self.log_ratio)[1]

    @property
    def kl_path_integral(self) -> float:
        """KL estimate: mean of the along-path integral of |b1 - b2|^2 / (2 g^2)."""
        return mean_and_se(self.kl_integral)[0]

    @property
    def se_path_integral(self) -> float:
        return mean_and_se(self.kl_integral)[1]

    @property
    def mean_difference(self) -> float:
        """Mean of ``log_ratio - kl_integral`` (expectation exactly 0 for Euler–Maruyama chains)."""
        return mean_and_se(self.log_ratio - self.kl_integral)[0]

    @property
    def se_difference(self) -> float:
        """Standard error of the paired difference ``log_ratio - kl_integral``."""
        return mean_and_se(self.log_ratio - self.kl_integral)[1]


@dataclass(frozen=True)
class MarginalKL:
    """KL(P^1 || P^2) = int E_{p^1_t} |b1 - b2|^2 / (2 g^2) dt from samples of the marginals p^1_t.

    value: the estimate; se: its standard error (independent samples at every grid time);
    times: (K,) quadrature times; per_time: (K,) the Monte Carlo mean of |b1 - b2|^2 / (2 g^2) there.
    """

    value: float
    se: float
    times: Tensor
    per_time: Tensor


def _diffusion_fn(diffusion: Diffusion) -> Callable[[float], float]:
    if callable(diffusion):
        fn = diffusion
    else:
        g = check_finite_number("diffusion", diffusion, minimum=0.0, strict=True)
        fn = lambda t: g  # noqa: E731

    def checked(t: float) -> float:
        return check_finite_number("diffusion(t)", fn(t), minimum=0.0, strict=True)

    return checked


def _eval(name: str, drift: VelocityField, x: Tensor, t: float) -> Tensor:
    tb = torch.full((x.shape[0],), t, dtype=x.dtype, device=x.device)
    b = drift(x, tb)
    if not isinstance(b, Tensor) or b.shape != x.shape:
        raise ValueError(f"{name} must return a tensor of shape {tuple(x.shape)}, "
                         f"got {getattr(b, 'shape', type(b).__name__)}")
    return b


def _sq(v: Tensor) -> Tensor:
    return v.reshape(v.shape[0], -1).pow(2).sum(dim=1)


def _check_drifts(drifts_2: Sequence[VelocityField]) -> list[VelocityField]:
    if callable(drifts_2) or not isinstance(drifts_2, Sequence) or len(drifts_2) == 0:
        raise TypeError(f"drifts_2 must be a non-empty list of drifts b(x, t), got {drifts_2!r}")
    for i, f in enumerate(drifts_2):
        if not callable(f):
            raise TypeError(f"drifts_2[{i}] must be callable as b(x, t), got {type(f).__name__}")
    return list(drifts_2)


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
    others = _check_drifts(drifts_2)
    g_fn = _diffusion_fn(diffusion)
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
            b1 = _eval("drift_1", drift_1, x, tk).double()
            sq1 = _sq(b1)
            for j, f in enumerate(others):
                b2 = _eval("drift_2" if len(others) == 1 else f"drifts_2[{j}]", f, x, tk).double()
                db = b1 - b2
                log_ratio[j] += (db.reshape(n, -1) * dx).sum(dim=1) / g2 - (sq1 - _sq(b2)) * dt / (2 * g2)
                integral[j] += _sq(db) * dt / (2 * g2)
    return [PathLogRatio(log_ratio=lr, kl_integral=it) for lr, it in zip(log_ratio, integral)]


def log_likelihood_ratio(
    trajectory: Tensor,
    times: Tensor,
    drift_1: VelocityField,
    drift_2: VelocityField,
    *,
    diffusion: Diffusion,
) -> PathLogRatio:
    """:func:`log_likelihood_ratios` for a single second drift ``drift_2``."""
    if not callable(drift_2):
        raise TypeError(f"drift_2 must be callable as drift_2(x, t), got {type(drift_2).__name__}")
    return log_likelihood_ratios(trajectory, times, drift_1, [drift_2], diffusion=diffusion)[0]


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
    """Simulate n = len(x0) Euler–Maruyama paths of P^1 (``gftlib.samplers.sample_sde``, noise from
    ``generator``) from ``x0`` (n, d) and return their :func:`log_likelihood_ratios` against every
    drift in ``drifts_2`` (same diffusion). Paths are simulated ``chunk_size`` at a time (None: all
    at once), so memory is O(steps * chunk_size * d). Chunks consume ``generator`` one after the
    other, so a different ``chunk_size`` gives a different (equally valid) draw."""
    steps = check_positive_int("steps", steps)
    check_tensor("x0", x0, min_ndim=2)
    if chunk_size is not None:
        chunk_size = check_positive_int("chunk_size", chunk_size)
    others = _check_drifts(drifts_2)
    g_fn = _diffusion_fn(diffusion)
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


def simulate_log_likelihood_ratio(
    drift_1: VelocityField,
    drift_2: VelocityField,
    x0: Tensor,
    *,
    diffusion: Diffusion,
    steps: int,
    generator: torch.Generator,
    t0: float = 0.0,
    t1: float = 1.0,
    chunk_size: int | None = None,
) -> PathLogRatio:
    """:func:`simulate_log_likelihood_ratios` for a single second drift ``drift_2``."""
    if not callable(drift_2):
        raise TypeError(f"drift_2 must be callable as drift_2(x, t), got {type(drift_2).__name__}")
    return simulate_log_likelihood_ratios(drift_1, [drift_2], x0, diffusion=diffusion, steps=steps,
                                          generator=generator, t0=t0, t1=t1, chunk_size=chunk_size)[0]


def path_kls_from_marginals(
    drift_1: VelocityField,
    drifts_2: Sequence[VelocityField],
    sample_marginal: Callable[[float, int, torch.Generator], Tensor],
    *,
    diffusion: Diffusion,
    steps: int,
    n: int,
    generator: torch.Generator,
    t0: float = 0.0,
    t1: float = 1.0,
) -> list[MarginalKL]:
    """KL(P^1 || P^(2,j)) = int E_{p^1_t} |b1 - b2j|^2 / (2 g^2) dt from exact samples of the marginals.

    ``sample_marginal(t, n, generator) -> (n, d)`` draws from p^1_t. The time integral is the left
    Riemann sum on the uniform grid of ``steps`` steps (the grid on which Euler–Maruyama evaluates
    the drifts, so the quadrature matches :func:`simulate_log_likelihood_ratio` with the same
    ``steps``); ``n`` fresh samples per grid time, shared by all j. SE = sqrt(sum_k dt^2 var_k / n).
    """
    steps = check_positive_int("steps", steps)
    n = check_positive_int("n", n, minimum=2)
    t0 = check_finite_number("t0", t0)
    t1 = check_finite_number("t1", t1)
    if not t0 < t1:
        raise ValueError(f"t0 must be < t1, got t0={t0!r}, t1={t1!r}")
    if not callable(drift_1):
        raise TypeError(f"drift_1 must be callable as drift_1(x, t), got {type(drift_1).__name__}")
    others = _check_drifts(drifts_2)
    if not callable(sample_marginal):
        raise TypeError("sample_marginal must be callable as f(t, n, generator), "
                        f"got {type(sample_marginal).__name__}")
    g_fn = _diffusion_fn(diffusion)
    grid = torch.linspace(t0, t1, steps + 1, dtype=torch.float64)
    means = [[] for _ in others]
    variances = [[] for _ in others]
    with torch.no_grad():
        for k in range(steps):
            tk, dt = float(grid[k]), float(grid[k + 1] - grid[k])
            x = sample_marginal(tk, n, generator)
            if not isinstance(x, Tensor) or x.ndim < 2 or x.shape[0] != n:
                raise ValueError(f"sample_marginal must return a tensor of shape (n={n}, ...), "
                                 f"got {getattr(x, 'shape', type(x).__name__)}")
            b1 = _eval("drift_1", drift_1, x, tk).double()
            scale = dt / (2 * g_fn(tk) ** 2)
            for j, f in enumerate(others):
                b2 = _eval("drift_2" if len(others) == 1 else f"drifts_2[{j}]", f, x, tk).double()
                val = _sq(b1 - b2) * scale
                means[j].append(val.mean())
                variances[j].append(val.var(unbiased=True))
    widths = (grid[1:] - grid[:-1])
    out = []
    for m_list, v_list in zip(means, variances):
        m, v = torch.stack(m_list).cpu(), torch.stack(v_list).cpu()
        out.append(MarginalKL(value=float(m.sum()), se=float(torch.sqrt(v.sum() / n)), times=grid[:-1],
                              per_time=m / widths))
    return out


def path_kl_from_marginals(
    drift_1: VelocityField,
    drift_2: VelocityField,
    sample_marginal: Callable[[float, int, torch.Generator], Tensor],
    *,
    diffusion: Diffusion,
    steps: int,
    n: int,
    generator: torch.Generator,
    t0: float = 0.0,
    t1: float = 1.0,
) -> MarginalKL:
    """:func:`path_kls_from_marginals` for a single second drift ``drift_2``."""
    if not callable(drift_2):
        raise TypeError(f"drift_2 must be callable as drift_2(x, t), got {type(drift_2).__name__}")
    return path_kls_from_marginals(drift_1, [drift_2], sample_marginal, diffusion=diffusion, steps=steps, n=n,
                                   generator=generator, t0=t0, t1=t1)[0]


def affine_drift_path_kl(
    a1: float, c1: float, a2: float, c2: float, *, diffusion: float, dim: int = 1,
    steps: int | None = None, t1: float = 1.0,
) -> float:
    """Closed-form KL(P^1 || P^2) on [0, t1] for affine drifts ``b_i(x) = a_i x + c_i`` (c_i the same
    in every coordinate), constant diffusion g > 0 and X_0 ~ N(0, I_dim).

    KL = dim * int_0^t1 E[((a1 - a2) X + (c1 - c2))^2] / (2 g^2) dt for one coordinate X of P^1, whose
    mean m and variance v solve m' = a1 m + c1, v' = 2 a1 v + g^2 (m(0) = 0, v(0) = 1).
    ``steps=None``: the continuous-time value (these ODEs solved in closed form, integral by
    Gauss–Legendre quadrature to machine precision). ``steps=K``: the exact KL of the two
    Euler–Maruyama chains on the uniform K-step grid (m_{k+1} = (1 + a1 dt) m_k + c1 dt,
    v_{k+1} = (1 + a1 dt)^2 v_k + g^2 dt, left Riemann sum), i.e. what the Monte Carlo estimators of
    :func:`simulate_log_likelihood_ratio` converge to.
    """
    a1, c1, a2, c2 = (check_finite_number(name, v)
                      for name, v in (("a1", a1), ("c1", c1), ("a2", a2), ("c2", c2)))
    g = check_finite_number("diffusion", diffusion, minimum=0.0, strict=True)
    dim = check_positive_int("dim", dim)
    t1 = check_finite_number("t1", t1, minimum=0.0, strict=True)
    da, dc = a1 - a2, c1 - c2

    def integrand(m: np.ndarray, v: np.ndarray) -> np.ndarray:
        return (da * da * (v + m * m) + 2 * da * dc * m + dc * dc) / (2 * g * g)

    if steps is not None:
        steps = check_positive_int("steps", steps)
        dt = t1 / steps
        m, v, total = 0.0, 1.0, 0.0
        for _ in range(steps):
            total += float(integrand(np.array(m), np.array(v))) * dt
            m, v = (1 + a1 * dt) * m + c1 * dt, (1 + a1 * dt) ** 2 * v + g * g * dt
        return dim * total
    nodes, weights = np.polynomial.legendre.leggauss(200)
    t = 0.5 * t1 * (nodes + 1)
    w = 0.5 * t1 * weights
    if abs(a1) < 1e-12:
        m, v = c1 * t, 1.0 + g * g * t
    else:
        e1, e2 = np.exp(a1 * t), np.exp(2 * a1 * t)
        m = c1 / a1 * (e1 - 1.0)
        v = e2 + g * g / (2 * a1) * (e2 - 1.0)
    return dim * float(np.sum(w * integrand(m, v)))


def mixture_sde_stiffness(diffusion: float, *mixtures: GaussianMixture) -> float:
    """Stiffness g^2 / (2 v_min) of SDE drifts of straight-line Gaussian-mixture paths (x0 ~ N(0, I)).

    Component k of such a path has variance v_k(t) = (1 - t)^2 + t^2 s_k^2, smallest at
    t = 1 / (1 + s_k^2) where it is s_k^2 / (1 + s_k^2); the score term (g^2/2) grad log p_t has a
    Jacobian of size up to g^2 / (2 v_min) there, which sets the Euler–Maruyama step needed for a
    given accuracy (weak error ~ dt times this rate).
    """
    g = check_finite_number("diffusion", diffusion, minimum=0.0)
    if not mixtures:
        raise ValueError("mixture_sde_stiffness needs at least one GaussianMixture")
    v_min = 1.0
    for i, m in enumerate(mixtures):
        if not isinstance(m, GaussianMixture):
            raise TypeError(f"mixtures[{i}] must be a GaussianMixture, got {type(m).__name__}")
        s2 = m.stds.double() ** 2
        v_min = min(v_min, float((s2 / (1 + s2)).min()))
    return g * g / (2 * v_min)


def stiffness_adjusted_steps(steps: int, stiffness: float, *, reference: float, multiple: int = 1) -> int:
    """Euler–Maruyama steps that keep dt * stiffness at most the value for ``steps`` at ``reference``.

    Returns max(steps, ceil(steps * stiffness / reference)) rounded up to a multiple of ``multiple``:
    ``steps`` is what a profile uses for a drift of stiffness <= ``reference``; stiffer drifts (narrow
    mixture components, a large diffusion) get proportionally more steps.
    """
    steps = check_positive_int("steps", steps)
    stiffness = check_finite_number("stiffness", stiffness, minimum=0.0)
    reference = check_finite_number("reference", reference, minimum=0.0, strict=True)
    multiple = check_positive_int("multiple", multiple)
    n = max(steps, math.ceil(steps * stiffness / reference - 1e-9))
    return int(math.ceil(n / multiple) * multiple)
