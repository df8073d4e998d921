"""Training: the loop, its configuration and result, checkpoints, preemption, DDP helpers and the GPU fast
path.

Modules: :mod:`~gftlib.training.loop` (``train``, a sequence of named steps),
:mod:`~gftlib.training.config` (``TrainConfig``, ``TrainResult``), :mod:`~gftlib.training.ema`,
:mod:`~gftlib.training.guard` (the non-finite guard), :mod:`~gftlib.training.state` (what a
checkpoint holds, bit-exact resume), :mod:`~gftlib.training.checkpoint` (the files),
:mod:`~gftlib.training.preemption`, :mod:`~gftlib.training.fastpath`.
:mod:`gftlib.training.distributed` (torchrun / DDP helpers) is imported as a module: ``from
gftlib.training import distributed``.
"""

from __future__ import annotations

from gftlib.training.config import TrainConfig, TrainResult, AMP_MODES, RESULT_FIELDS
from gftlib.training.guard import NonFiniteLossError
from gftlib.training.loop import train
from gftlib.training.checkpoint import (FORMAT_VERSION, checkpoint_path, list_checkpoints,
                                        latest_checkpoint, save_checkpoint, load_checkpoint,
                                        latest_good_checkpoint, verify_checkpoint, quarantine,
                                        CorruptCheckpointWarning, remove_stale_temporary_files)
from gftlib.training.preemption import (PREEMPT_SIGNALS, EXIT_PREEMPTED, ACCELERATOR_CHECK_EVERY,
                                        TrainingPreempted, PreemptionWatch, agree, active_request)
from gftlib.training.fastpath import (ChannelsLastInput, BatchedSamples, sample_batched, fast_settings,
                                      autocast_context, SAMPLING_AMP_MODES)

__all__ = [
    'TrainConfig', 'TrainResult', 'NonFiniteLossError', 'TrainingPreempted', 'train', 'AMP_MODES',
    'RESULT_FIELDS', 'FORMAT_VERSION', 'checkpoint_path', 'list_checkpoints', 'latest_checkpoint',
    'save_checkpoint', 'load_checkpoint', 'latest_good_checkpoint', 'verify_checkpoint', 'quarantine',
    'CorruptCheckpointWarning', 'remove_stale_temporary_files', 'PREEMPT_SIGNALS', 'EXIT_PREEMPTED',
    'ACCELERATOR_CHECK_EVERY', 'PreemptionWatch', 'agree', 'active_request', 'ChannelsLastInput',
    'BatchedSamples', 'sample_batched', 'fast_settings', 'autocast_context', 'SAMPLING_AMP_MODES'
]
