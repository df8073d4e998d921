"""gftlib.models.unet_blocks on their own: GroupNorm group counts and float32 numerics, zero-initialised
outputs, attention and resampling shapes."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from gftlib.models.unet_blocks import (AttentionBlock, Downsample, GroupNorm32, ResBlock, Upsample, group_count,
                                       group_norm, zeroed)

torch.set_num_threads(1)


@pytest.mark.parametrize(
    "channels, min_group_channels, expected",
    [(128, 4, 32), (384, 4, 32), (16, 4, 4), (32, 4, 8), (48, 4, 12), (100, 4, 25), (7, 4, 1), (3, 4, 1),
     (16, 1, 16), (48, 1, 24), (96, 1, 32), (7, 1, 7), (1, 1, 1)],
)
def test_group_count_is_largest_divisor_at_most_32(channels, min_group_channels, expected):
    g = group_count(channels, 32, min_group_channels)
    assert g == expected and channels % g == 0


def test_group_norm_runs_in_float32_and_returns_the_input_dtype():
    norm = group_norm(16, 4)
    assert isinstance(norm, GroupNorm32) and norm.num_groups == 4
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
        norm.bias.uniform_(-0.5, 0.5)
    x = torch.randn(2, 16, 4, 4, generator=torch.Generator().manual_seed(0)).to(torch.bfloat16)
    y = norm(x)
    ref = F.group_norm(x.float(), 4, norm.weight, norm.bias, norm.eps).to(torch.bfloat16)
    assert y.dtype == torch.bfloat16 and torch.equal(y, ref)


def test_zero_initialised_blocks_are_the_identity_at_start():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 8, 4, 4, generator=g)
    assert torch.equal(AttentionBlock(8, 2, zero_init=True)(x), x)
    res = ResBlock(8, 8, 12, 0.0, scale_shift=False, zero_init=True)
    assert torch.equal(res(x, torch.randn(2, 12, generator=g)), x)  # skip + 0
    lin = zeroed(torch.nn.Linear(3, 3), True)
    assert all(torch.count_nonzero(p) == 0 for p in lin.parameters())
    kept = torch.nn.Linear(3, 3)
    assert zeroed(kept, False) is kept and torch.count_nonzero(kept.weight) > 0


def test_resampling_halves_and_doubles_the_side():
    x = torch.randn(2, 4, 8, 8)
    assert Downsample(4)(x).shape == (2, 4, 4, 4)
    assert Upsample(4)(x).shape == (2, 4, 16, 16)
    assert ResBlock(4, 6, 5, 0.0, scale_shift=True, zero_init=False)(x, torch.randn(2, 5)).shape == (2, 6, 8, 8)
