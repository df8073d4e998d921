"""Conditional probability paths and their regression targets.

Convention: t = 0 is noise (x0 ~ N(0, I)), t = 1 is data (x1). For a pair (x0, x1) the conditional
path is

    x_t = mu_t + sigma_t z,   mu_t = (1 - t) x0 + t x1,   sigma_t = sigma * sqrt(t (1 - t)),   z ~ N(0, I).

``sigma = 0`` is the straight line; ``sigma > 0`` is the Brownian bridge of diffusion ``sigma``.

Regression targets (their conditional mean given x_t is the marginal field, see THEORY.md):

- conditional ODE velocity  u = x1 - x0 + (sigma_t' / sigma_t) (x_t - mu_t)
  with sigma_t' / sigma_t = (1 - 2t) / (2 t (1 - t));
- conditional score         s = -(x_t - mu_t) / sigma_t^2          (sigma > 0 only);
- conditional SDE drift     b = u + g^2 / 2 * s for a diffusion g  (g > 0 needs sigma > 0);
  with g = sigma it equals the Brownian-bridge drift (x1 - x_t) / (1 - t).

With ``sigma > 0`` these formulas are singular at t = 0 and t = 1, so t must lie strictly inside
(0, 1); ``t_eps`` keeps sampled times in [t_eps, 1 - t_eps]. Shapes: batches are ``(n, *shape)``
(``(n, d)`` or ``(n, C, H, W)``), times are a float or an ``(n,)`` tensor.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from gftlib.validation import check_bool, check_finite_number, check_same_shape, check_tensor

__all__ = ["PathSample", "Interpolant"]


@dataclass(frozen=True)
class PathSample:
    """One batch on the conditional path, with its regression target.

    ``t``: (n,); ``x0``, ``x1``, ``xt``, ``target``: (n, *shape). ``target`` is the conditional ODE
    velocity (``diffusion = 0``) or the conditional SDE drift for the given diffusion.
    """

    t: Tensor
    x0: Tensor
    x1: Tensor
    xt: Tensor
    target: Tensor


def _expand(t: Tensor, like: Tensor) -> Tensor:
    """(n,) -> (n, 1, ..., 1) matching ``like``'s rank."""
    return t.reshape(t.shape[0], *([1] * (like.ndim - 1)))


class Interpolant:
    """x_t = (1 - t) x0 + t x1 + sigma_t z,  sigma_t = sigma * sqrt(t (1 - t)).

    ``sigma = 0``: straight line (conditional OT path). ``sigma > 0``: Brownian bridge of diffusion
    ``sigma`` (t must then stay in the open interval (0, 1)). ``t_eps`` in [0, 0.5): sampled times
    are uniform on [t_eps, 1 - t_eps].
    """

    def __init__(self, sigma: float = 0.0, t_eps: float = 0.0) -> None:
        self.sigma = check_finite_number("sigma", sigma, minimum=0.0)
        self.t_eps = check_finite_number("t_eps", t_eps, minimum=0.0)
        if not self.t_eps < 0.5:
            raise ValueError(f"t_eps must be a finite number >= 0 and < 0.5, got {t_eps!r}")

    def __repr__(self) -> str:
        return f"Interpolant(sigma={self.sigma:g}, t_eps={self.t_eps:g})"

    # ------------------------------------------------------------------ validation
    def _check_pair(self, x0: Tensor, x1: Tensor, *, values: bool = True) -> None:
        check_tensor("x0", x0, min_ndim=2, finite=values)
        check_tensor("x1", x1, min_ndim=2, finite=values)
        check_same_shape("x0", x0, "x1", x1)

    def _check_t(self, t: float | Tensor, n: int, like: Tensor, *, ends_ok: bool = False,
                 values: bool = True) -> Tensor:
        """Return t as an (n,) tensor on like's device/dtype after range checks.

        Unless ``ends_ok``, t must avoid 0 and 1 when sigma > 0. ``values=False`` keeps the shape
        check and skips the value checks (finite, in range), which read t back to the host."""
        if isinstance(t, Tensor):
            if t.ndim == 0:
                t = t.reshape(1).expand(n)
            if t.shape != (n,):
                raise ValueError(f"t must be a float or a tensor of shape ({n},), got shape {tuple(t.shape)}")
            check_tensor("t", t, finite=values)
            t = t.to(device=like.device, dtype=like.dtype)
        else:
            value = check_finite_number("t", t, minimum=0.0, maximum=1.0)
            t = torch.full((n,), value, device=like.device, dtype=like.dtype)
        if not values:
            return t
        lo, hi = float(t.min()), float(t.max())
        if lo < 0.0 or hi > 1.0:
            raise ValueError(f"t must lie in [0, 1], got values in [{lo:g}, {hi:g}]")
        if self.sigma > 0 and not ends_ok and (lo <= 0.0 or hi >= 1.0):
            raise ValueError(
                f"t must lie strictly inside (0, 1) when sigma > 0 (the bridge formulas are singular at "
                f"the ends), got values in [{lo:g}, {hi:g}]; use t_eps > 0"
            )
        return t

    def _check_diffusion(self, diffusion: float) -> float:
        g = check_finite_number("diffusion", diffusion, minimum=0.0)
        if g > 0 and self.sigma == 0:
            raise ValueError(
                f"diffusion={g:g} > 0 needs a stochastic interpolant (sigma > 0), got sigma=0: the "
                f"conditional score of the straight-line path does not exist"
            )
        return g

    # ------------------------------------------------------------------ unchecked formulas
    def _std(self, t: Tensor) -> Tensor:
        return self.sigma * torch.sqrt(t * (1 - t))

    def _mean(self, x0: Tensor, x1: Tensor, t: Tensor) -> Tensor:
        te = _expand(t, x0)
        return (1 - te) * x0 + te * x1

    def _drift(self, x0: Tensor, x1: Tensor, t: Tensor, xt: Tensor, g: float) -> Tensor:
        """x1 - x0 + a(t) (xt - mu_t), a(t) = [sigma^2 (1 - 2t) - g^2] / (2 sigma^2 t (1 - t))."""
        if self.sigma == 0:
            return x1 - x0
        s2 = self.sigma**2
        a = (s2 * (1 - 2 * t) - g**2) / (2 * s2 * t * (1 - t))
        return x1 - x0 + _expand(a, xt) * (xt - self._mean(x0, x1, t))

    # ------------------------------------------------------------------ public API
    def std(self, t: float | Tensor) -> Tensor:
        """sigma_t = sigma * sqrt(t (1 - t)), shape like t ((n,) or scalar tensor), float64 for a float t."""
        if isinstance(t, Tensor):
            check_tensor("t", t)
            if t.numel() and (float(t.min()) < 0 or float(t.max()) > 1):
                lo, hi = float(t.min()), float(t.max())
                raise ValueError(f"t must lie in [0, 1], got values in [{lo:g}, {hi:g}]")
            return self._std(t)
        value = check_finite_number("t", t, minimum=0.0, maximum=1.0)
        return torch.tensor(self.sigma * math.sqrt(value * (1 - value)), dtype=torch.float64)

    def mean(self, x0: Tensor, x1: Tensor, t: float | Tensor) -> Tensor:
        """mu_t = (1 - t) x0 + t x1, shape (n, *shape)."""
        self._check_pair(x0, x1)
        t = self._check_t(t, x0.shape[0], x0, ends_ok=True)
        return self._mean(x0, x1, t)

    def conditional_velocity(self, x0: Tensor, x1: Tensor, t: float | Tensor, xt: Tensor) -> Tensor:
        """ODE target u_t(x_t | x0, x1) = x1 - x0 + (1 - 2t) / (2 t (1 - t)) (x_t - mu_t)."""
        return self.conditional_drift(x0, x1, t, xt, diffusion=0.0)

    def conditional_score(self, x0: Tensor, x1: Tensor, t: float | Tensor, xt: Tensor) -> Tensor:
        """grad log N(x_t; mu_t, sigma_t^2 I) = -(x_t - mu_t) / sigma_t^2 (needs sigma > 0)."""
        if self.sigma == 0:
            raise ValueError(
                "the conditional score needs sigma > 0 (the straight-line path is a point mass), got sigma=0"
            )
        self._check_pair(x0, x1)
        check_tensor("xt", xt)
        check_same_shape("x0", x0, "xt", xt)
        t = self._check_t(t, x0.shape[0], x0)
        return -(xt - self._mean(x0, x1, t)) / _expand(self._std(t) ** 2, xt)

    def conditional_drift(self, x0: Tensor, x1: Tensor, t: float | Tensor, xt: Tensor,
                          diffusion: float) -> Tensor:
        """SDE target u + diffusion^2 / 2 * score; diffusion = sigma gives (x1 - x_t) / (1 - t)."""
        g = self._check_diffusion(diffusion)
        self._check_pair(x0, x1)
        check_tensor("xt", xt)
        check_same_shape("x0", x0, "xt", xt)
        t = self._check_t(t, x0.shape[0], x0)
        return self._drift(x0, x1, t, xt, g)

    def sample(self, x0: Tensor, x1: Tensor, *, t: float | Tensor | None = None,
               generator: torch.Generator | None = None, diffusion: float = 0.0,
               check_values: bool = True) -> PathSample:
        """Draw t (if None: uniform on [t_eps, 1 - t_eps]) and z from ``generator``; return the path
        point and its target (ODE velocity for diffusion 0, SDE drift otherwise).

        ``check_values=False`` skips the data-dependent checks (x0, x1, t finite; t in range), each of
        which reads a value back to the host (a device synchronisation on GPUs); shapes, types and
        parameters are still checked. Meant for tensors the library produced itself (the objectives'
        hot path validates its data once, where it enters). Times drawn here (t None) are in range
        by construction and never read back.

        A generator is required whenever randomness is used (t is None or sigma > 0). With sigma > 0
        and t_eps = 0, drawn times are clamped to [eps, 1 - eps] (eps of x0's dtype), a measure-zero
        change that keeps a float32 rounding to 1 from hitting the singular end; the targets'
        variance still grows like 1 / (t (1 - t)) near the ends, so t_eps ~ 1e-3 is advisable.
        """
        g = self._check_diffusion(diffusion)
        check_bool("check_values", check_values)
        self._check_pair(x0, x1, values=check_values)
        n = x0.shape[0]
        drawn = t is None
        if (t is None or self.sigma > 0) and not isinstance(generator, torch.Generator):
            raise TypeError(
                "sample needs generator=torch.Generator to draw "
                + ("t" if t is None else "z") + f", got {type(generator).__name__}"
            )
        if t is None:
            u = torch.rand(n, generator=generator, device=generator.device, dtype=torch.float64)
            t = (self.t_eps + (1 - 2 * self.t_eps) * u).to(device=x0.device, dtype=x0.dtype)
            if self.sigma > 0:  # keep a measure-zero draw (or a rounding to 1 in float32) off the ends
                eps = torch.finfo(x0.dtype).eps
                t = t.clamp(eps, 1 - eps)
        t = self._check_t(t, n, x0, values=check_values and not drawn)
        mu = self._mean(x0, x1, t)
        if self.sigma > 0:
            z = torch.randn(x0.shape, generator=generator, device=generator.device, dtype=x0.dtype)
            xt = mu + _expand(self._std(t), x0) * z.to(x0.device)
        else:
            xt = mu
        target = self._drift(x0, x1, t, xt, g)
        return PathSample(t=t, x0=x0, x1=x1, xt=xt, target=target)
