"""Ground truth for the theorem notebooks: closed-form Gaussian mixtures and their paths, exact distances,
particle flows of analytic drifts; the Girsanov and gradient-estimator subpackages.

Modules: :mod:`~gftlib.theory.analytic`, :mod:`~gftlib.theory.mixture_flows`,
:mod:`~gftlib.theory.quadrature`.
Subpackages: :mod:`gftlib.theory.girsanov` (path-space KL), :mod:`gftlib.theory.gradients` (conditional vs
marginal gradients, T4).
"""

from __future__ import annotations

from gftlib.theory.analytic import (GaussianMixture, GaussianMixturePath, MixtureDrift, gft_mixture_drift,
                                    kl_divergence_quadrature, tv_distance_quadrature)
from gftlib.theory.mixture_flows import (marginal_mixture, run_flows, ks_against, naive_l2_drift,
                                         ode_velocity_in_sde_drift, check_time_grid)
from gftlib.theory.quadrature import (mixture_1d, quadrature_range, mixture_density, density_crossings,
                                      exact_tv_by_crossings, trapezoid_kink_tolerance)

__all__ = [
    'GaussianMixture', 'GaussianMixturePath', 'MixtureDrift', 'gft_mixture_drift',
    'kl_divergence_quadrature', 'tv_distance_quadrature', 'marginal_mixture', 'run_flows', 'ks_against',
    'naive_l2_drift', 'ode_velocity_in_sde_drift', 'check_time_grid', 'mixture_1d', 'quadrature_range',
    'mixture_density', 'density_crossings', 'exact_tv_by_crossings', 'trapezoid_kink_tolerance'
]
