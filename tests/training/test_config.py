"""gftlib.training.config: TrainConfig validation and normalisation, the betas of a schedule, the
warmed-up learning rate."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gftlib.schedules import make_schedule
from gftlib.training.config import TrainConfig, beta_sequence, learning_rate


@pytest.mark.parametrize("kwargs, match", [
    (dict(steps=0), "steps"),
    (dict(steps=-3), "steps"),
    (dict(steps=2.5), "steps"),
    (dict(lr=0.0), "lr"),
    (dict(lr=-1e-3), "lr"),
    (dict(lr=float("nan")), "lr"),
    (dict(ema_decay=1.0), "ema_decay"),
    (dict(ema_decay=-0.1), "ema_decay"),
    (dict(ema_decay=float("inf")), "ema_decay"),
    (dict(grad_clip=0.0), "grad_clip"),
    (dict(grad_clip=-1.0), "grad_clip"),
    (dict(grad_clip=float("nan")), "grad_clip"),
    (dict(warmup_steps=-1), "warmup_steps"),
    (dict(weight_decay=-0.1), "weight_decay"),
    (dict(log_every=0), "log_every"),
    (dict(eval_every=0), "eval_every"),
    (dict(checkpoint_every=0, checkpoint_dir="x"), "checkpoint_every"),
    (dict(checkpoint_every=5), "checkpoint_dir"),
    (dict(checkpoint_dir=""), "checkpoint_dir"),
    (dict(checkpoint_dir=3), "checkpoint_dir"),
    (dict(keep_checkpoints=0), "keep_checkpoints"),
    (dict(seed=-1), "seed"),
    (dict(seed="0"), "seed"),
    (dict(device="tpu"), "device"),
    (dict(amp="fp16"), "amp"),
    (dict(compile="yes"), "compile"),
    (dict(progress=1), "progress"),
    (dict(ema_warmup=None), "ema_warmup"),
])
def test_invalid_config_raises_naming_the_parameter(kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        TrainConfig(**{"steps": 10, **kwargs})


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_config_cuda_without_gpu_raises():
    with pytest.raises(ValueError, match="device"):
        TrainConfig(steps=1, device="cuda")


def test_config_normalises_values(tmp_path):
    cfg = TrainConfig(steps=3.0, lr=1, checkpoint_dir=tmp_path, grad_clip=None)
    assert cfg.steps == 3 and isinstance(cfg.steps, int)
    assert cfg.lr == 1.0 and isinstance(cfg.lr, float)
    assert cfg.checkpoint_dir == str(tmp_path) and cfg.grad_clip is None


def test_beta_sequence_is_one_beta_per_update():
    sched = make_schedule("cosine", 3.0, 12)
    betas = beta_sequence(sched, 12)
    assert betas.dtype == np.float64 and betas.shape == (12,)
    np.testing.assert_array_equal(betas, [sched(k) for k in range(12)])
    np.testing.assert_array_equal(beta_sequence(None, 4), np.zeros(4))
    np.testing.assert_array_equal(beta_sequence(lambda k: 0.5 * k, 3), [0.0, 0.5, 1.0])  # a plain callable


@pytest.mark.parametrize("schedule, steps, exc, match", [
    (make_schedule("linear", 1.0, 11), 10, ValueError, "total_steps"),
    (lambda k: 1.0 - k, 4, ValueError, r"finite betas >= 0, got beta=.*-1\.0.* at step 2"),
    (lambda k: float("nan"), 4, ValueError, "finite betas"),
    (3.0, 4, TypeError, "schedule must be None or a CoolingSchedule"),
])
def test_beta_sequence_rejects_bad_schedules(schedule, steps, exc, match):
    with pytest.raises(exc, match=match):
        beta_sequence(schedule, steps)


def test_learning_rate_warms_up_linearly_then_stays():
    cfg = TrainConfig(steps=10, lr=1e-2, warmup_steps=4)
    assert [learning_rate(cfg, k) for k in (1, 2, 4, 5, 10)] == pytest.approx([2.5e-3, 5e-3, 1e-2, 1e-2, 1e-2])
    assert learning_rate(TrainConfig(steps=3, lr=1e-2), 1) == 1e-2  # no warm-up
