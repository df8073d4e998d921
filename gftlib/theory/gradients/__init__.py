"""Monte Carlo gradients of the conditional and the marginal GFT objective (THEORY T4).

Conventions: t = 0 is noise (x0 ~ N(0, I)), t = 1 is data. Everything is float64.

A *linear field* b_theta(x, t) = phi(x, t) theta with fixed features phi: (n, d) x (n,) -> (n, d, F)
makes every gradient a linear statistic: the per-sample gradient of |b_theta(x_i, t_i) - y_i|^2 is

    g_i = 2 sum_d phi(x_i, t_i)[d, :] (b_theta(x_i, t_i)[d] - y_i[d])      (F,),

so gradient estimates come with per-sample standard errors. Evaluating the conditional objective
(regression target y = conditional velocity u_t(x_t | x0, x1)) and the marginal objective (y = the
marginal velocity b(x_t, t) = E[u | x_t]) at the *same* points x_t, the per-sample difference
2 phi (b - u) has mean exactly zero (T4), and its average shrinks like 1/sqrt(n).

:class:`MonotoneCoupling` supplies an exact marginal velocity for a coupling that is not the
independent one: a deterministic increasing map x1 = T(x0) in 1-D (the 1-D OT map, or the flow
map of a pretrained 1-D ODE, which is increasing), with the Brownian-bridge path
x_t = (1 - t) x0 + t T(x0) + sigma sqrt(t (1 - t)) z. (With sigma = 0 a deterministic coupling makes
u a function of x_t, so conditional and marginal objectives agree sample by sample.)

Modules: :mod:`~gftlib.theory.gradients.linear_field` (the linear field, per-sample gradients and their
comparison), :mod:`~gftlib.theory.gradients.monotone` (1-D monotone couplings and their exact marginal field),
:mod:`~gftlib.theory.gradients.terms` (the four terms of the T4 objective drawn together),
:mod:`~gftlib.theory.gradients.statistics` (log-log slopes, Hotelling critical values).
"""

from gftlib.theory.gradients.linear_field import (GradientComparison, LinearField, PerSampleGradients,
                                           default_features_1d, regression_gradients)
from gftlib.theory.gradients.monotone import MonotoneCoupling, monotone_grid, quantile_map
from gftlib.theory.gradients.statistics import SlopeFit, hotelling_critical, loglog_slope
from gftlib.theory.gradients.terms import GradientTerms, combined_gradient_norm

__all__ = [
    "default_features_1d",
    "LinearField",
    "regression_gradients",
    "PerSampleGradients",
    "GradientComparison",
    "quantile_map",
    "MonotoneCoupling",
    "monotone_grid",
    "GradientTerms",
    "combined_gradient_norm",
    "SlopeFit",
    "loglog_slope",
    "hotelling_critical",
]
