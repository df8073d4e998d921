"""Samplers: integrate a velocity field (ODE, torchdiffeq) or a drift with noise (SDE, Euler-Maruyama) from t
= 0 to t = 1.

Modules: :mod:`~gftlib.solvers.ode` (:func:`sample_ode`, path length and NFE),
:mod:`~gftlib.solvers.sde` (:func:`sample_sde`, :func:`sde_states_at`), :mod:`~gftlib.solvers.common`
(:class:`SampleResult`, the shared input checks).
Conventions: t = 0 noise, t = 1 data; a field is ``field(x, t)`` with ``t`` of shape (n,).
"""

from __future__ import annotations

from gftlib.solvers.common import SampleResult
from gftlib.solvers.ode import sample_ode, ODE_METHODS, FIXED_STEP_METHODS, EVALS_PER_STEP
from gftlib.solvers.sde import sample_sde, sde_states_at

__all__ = [
    'SampleResult', 'sample_ode', 'sample_sde', 'sde_states_at', 'ODE_METHODS', 'FIXED_STEP_METHODS',
    'EVALS_PER_STEP'
]
