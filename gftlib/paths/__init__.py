"""Probability paths: how a training pair (x0, x1) becomes a point x_t and its target velocity.

Modules: :mod:`~gftlib.paths.interpolants`, :mod:`~gftlib.paths.couplings`.
Conventions: t = 0 noise, t = 1 data; batches are (n, *shape).
"""

from __future__ import annotations

from gftlib.paths.interpolants import (PathSample, Interpolant)
from gftlib.paths.couplings import (CoupledBatch, Coupling, ot_permutation, squared_cost_matrix,
                                    IndependentCoupling, ExactOTCoupling, SinkhornCoupling, make_coupling,
                                    COUPLINGS)

__all__ = [
    'PathSample', 'Interpolant', 'CoupledBatch', 'Coupling', 'ot_permutation', 'squared_cost_matrix',
    'IndependentCoupling', 'ExactOTCoupling', 'SinkhornCoupling', 'make_coupling', 'COUPLINGS'
]
