"""Training: the loop, its configuration and result, checkpoints, preemption, DDP helpers and the GPU fast
path.

Modules: :mod:`~gftlib.training.loop`, :mod:`~gftlib.training.checkpoint`,
:mod:`~gftlib.training.preemption`, :mod:`~gftlib.training.fastpath`.
:mod:`gftlib.training.distributed` (torchrun / DDP helpers) is imported as a module: ``from
gftlib.training import distributed``.
"""

from __future__ import annotations

from gftlib.training.loop import (TrainConfig, TrainResult, NonFiniteLossError, TrainingPreempted, train,
                                  AMP_MODES, RESULT_FIELDS)
from gftlib.training.checkpoint import (FORMAT_VERSION, checkpoint_path, list_checkpoints,
                                        latest_checkpoint, save_checkpoint, load_checkpoint,
                                        latest_good_checkpoint, verify_checkpoint, quarantine,
                                        CorruptCheckpointWarning, remove_stale_temporary_files)
from gftlib.training.preemption import (PREEMPT_SIGNALS, EXIT_PREEMPTED, ACCELERATOR_CHECK_EVERY,
                                        PreemptionWatch, agree, active_request)
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
