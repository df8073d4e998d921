"""Gradual fine-tuning: the training objectives (target term, the pretrained-term caches, reflow) and their
prefetching.

Modules: :mod:`~gftlib.gft.objectives`, :mod:`~gftlib.gft.prefetch`.
The loss itself lives in :mod:`gftlib.losses`; the cooling schedule of beta in :mod:`gftlib.schedules`.
"""

from __future__ import annotations

from gftlib.gft.objectives import (Objective, PretrainedTerm, ObjectiveBatch, BatchSampler,
                                   FlowMatchingObjective, ReflowObjective, PretrainedCouplingCache,
                                   PretrainedDriftCache, TargetPathRegularizer)
from gftlib.gft.prefetch import (PrefetchingObjective, PREFETCHED_COUPLINGS)

__all__ = [
    'Objective', 'PretrainedTerm', 'ObjectiveBatch', 'BatchSampler', 'FlowMatchingObjective',
    'ReflowObjective', 'PretrainedCouplingCache', 'PretrainedDriftCache', 'TargetPathRegularizer',
    'PrefetchingObjective', 'PREFETCHED_COUPLINGS'
]
