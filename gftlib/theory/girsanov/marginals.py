"""Path-space KL from exact samples of the marginals p^1_t (no paths): the time integral of
E_{p^1_t} |b1 - b2|^2 / (2 g^2) on the Euler–Maruyama grid (see :mod:`gftlib.theory.girsanov`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from gftlib.theory.girsanov.common import Diffusion, check_drifts, diffusion_fn, eval_drift, sq_norm
from gftlib.types import VelocityField
from gftlib.validation import check_finite_number, check_positive_int

__all__ = ["MarginalKL", "path_kls_from_marginals"]


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
    the drifts, so the quadrature matches :func:`simulate_log_likelihood_ratios` with the same
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
    others = check_drifts(drifts_2)
    if not callable(sample_marginal):
        raise TypeError("sample_marginal must be callable as f(t, n, generator), "
                        f"got {type(sample_marginal).__name__}")
    g_fn = diffusion_fn(diffusion)
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
            b1 = eval_drift("drift_1", drift_1, x, tk).double()
            scale = dt / (2 * g_fn(tk) ** 2)
            for j, f in enumerate(others):
                b2 = eval_drift(f"drifts_2[{j}]", f, x, tk).double()
                val = sq_norm(b1 - b2) * scale
                means[j].append(val.mean())
                variances[j].append(val.var(unbiased=True))
    widths = (grid[1:] - grid[:-1])
    out = []
    for m_list, v_list in zip(means, variances):
        m, v = torch.stack(m_list).cpu(), torch.stack(v_list).cpu()
        out.append(MarginalKL(value=float(m.sum()), se=float(torch.sqrt(v.sum() / n)), times=grid[:-1],
                              per_time=m / widths))
    return out


