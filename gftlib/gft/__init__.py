"""Gradual fine-tuning: the training objectives (target term, the pretrained-term caches, reflow) and their
prefetching.

Modules, one job each: :mod:`~gftlib.gft.objective` (the Objective protocol and the GFT objective
:class:`FlowMatchingObjective`), :mod:`~gftlib.gft.batch_sampler` (the data order),
:mod:`~gftlib.gft.pretrained_cache` (what the two caches share, their validated settings),
:mod:`~gftlib.gft.coupling_cache`, :mod:`~gftlib.gft.drift_cache`, :mod:`~gftlib.gft.regularizer`
(the naive L2 baseline), :mod:`~gftlib.gft.reflow`, :mod:`~gftlib.gft.prefetch`; argument checks in
:mod:`~gftlib.gft.checks`, device placement in :mod:`~gftlib.gft.tensors`. Seeds and generators come
from :mod:`gftlib.rng`. The loss itself lives in :mod:`gftlib.losses`; the cooling schedule of beta in
:mod:`gftlib.schedules`.
"""

from __future__ import annotations

from gftlib.gft.objective import Objective, PretrainedTerm, ObjectiveBatch, FlowMatchingObjective
from gftlib.gft.batch_sampler import BatchSampler
from gftlib.gft.coupling_cache import PretrainedCouplingCache
from gftlib.gft.drift_cache import PretrainedDriftCache
from gftlib.gft.regularizer import TargetPathRegularizer
from gftlib.gft.reflow import ReflowObjective
from gftlib.gft.prefetch import (PrefetchingObjective, PREFETCHED_COUPLINGS)

__all__ = [
    'Objective', 'PretrainedTerm', 'ObjectiveBatch', 'BatchSampler', 'FlowMatchingObjective',
    'ReflowObjective', 'PretrainedCouplingCache', 'PretrainedDriftCache', 'TargetPathRegularizer',
    'PrefetchingObjective', 'PREFETCHED_COUPLINGS'
]
