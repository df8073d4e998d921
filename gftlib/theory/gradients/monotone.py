"""1-D monotone couplings x1 = T(x0), x0 ~ N(0, 1), and their exact marginal velocity (THEORY T4).

:func:`quantile_map` is the 1-D OT map of N(0, 1) to a Gaussian mixture, :func:`monotone_grid` the knots
of a piecewise-linear approximation of it, :class:`MonotoneCoupling` the coupling of any increasing
piecewise-linear map (the OT map, or the flow map of a pretrained 1-D ODE) with the Brownian-bridge
path and its exact marginal (probability-flow) velocity. float64; t = 0 noise, t = 1 data.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from gftlib.theory.analytic import GaussianMixture
from gftlib.validation import check_finite_number, check_positive_int, check_tensor

__all__ = ["quantile_map", "monotone_grid", "MonotoneCoupling"]

_F64 = torch.float64


def _mixture_cdf_sf(mix: GaussianMixture, y: Tensor) -> tuple[Tensor, Tensor]:
    """CDF and survival function of a 1-D mixture at y (m,), each accurate in its own tail."""
    z = (y[:, None] - mix.means[None, :, 0]) / mix.stds[None]
    w = mix.weights[None]
    cdf = (0.5 * torch.erfc(-z / math.sqrt(2.0)) * w).sum(1)
    sf = (0.5 * torch.erfc(z / math.sqrt(2.0)) * w).sum(1)
    return cdf, sf


def quantile_map(mixture: GaussianMixture, x0: Tensor, *, iterations: int = 200) -> Tensor:
    """The 1-D optimal transport (monotone rearrangement) map from N(0, 1) to ``mixture``:
    T(x0) = F^{-1}(Phi(x0)), by bisection in float64 (on the survival function for x0 > 0, so both
    tails keep full relative precision). x0: (m,) -> (m,)."""
    if not isinstance(mixture, GaussianMixture):
        raise TypeError(f"mixture must be a GaussianMixture, got {type(mixture).__name__}")
    if mixture.dim != 1:
        raise ValueError(f"mixture must be 1-D, got dimension {mixture.dim}")
    check_tensor("x0", x0, ndim=1)
    iterations = check_positive_int("iterations", iterations, minimum=10)
    g = x0.to(_F64)
    upper = g > 0
    level = 0.5 * torch.erfc(torch.where(upper, g, -g) / math.sqrt(2.0))   # Phi(-|g|): the smaller tail
    mu, s = mixture.means[:, 0], mixture.stds
    reach = float(g.abs().max()) + 2.0 if g.numel() else 2.0              # |T(x0)| <= max|mu| + reach max s
    lo = torch.full_like(g, float((mu - reach * s).min()) - 1.0)
    hi = torch.full_like(g, float((mu + reach * s).max()) + 1.0)
    for _ in range(iterations):
        mid = 0.5 * (lo + hi)
        cdf, sf = _mixture_cdf_sf(mixture, mid)
        # lower half (x0 <= 0): increase y while CDF(y) < level; upper half: while SF(y) > level
        go_right = torch.where(upper, sf > level, cdf < level)
        lo = torch.where(go_right, mid, lo)
        hi = torch.where(go_right, hi, mid)
        if float((hi - lo).max()) <= 4 * torch.finfo(_F64).eps * max(1.0, float(hi.abs().max())):
            break
    return 0.5 * (lo + hi)


def _chord_ok(pts: np.ndarray, i: int, j: int, tol: float) -> bool:
    """Do the points strictly between i and j lie within ``tol`` (perpendicular) of the chord i-j?"""
    if j <= i + 1:
        return True
    d = pts[j] - pts[i]
    rel = pts[i + 1:j] - pts[i]
    dist = np.abs(d[0] * rel[:, 1] - d[1] * rel[:, 0]) / np.hypot(d[0], d[1])
    return bool(dist.max() <= tol)


def monotone_grid(mixture: GaussianMixture, *, tol: float = 1e-3, half_width: float = 8.5,
                  resolution: float = 0.005) -> Tensor:
    """Knots x0 (K,) on [-half_width, half_width] of a piecewise-linear approximation of the quantile map T
    of ``mixture`` whose graph stays within ``tol`` (perpendicular distance in the (x0, x1) plane) of the
    true graph, sampled at ``resolution`` in x0 and in x1 (a uniform x0 grid united with the preimages
    T^{-1}(y) = Phi^{-1}(F(y)) of a uniform y grid, so steep parts between separated modes are resolved).
    Knots are chosen greedily (longest chord within ``tol``): few where T is smooth, many where it bends."""
    if not isinstance(mixture, GaussianMixture) or mixture.dim != 1:
        raise TypeError(f"mixture must be a 1-D GaussianMixture, got {mixture!r}")
    tol = check_finite_number("tol", tol, minimum=0.0, strict=True)
    h = check_finite_number("resolution", resolution, minimum=0.0, strict=True)
    hw = check_finite_number("half_width", half_width, minimum=0.0, strict=True)
    base = torch.linspace(-hw, hw, int(math.ceil(2 * hw / h)) + 1, dtype=_F64)
    ends = quantile_map(mixture, torch.tensor([-hw, hw], dtype=_F64))
    ys = torch.linspace(float(ends[0]), float(ends[1]), int(math.ceil(float(ends[1] - ends[0]) / h)) + 1,
                        dtype=_F64)[1:-1]
    cdf, sf = _mixture_cdf_sf(mixture, ys)
    pre = torch.where(cdf < 0.5, torch.special.ndtri(cdf.clamp_min(1e-300)),
                      -torch.special.ndtri(sf.clamp_min(1e-300)))
    pre = pre[(pre > -hw) & (pre < hw)]
    fine = torch.unique(torch.cat([base, pre]))          # sorted
    fine = fine[torch.cat([torch.tensor([True]), fine[1:] - fine[:-1] > 1e-12 * hw])]
    pts = torch.stack([fine, quantile_map(mixture, fine)], dim=1).numpy()
    keep, i, last = [0], 0, len(pts) - 1
    while i < last:
        step = 1                                           # gallop, then bisect, for the longest valid chord
        while i + 2 * step <= last and _chord_ok(pts, i, i + 2 * step, tol):
            step *= 2
        lo, hi = i + step, min(i + 2 * step, last)
        if _chord_ok(pts, i, hi, tol):
            lo = hi
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if _chord_ok(pts, i, mid, tol):
                lo = mid
            else:
                hi = mid
        keep.append(lo)
        i = lo
    return fine[keep]


class MonotoneCoupling:
    """Deterministic coupling x1 = T(x0), x0 ~ N(0, 1), of a piecewise-linear increasing map T given by
    a table (``x0_grid`` (K,) strictly increasing, ``x1_grid`` (K,) strictly increasing; linear
    extrapolation with the end slopes), with the Brownian-bridge path of noise level ``sigma`` > 0:

        x_t = (1 - t) x0 + t T(x0) + sigma_t z,   sigma_t = sigma sqrt(t (1 - t)).

    :meth:`velocity` is the exact marginal (probability-flow) velocity E[u | x_t = x] of the
    conditional ODE target u = T(x0) - x0 + (1 - 2t) / (2 t (1 - t)) (x_t - mu_t(x0)), by quadrature
    over y = mu_t(x0) = (1 - t) x0 + t T(x0): y has density rho_t(y) = phi(x0) / ((1 - t) + t T'(x0)) and
    the posterior of y given x_t = x is proportional to rho_t(y) N(x; y, sigma_t^2), integrated with the
    trapezoid rule on ``nodes`` points y = x + sigma_t s, s in [-width, width] (spectrally accurate for
    the Gaussian kernel when rho_t varies slowly on the scale sigma_t).
    """

    def __init__(self, x0_grid: Tensor, x1_grid: Tensor, sigma: float) -> None:
        check_tensor("x0_grid", x0_grid, ndim=1)
        check_tensor("x1_grid", x1_grid, ndim=1)
        if x0_grid.shape != x1_grid.shape or x0_grid.shape[0] < 2:
            raise ValueError(f"x0_grid and x1_grid must have the same shape (K,) with K >= 2, got "
                             f"{tuple(x0_grid.shape)} and {tuple(x1_grid.shape)}")
        g, v = x0_grid.to(_F64).cpu(), x1_grid.to(_F64).cpu()
        if not bool((g[1:] > g[:-1]).all()):
            raise ValueError("x0_grid must be strictly increasing")
        bad = torch.nonzero(v[1:] <= v[:-1])
        if bad.numel():
            k = int(bad[0, 0])
            raise ValueError(f"x1_grid must be strictly increasing (a monotone map), but x1_grid[{k + 1}]="
                             f"{float(v[k + 1]):.6g} <= x1_grid[{k}]={float(v[k]):.6g}")
        self.sigma = check_finite_number("sigma", sigma, minimum=0.0, strict=True)
        self.x0_grid, self.x1_grid = g, v
        self.slopes = (v[1:] - v[:-1]) / (g[1:] - g[:-1])                    # (K-1,)

    def __repr__(self) -> str:
        return (f"MonotoneCoupling(K={self.x0_grid.shape[0]}, x0 in [{float(self.x0_grid[0]):g}, "
                f"{float(self.x0_grid[-1]):g}], sigma={self.sigma:g})")

    @classmethod
    def from_mixture(cls, mixture: GaussianMixture, sigma: float, *, tol: float = 1e-3,
                     half_width: float = 8.5) -> MonotoneCoupling:
        """The 1-D OT coupling of N(0, 1) and ``mixture``: its quantile map, piecewise linear on the knots of
        :func:`monotone_grid` (graph within ``tol`` of the exact map)."""
        grid = monotone_grid(mixture, tol=tol, half_width=half_width)
        return cls(grid, quantile_map(mixture, grid), sigma)

    def map(self, x0: Tensor) -> Tensor:
        """T(x0) for x0 (n,) or (n, 1); same shape, float64."""
        check_tensor("x0", x0)
        flat = x0.reshape(-1).to(_F64).cpu()
        k = torch.clamp(torch.searchsorted(self.x0_grid, flat) - 1, 0, self.x0_grid.shape[0] - 2)
        out = self.x1_grid[k] + self.slopes[k] * (flat - self.x0_grid[k])
        return out.reshape(x0.shape).to(x0.device)

    def _check_t(self, t: Tensor, n: int) -> Tensor:
        check_tensor("t", t, ndim=1)
        if t.shape[0] != n:
            raise ValueError(f"t must have shape ({n},), got {tuple(t.shape)}")
        if n and (float(t.min()) <= 0.0 or float(t.max()) >= 1.0):
            raise ValueError(f"t must lie strictly inside (0, 1) (the bridge is singular at the ends), got values "
                             f"in [{float(t.min()):g}, {float(t.max()):g}]")
        return t.to(_F64).cpu()

    def _locate(self, y: Tensor, t: Tensor) -> Tensor:
        """Index k in [0, K-2] of the cell with mu_t(g_k) <= y < mu_t(g_{k+1}) (clamped: the end cells
        extend to -inf / +inf). y, t: (m,)."""
        g, v = self.x0_grid, self.x1_grid
        lo = torch.zeros(y.shape, dtype=torch.long)
        hi = torch.full(y.shape, g.shape[0] - 1, dtype=torch.long)
        for _ in range(int(math.ceil(math.log2(g.shape[0]))) + 1):
            mid = (lo + hi) // 2
            right = (1 - t) * g[mid] + t * v[mid] <= y
            lo = torch.where(right, mid, lo)
            hi = torch.where(right, hi, mid)
        return torch.clamp(lo, 0, g.shape[0] - 2)

    def _velocity_rows(self, x: Tensor, t: Tensor, k_lo: Tensor, k_hi: Tensor, n_cells: int) -> Tensor:
        """Exact velocity at x (m,), t (m,) summing the cells k_lo .. k_hi of each row (padded to n_cells
        columns and masked) -- see :meth:`velocity`."""
        g, v, slopes = self.x0_grid, self.x1_grid, self.slopes
        last = g.shape[0] - 2
        cells = k_lo[:, None] + torch.arange(n_cells)[None]
        valid = cells <= k_hi[:, None]
        k = cells.clamp(max=last)
        xx, tt = x[:, None], t[:, None]
        var_t = self.sigma**2 * tt * (1 - tt)                                  # sigma_t^2
        slope = slopes[k]
        beta = (1 - tt) + tt * slope                                           # mu_t = alpha + beta x0 on the cell
        alpha = tt * (v[k] - slope * g[k])
        s2 = var_t + beta * beta
        resid = xx - alpha
        log_norm = -0.5 * resid * resid / s2 - 0.5 * torch.log(2 * math.pi * s2)
        m = beta * resid / s2                                                  # cell-wise posterior N(m, w) of x0
        w = var_t / s2
        sd = torch.sqrt(w)
        inf = torch.tensor(math.inf, dtype=_F64)
        a = torch.where(k == 0, -inf, g[k])
        b = torch.where(k == last, inf, g[k + 1])
        za, zb = (a - m) / sd, (b - m) / sd
        # log(Phi(zb) - Phi(za)) without cancellation in either tail
        upper = za >= 0
        lower = zb <= 0
        l1 = torch.special.log_ndtr(torch.where(upper, -za, zb))
        l2 = torch.special.log_ndtr(torch.where(upper, -zb, za))
        tails = l1 + torch.log1p(-torch.exp(l2 - l1).clamp(max=1.0))
        middle = torch.log1p(-(torch.special.ndtr(za) + torch.special.ndtr(-zb)).clamp(max=1.0))
        log_dphi = torch.where(upper | lower, tails, middle)
        log_mass = torch.where(valid, log_norm + log_dphi, -inf)
        top = log_mass.max(dim=1, keepdim=True).values
        mass = torch.exp(log_mass - top)

        def log_f(z: Tensor) -> Tensor:                                       # log phi(z) N(x; mu_t(z), sigma_t^2)
            mu = alpha + beta * z
            return (-0.5 * z * z - 0.5 * (xx - mu) ** 2 / var_t - 0.5 * torch.log(4 * math.pi**2 * var_t))

        fa = torch.where(valid & torch.isfinite(a), torch.exp(log_f(a.nan_to_num(0.0, 0.0, 0.0)) - top), 0.0)
        fb = torch.where(valid & torch.isfinite(b), torch.exp(log_f(b.nan_to_num(0.0, 0.0, 0.0)) - top), 0.0)
        moment = m * mass + w * (fa - fb)                                     # int_cell x0 f(x0) dx0
        z = mass.sum(1)
        e_drift = ((v[k] - slope * g[k]) * mass + (slope - 1) * moment).sum(1) / z      # E[T(x0) - x0 | x]
        e_resid = ((resid * mass) - beta * moment).sum(1) / z                            # E[x - mu_t(x0) | x]
        a_t = (1 - 2 * t) / (2 * t * (1 - t))
        return e_drift + a_t * e_resid

    def velocity(self, x: Tensor, t: Tensor, *, width: float = 7.0, budget: int = 2**20) -> Tensor:
        """Marginal ODE velocity E[u | x_t = x]: x (n, 1) (or (n,)), t (n,) in (0, 1) -> like x, float64.

        Exact up to float64 rounding for the piecewise-linear map: on each cell mu_t(x0) is linear, so
        phi(x0) N(x; mu_t(x0), sigma_t^2) is a Gaussian in x0 and its mass and first moment over the cell
        are closed-form (normal CDF differences in log space; the first moment via the boundary values of
        the integrand). Only cells whose y-range meets [x - width sigma_t, x + width sigma_t] are summed
        (the others carry relative weight < exp(-width^2 / 2)). ``budget`` bounds rows x cells per batch."""
        check_tensor("x", x)
        width = check_finite_number("width", width, minimum=0.0, strict=True)
        budget = check_positive_int("budget", budget)
        flat = x.reshape(-1).to(_F64).cpu()
        tt = self._check_t(t, flat.shape[0])
        st = self.sigma * torch.sqrt(tt * (1 - tt))
        k_lo = self._locate(flat - width * st, tt)
        k_hi = self._locate(flat + width * st, tt)
        count = k_hi - k_lo + 1
        order = torch.argsort(count)
        sorted_count = count[order]
        out = torch.empty_like(flat)
        start, n = 0, flat.shape[0]
        while start < n:
            # rows sorted by cell count: the cost (rows x largest count) grows with the stop index
            cost = torch.arange(1, n - start + 1) * sorted_count[start:]
            stop = start + max(1, int((cost <= budget).sum()))
            idx = order[start:stop]
            out[idx] = self._velocity_rows(flat[idx], tt[idx], k_lo[idx], k_hi[idx], int(sorted_count[stop - 1]))
            start = stop
        return out.reshape(x.shape).to(x.device)
