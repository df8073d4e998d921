"""Samplers: integrate a velocity field (ODE, torchdiffeq) or a drift with noise (SDE, Euler-Maruyama) from t
= 0 to t = 1.

Modules: :mod:`~gftlib.solvers.samplers`.
Conventions: t = 0 noise, t = 1 data; a field is ``field(x, t)`` with ``t`` of shape (n,).
"""

from __future__ import annotations

from gftlib.solvers.samplers import (SampleResult, sample_ode, sample_sde, sde_states_at, ODE_METHODS,
                                     FIXED_STEP_METHODS, EVALS_PER_STEP)

__all__ = [
    'SampleResult', 'sample_ode', 'sample_sde', 'sde_states_at', 'ODE_METHODS', 'FIXED_STEP_METHODS',
    'EVALS_PER_STEP'
]
