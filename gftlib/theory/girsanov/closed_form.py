"""Closed forms and step-size rules for the Girsanov checks: the path KL of affine drifts (continuous
time and Euler–Maruyama chains), the stiffness of mixture SDE drifts, and affine drift fields.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
from torch import Tensor

from gftlib.theory.analytic import GaussianMixture
from gftlib.validation import check_finite_number, check_positive_int

__all__ = ["affine_drift_path_kl", "mixture_sde_stiffness", "stiffness_adjusted_steps", "linear_drift"]


def linear_drift(a: float, c: float) -> Callable[[Tensor, Tensor], Tensor]:
    """The affine drift ``b(x, t) = a x + c`` (c added to every coordinate): x (n, d), t (n,) -> (n, d)."""
    a = check_finite_number("a", a)
    c = check_finite_number("c", c)

    def drift(x: Tensor, t: Tensor) -> Tensor:
        return a * x + c

    return drift


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
    :func:`simulate_log_likelihood_ratios` converge to.
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
