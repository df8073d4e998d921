"""Closed-form ground truth: isotropic Gaussian mixtures and their flow-matching paths.

Convention: t = 0 is noise (x0 ~ N(0, I)), t = 1 is data (x1 ~ mixture).

For a target mixture sum_k w_k N(mu_k, s_k^2 I) and the path x_t = (1 - t) x0 + t x1 + sigma_t z with
sigma_t = sigma sqrt(t (1 - t)), z ~ N(0, I) and the INDEPENDENT coupling, component k of x_t is
N(t mu_k, v_k(t) I) with

    v_k(t) = (1 - t)^2 + t^2 s_k^2 + sigma^2 t (1 - t),
    v_k'(t) = -2 (1 - t) + 2 t s_k^2 + sigma^2 (1 - 2 t).

Within component k the conditional target u = x1 - x0 + sigma_t' z has noise part
W = s_k e - x0 + sigma_t' z (x1 = mu_k + s_k e) and y = x_t - t mu_k = (1 - t) x0 + t s_k e + sigma_t z with
Cov(W, y) = t s_k^2 - (1 - t) + sigma_t sigma_t' = v_k'/2 per coordinate, so

    E[u | x_t = x, k] = mu_k + v_k'(t) / (2 v_k(t)) (x - t mu_k).

The marginal (probability-flow) velocity is the posterior-weighted average over components, the
score is sum_k post_k(x) (-(x - t mu_k) / v_k), and the SDE drift for a diffusion g is
velocity + g^2 / 2 * score. Everything is computed in float64; ``t`` is a float or an (n,) tensor.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from gftlib.validation import check_finite_number, check_positive_int, check_probability_vector, check_tensor

__all__ = [
    "GaussianMixture",
    "GaussianMixturePath",
    "MixtureDrift",
    "gft_mixture_drift",
    "kl_divergence_quadrature",
    "tv_distance_quadrature",
]

_LOG_2PI = math.log(2 * math.pi)
_F64 = torch.float64


def _as_f64(name: str, value: Any) -> Tensor:
    try:
        t = torch.as_tensor(value, dtype=_F64)
    except (TypeError, ValueError, RuntimeError) as err:
        raise TypeError(f"{name} must be numbers (a list or tensor), got {value!r}") from err
    return t.detach().to("cpu")


@dataclass(frozen=True)
class GaussianMixture:
    """sum_k weights[k] N(means[k], stds[k]^2 I_d).

    weights: (K,) probability vector; means: (K, d) (or (K,) for d = 1); stds: (K,) positive (a single
    number is broadcast). Stored as float64 CPU tensors; validated on construction.
    """

    weights: Tensor
    means: Tensor
    stds: Tensor

    def __post_init__(self) -> None:
        w = check_probability_vector("weights", _as_f64("weights", self.weights))
        w = w / w.sum()
        k = w.shape[0]
        mu = _as_f64("means", self.means)
        if mu.ndim == 1 and mu.shape[0] == k:
            mu = mu.reshape(k, 1)
        if mu.ndim != 2 or mu.shape[0] != k or mu.shape[1] < 1:
            raise ValueError(
                f"means must have shape (K, d) or (K,) for d = 1 with K = {k} components (from weights), "
                f"got shape {tuple(mu.shape)}"
            )
        if not bool(torch.isfinite(mu).all()):
            raise ValueError(f"means must be finite, got {mu.tolist()}")
        s = _as_f64("stds", self.stds)
        if s.ndim == 0:
            s = s.expand(k).clone()
        if s.ndim != 1 or s.shape[0] != k:
            raise ValueError(
                f"stds must have shape ({k},) (one std per component), got shape {tuple(s.shape)}"
            )
        if not bool(torch.isfinite(s).all()) or bool((s <= 0).any()):
            raise ValueError(f"stds must be finite and > 0, got {s.tolist()}")
        object.__setattr__(self, "weights", w)
        object.__setattr__(self, "means", mu)
        object.__setattr__(self, "stds", s)

    @classmethod
    def from_dict(cls, spec: Mapping[str, Any], *, name: str = "spec") -> GaussianMixture:
        """Build from ``{"weights": [...], "means": [[...], ...] or [...], "stds": [...]}``; ``name`` is the
        parameter the spec was given as (e.g. a notebook's ``target_mixture``), named by the errors."""
        if not isinstance(spec, Mapping):
            raise TypeError(
                f"{name} must be a dict with keys 'weights', 'means', 'stds', "
                f"got {spec!r} ({type(spec).__name__})"
            )
        missing = [key for key in ("weights", "means", "stds") if key not in spec]
        extra = sorted(set(spec) - {"weights", "means", "stds"})
        if missing or extra:
            raise ValueError(
                f"{name} must have exactly the keys 'weights', 'means', 'stds'; "
                f"missing {missing}, unknown {extra}"
            )
        return cls(weights=spec["weights"], means=spec["means"], stds=spec["stds"])

    def to_dict(self) -> dict[str, list]:
        return {"weights": self.weights.tolist(), "means": self.means.tolist(), "stds": self.stds.tolist()}

    @property
    def dim(self) -> int:
        return int(self.means.shape[1])

    @property
    def n_components(self) -> int:
        return int(self.weights.shape[0])

    def _points(self, x: Tensor, name: str = "x") -> Tensor:
        check_tensor(name, x)
        if x.ndim == 1 and self.dim == 1:
            x = x.reshape(-1, 1)
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"{name} must have shape (n, {self.dim}), got {tuple(x.shape)}")
        return x

    def sample(self, n: int, generator: torch.Generator, *, dtype: torch.dtype = _F64) -> Tensor:
        """n samples, (n, d) on CPU, drawn with ``generator``."""
        n = check_positive_int("n", n)
        if not isinstance(generator, torch.Generator):
            raise TypeError(f"sample needs generator=torch.Generator, got {type(generator).__name__}")
        comp = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        noise = torch.randn(n, self.dim, generator=generator, dtype=_F64)
        return (self.means[comp] + self.stds[comp, None] * noise).to(dtype)

    def component_log_probs(self, x: Tensor) -> Tensor:
        """log w_k + log N(x; mu_k, s_k^2 I): (n, K), float64."""
        x = self._points(x).to(_F64)
        mu, s = self.means.to(x.device), self.stds.to(x.device)
        sq = (x[:, None, :] - mu[None]).pow(2).sum(-1)
        d = self.dim
        return (torch.log(self.weights.to(x.device))[None] - 0.5 * d * (_LOG_2PI + 2 * torch.log(s))[None]
                - 0.5 * sq / s[None] ** 2)

    def log_prob(self, x: Tensor) -> Tensor:
        """log density at x (n, d) (or (n,) for d = 1): (n,), float64."""
        return torch.logsumexp(self.component_log_probs(x), dim=1)

    def cdf_projected(self, x_proj: Tensor, direction: Tensor | Sequence[float] | None = None) -> Tensor:
        """CDF of <u, X> at the values x_proj (n,), X ~ mixture, u a unit vector (d,) (default [1] in 1-D).

        <u, X> is the 1-D mixture sum_k w_k N(<u, mu_k>, s_k^2): CDF = sum_k w_k Phi((y - <u, mu_k>) / s_k).
        """
        if direction is None:
            if self.dim != 1:
                raise ValueError(f"direction is required for a {self.dim}-D mixture")
            direction = [1.0]
        u = _as_f64("direction", direction).reshape(-1)
        if u.shape[0] != self.dim or not bool(torch.isfinite(u).all()):
            raise ValueError(f"direction must be a finite vector of length {self.dim}, got {u.tolist()}")
        norm = float(u.norm())
        if abs(norm - 1.0) > 1e-6:
            raise ValueError(f"direction must be a unit vector (norm 1 within 1e-6), got norm {norm:.6g}")
        check_tensor("x_proj", x_proj)
        y = x_proj.reshape(-1).to(_F64)
        m = (self.means @ u).to(y.device)
        z = (y[:, None] - m[None]) / self.stds.to(y.device)[None]
        return (0.5 * torch.erfc(-z / math.sqrt(2.0)) * self.weights.to(y.device)[None]).sum(1)

    def mix(self, other: GaussianMixture, beta: float) -> GaussianMixture:
        """(self + beta * other) / (1 + beta) as one mixture (components concatenated)."""
        if not isinstance(other, GaussianMixture):
            raise TypeError(f"other must be a GaussianMixture, got {type(other).__name__}")
        if other.dim != self.dim:
            raise ValueError(f"other must have the same dimension {self.dim}, got {other.dim}")
        b = check_finite_number("beta", beta, minimum=0.0)
        w = torch.cat([self.weights, b * other.weights]) / (1.0 + b)
        return GaussianMixture(weights=w, means=torch.cat([self.means, other.means]),
                               stds=torch.cat([self.stds, other.stds]))


def _time(t: float | Tensor, n: int, device: torch.device) -> Tensor:
    """t as a (n, 1) float64 tensor in [0, 1]."""
    if isinstance(t, Tensor):
        check_tensor("t", t)
        if t.ndim == 0:
            t = t.reshape(1).expand(n)
        if t.shape != (n,):
            raise ValueError(f"t must be a float or a tensor of shape ({n},), got shape {tuple(t.shape)}")
        t = t.to(device=device, dtype=_F64)
        if n and (float(t.min()) < 0 or float(t.max()) > 1):
            raise ValueError(f"t must lie in [0, 1], got values in [{float(t.min()):g}, {float(t.max()):g}]")
    else:
        value = check_finite_number("t", t, minimum=0.0, maximum=1.0)
        t = torch.full((n,), value, dtype=_F64, device=device)
    return t[:, None]


class GaussianMixturePath:
    """Marginal path of x_t = (1 - t) x0 + t x1 + sigma sqrt(t (1 - t)) z, x0 ~ N(0, I), x1 ~ ``target``,
    independent coupling. Methods take x: (n, d) and t: float or (n,); results are float64 on x's
    device ((n,) for densities, (n, d) for fields)."""

    def __init__(self, target: GaussianMixture, sigma: float = 0.0) -> None:
        if not isinstance(target, GaussianMixture):
            raise TypeError(f"target must be a GaussianMixture, got {type(target).__name__}")
        self.target = target
        self.sigma = check_finite_number("sigma", sigma, minimum=0.0)

    def __repr__(self) -> str:
        return f"GaussianMixturePath(K={self.target.n_components}, d={self.target.dim}, sigma={self.sigma:g})"

    @property
    def dim(self) -> int:
        return self.target.dim

    def variances(self, t: Tensor) -> tuple[Tensor, Tensor]:
        """v_k(t), v_k'(t) for t (m, 1): each (m, K)."""
        s2 = self.target.stds.to(t.device) ** 2
        sig2 = self.sigma**2
        v = (1 - t) ** 2 + t**2 * s2[None] + sig2 * t * (1 - t)
        dv = -2 * (1 - t) + 2 * t * s2[None] + sig2 * (1 - 2 * t)
        return v, dv

    def marginal(self, t: float) -> GaussianMixture:
        """p_t as a GaussianMixture: components N(t mu_k, v_k(t) I)."""
        tt = check_finite_number("t", t, minimum=0.0, maximum=1.0)
        v, _ = self.variances(torch.tensor([[tt]], dtype=_F64))
        return GaussianMixture(weights=self.target.weights, means=tt * self.target.means, stds=v[0].sqrt())

    def _parts(self, x: Tensor, t: float | Tensor):
        x = self.target._points(x).to(_F64)
        tt = _time(t, x.shape[0], x.device)
        v, dv = self.variances(tt)                                    # (n, K)
        mu = self.target.means.to(x.device)                           # (K, d)
        diff = x[:, None, :] - tt[:, :, None] * mu[None]              # (n, K, d)
        d = self.dim
        logc = (torch.log(self.target.weights.to(x.device))[None] - 0.5 * d * (_LOG_2PI + torch.log(v))
                - 0.5 * diff.pow(2).sum(-1) / v)                      # (n, K)
        return x, mu, v, dv, diff, logc

    def log_prob(self, x: Tensor, t: float | Tensor) -> Tensor:
        """log p_t(x): (n,)."""
        *_, logc = self._parts(x, t)
        return torch.logsumexp(logc, dim=1)

    def score(self, x: Tensor, t: float | Tensor) -> Tensor:
        """grad_x log p_t(x) = sum_k post_k (-(x - t mu_k) / v_k): (n, d)."""
        _, _, v, _, diff, logc = self._parts(x, t)
        post = torch.softmax(logc, dim=1)
        return -(post[:, :, None] * diff / v[:, :, None]).sum(1)

    def velocity(self, x: Tensor, t: float | Tensor) -> Tensor:
        """Probability-flow ODE velocity E[x1 - x0 + sigma_t' z | x_t = x]: (n, d)."""
        _, mu, v, dv, diff, logc = self._parts(x, t)
        post = torch.softmax(logc, dim=1)
        comp = mu[None] + (dv / (2 * v))[:, :, None] * diff
        return (post[:, :, None] * comp).sum(1)

    def drift(self, x: Tensor, t: float | Tensor, diffusion: float) -> Tensor:
        """SDE drift for diffusion g with the same marginals: velocity + g^2 / 2 * score: (n, d)."""
        g = check_finite_number("diffusion", diffusion, minimum=0.0)
        _, mu, v, dv, diff, logc = self._parts(x, t)
        post = torch.softmax(logc, dim=1)
        comp = mu[None] + ((dv - g**2) / (2 * v))[:, :, None] * diff
        return (post[:, :, None] * comp).sum(1)


class MixtureDrift:
    """b*_beta(x, t) = (p_tgt b_tgt + beta p_pre b_pre) / (p_tgt + beta p_pre), weights in log space.

    Call with x: (n, d), t: float or (n,); returns (n, d) in x's dtype. ``weight_target(x, t)`` is
    the posterior weight p_tgt / (p_tgt + beta p_pre) (n,)."""

    def __init__(self, tgt: GaussianMixturePath, pre: GaussianMixturePath, beta: float,
                 diffusion: float) -> None:
        self.tgt, self.pre, self.beta, self.diffusion = tgt, pre, beta, diffusion

    def __repr__(self) -> str:
        return f"MixtureDrift(beta={self.beta:g}, diffusion={self.diffusion:g})"

    def weight_target(self, x: Tensor, t: float | Tensor) -> Tensor:
        la = self.tgt.log_prob(x, t)
        if self.beta == 0:
            return torch.ones_like(la)
        lb = math.log(self.beta) + self.pre.log_prob(x, t)
        return torch.sigmoid(la - lb)

    def __call__(self, x: Tensor, t: float | Tensor) -> Tensor:
        lam = self.weight_target(x, t)[:, None]
        out = lam * self.tgt.drift(x, t, self.diffusion)
        if self.beta > 0:
            out = out + (1 - lam) * self.pre.drift(x, t, self.diffusion)
        return out.to(x.dtype)


def gft_mixture_drift(tgt_path: GaussianMixturePath, pre_path: GaussianMixturePath, beta: float,
                      diffusion: float = 0.0) -> MixtureDrift:
    """The GFT minimizer b*_beta of THEORY T2 for two analytic paths (diffusion g for both drifts)."""
    for name, p in (("tgt_path", tgt_path), ("pre_path", pre_path)):
        if not isinstance(p, GaussianMixturePath):
            raise TypeError(f"{name} must be a GaussianMixturePath, got {type(p).__name__}")
    if tgt_path.dim != pre_path.dim:
        raise ValueError(
            f"tgt_path and pre_path must have the same dimension, got {tgt_path.dim} and {pre_path.dim}"
        )
    b = check_finite_number("beta", beta, minimum=0.0)
    g = check_finite_number("diffusion", diffusion, minimum=0.0)
    return MixtureDrift(tgt_path, pre_path, b, g)


def _grid_1d(p: GaussianMixture, q: GaussianMixture, lo: float | None, hi: float | None, n: int) -> Tensor:
    for name, m in (("p", p), ("q", q)):
        if not isinstance(m, GaussianMixture):
            raise TypeError(f"{name} must be a GaussianMixture, got {type(m).__name__}")
        if m.dim != 1:
            raise ValueError(f"{name} must be a 1-D mixture for quadrature, got dimension {m.dim}")
    n = check_positive_int("n", n, minimum=3)
    mus = torch.cat([p.means[:, 0], q.means[:, 0]])
    ss = torch.cat([p.stds, q.stds])
    lo = float((mus - 12 * ss).min()) if lo is None else check_finite_number("lo", lo)
    hi = float((mus + 12 * ss).max()) if hi is None else check_finite_number("hi", hi)
    if not hi > lo:
        raise ValueError(f"hi must be > lo, got lo={lo:g}, hi={hi:g}")
    return torch.linspace(lo, hi, n, dtype=_F64)


def kl_divergence_quadrature(p: GaussianMixture, q: GaussianMixture, lo: float | None = None,
                             hi: float | None = None, n: int = 20001) -> float:
    """KL(p || q) = int p log(p / q) for 1-D mixtures, trapezoid rule on n points of [lo, hi]
    (default: all components' mean -/+ 12 std), float64."""
    x = _grid_1d(p, q, lo, hi, n)
    lp, lq = p.log_prob(x), q.log_prob(x)
    dens = lp.exp()
    integrand = torch.where(dens > 0, dens * (lp - lq), torch.zeros_like(dens))
    return float(torch.trapezoid(integrand, x))


def tv_distance_quadrature(p: GaussianMixture, q: GaussianMixture, lo: float | None = None,
                           hi: float | None = None, n: int = 20001) -> float:
    """TV(p, q) = 1/2 int |p - q| for 1-D mixtures, trapezoid rule (as kl_divergence_quadrature)."""
    x = _grid_1d(p, q, lo, hi, n)
    return 0.5 * float(torch.trapezoid((p.log_prob(x).exp() - q.log_prob(x).exp()).abs(), x))
