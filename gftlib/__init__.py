"""gftlib: Gradual Fine-Tuning (GFT) for flow matching models.

Conventions: t = 0 is noise (p0 = N(0, I)), t = 1 is data; batches are (n, *shape); a velocity field
is ``field(x, t)`` with ``t`` of shape (n,).

The front door: the core API in ``__all__``, one hop from ``import gftlib``::

    import gftlib
    path = gftlib.Interpolant(sigma=0.0)                      # x_t = (1 - t) x0 + t x1 (+ noise)
    coupling = gftlib.make_coupling("ot")                     # pairs (x0, x1): minibatch OT
    schedule = gftlib.make_schedule("cosine", 4.0, 1000)      # beta_k, cooled to 0
    model = gftlib.MLPVelocity(dim=2)
    loss = gftlib.gft_loss(model, target_batch, beta, pretrained_batch).total
    x1 = gftlib.sample_ode(model, x0).x

Names are imported on first use (PEP 562), so ``import gftlib`` itself stays cheap (it does not
import torch). Train with ``gftlib.train(model, objective, gftlib.TrainConfig(...))``. Everything else
lives in the subpackages, one concept each: ``gftlib.paths`` (interpolants, couplings),
``gftlib.solvers`` (ODE/SDE samplers), ``gftlib.gft`` (objectives, pretrained-term caches),
``gftlib.training`` (loop, checkpoints, preemption, DDP), ``gftlib.models``, ``gftlib.data``,
``gftlib.eval`` (distances, flow measures, statistics), ``gftlib.theory`` (closed-form ground truth);
the notebook layer is ``gftlib.experiments``, which no core module imports. The reference is
generated from the docstrings: ``make docs``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# name -> the subpackage (or single module) that exports it
_EXPORTS: dict[str, str] = {
    # paths and couplings
    "Interpolant": "gftlib.paths",
    "PathSample": "gftlib.paths",
    "make_coupling": "gftlib.paths",
    "IndependentCoupling": "gftlib.paths",
    "ExactOTCoupling": "gftlib.paths",
    "SinkhornCoupling": "gftlib.paths",
    # losses and cooling schedules
    "cfm_loss": "gftlib.losses",
    "gft_loss": "gftlib.losses",
    "DriftBatch": "gftlib.losses",
    "make_schedule": "gftlib.schedules",
    "CoolingSchedule": "gftlib.schedules",
    "default_schedule_options": "gftlib.schedules",
    # samplers
    "sample_ode": "gftlib.solvers",
    "sample_sde": "gftlib.solvers",
    # models
    "MLPVelocity": "gftlib.models",
    "UNetVelocity": "gftlib.models",
    "build_model": "gftlib.models",
    # the objective builders (target term, pretrained-term caches, reflow) and training
    "FlowMatchingObjective": "gftlib.gft",
    "PretrainedCouplingCache": "gftlib.gft",
    "PretrainedDriftCache": "gftlib.gft",
    "ReflowObjective": "gftlib.gft",
    "train": "gftlib.training",
    "TrainConfig": "gftlib.training",
    "TrainResult": "gftlib.training",
}

__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:  # static analysers and IDEs see ordinary imports
    from gftlib.paths import (ExactOTCoupling, IndependentCoupling, Interpolant, PathSample, SinkhornCoupling,
                              make_coupling)
    from gftlib.losses import DriftBatch, cfm_loss, gft_loss
    from gftlib.models import MLPVelocity, UNetVelocity, build_model
    from gftlib.gft import (FlowMatchingObjective, PretrainedCouplingCache, PretrainedDriftCache,
                            ReflowObjective)
    from gftlib.solvers import sample_ode, sample_sde
    from gftlib.schedules import CoolingSchedule, default_schedule_options, make_schedule
    from gftlib.training import TrainConfig, TrainResult, train


def __getattr__(name: str) -> Any:
    """Import a front-door name from its submodule on first access (then cache it here)."""
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'gftlib' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
