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

Modules: :mod:`~gftlib.theory.girsanov.log_ratio` (per-path log ratios of simulated or given paths),
:mod:`~gftlib.theory.girsanov.marginals` (the same KL from exact marginal samples),
:mod:`~gftlib.theory.girsanov.closed_form` (affine-drift closed forms, stiffness, step rules),
:mod:`~gftlib.theory.girsanov.common` (standard errors, input checks). Every estimator takes a list of second
drifts ``drifts_2`` and returns one result per drift (pass ``[b2]`` for one).
"""

from gftlib.theory.girsanov.closed_form import (affine_drift_path_kl, linear_drift, mixture_sde_stiffness,
                                         stiffness_adjusted_steps)
from gftlib.theory.girsanov.common import mean_and_se
from gftlib.theory.girsanov.log_ratio import PathLogRatio, log_likelihood_ratios, simulate_log_likelihood_ratios
from gftlib.theory.girsanov.marginals import MarginalKL, path_kls_from_marginals

__all__ = [
    "PathLogRatio",
    "MarginalKL",
    "log_likelihood_ratios",
    "simulate_log_likelihood_ratios",
    "path_kls_from_marginals",
    "affine_drift_path_kl",
    "linear_drift",
    "mean_and_se",
    "mixture_sde_stiffness",
    "stiffness_adjusted_steps",
]
