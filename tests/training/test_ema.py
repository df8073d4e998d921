"""gftlib.training.ema: the fp32 EMA copy and its warmed-up decay."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from gftlib.training.config import TrainConfig
from gftlib.training.ema import EMA, ema_decay


def _net(dtype: torch.dtype = torch.float32) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4)).to(dtype)


def test_ema_decay_warms_up_as_min_of_decay_and_k_ratio():
    cfg = TrainConfig(steps=5, ema_decay=0.9)
    assert [ema_decay(cfg, k) for k in (1, 10, 80, 1000)] == [2 / 11, 11 / 20, 0.9, 0.9]
    assert ema_decay(TrainConfig(steps=5, ema_decay=0.9, ema_warmup=False), 1) == 0.9


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_ema_update_is_the_convex_combination_in_fp32(dtype):
    net = _net(dtype)
    ema = EMA(net)
    assert all(p.dtype == torch.float32 and not p.requires_grad for p in ema.model.parameters())
    assert not ema.model.training and ema.model is not net
    start = [p.detach().float().clone() for p in ema.model.parameters()]
    with torch.no_grad():
        for p in net.parameters():
            p.add_(1.0)
        net[1].running_mean.fill_(3.0)
    ema.update(0.75)
    for e, s, p in zip(ema.model.parameters(), start, net.parameters()):
        torch.testing.assert_close(e, 0.75 * s + 0.25 * p.float(), rtol=1e-6, atol=1e-6)
    assert torch.equal(ema.model[1].running_mean, net[1].running_mean.float())  # buffers copied as is
