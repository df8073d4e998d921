"""The building blocks of :class:`gftlib.models.unet.UNetVelocity` (ADM/DDPM style): float32 GroupNorm,
time-conditioned residual blocks, self-attention, stride-2 down- and x2 upsampling. Every block maps
``(n, C, H, W)`` activations; residual blocks also take the SiLU-activated time embedding
``emb: (n, emb_dim)``.

Numerics: GroupNorm always runs in float32 with autocast disabled, attention uses
``torch.nn.functional.scaled_dot_product_attention`` (fused kernels, float32 softmax accumulation).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gftlib.validation import check_positive_int

__all__ = ["GroupNorm32", "ResBlock", "AttentionBlock", "Downsample", "Upsample", "group_count", "group_norm",
           "zeroed"]

_LOW_PRECISION = (torch.float16, torch.bfloat16)


def _autocast_enabled(device_type: str) -> bool:
    try:
        return torch.is_autocast_enabled(device_type)
    except TypeError:  # torch < 2.4: no device argument
        if device_type == "cpu":
            return torch.is_autocast_cpu_enabled()
        return torch.is_autocast_enabled()


def group_count(channels: int, max_groups: int = 32, min_group_channels: int = 4) -> int:
    """GroupNorm group count: the largest divisor of ``channels`` that is ``<= max_groups`` and leaves
    at least ``min_group_channels`` channels per group (1 if ``channels < min_group_channels``).

    The lower bound matters for additive time conditioning: GroupNorm removes each group's mean, so
    with one channel per group a per-channel time bias added before the norm would be erased exactly.
    For the CIFAR-10 widths (>= 128 channels) this is the usual 32 groups.
    """
    channels = check_positive_int("channels", channels)
    max_groups = check_positive_int("max_groups", max_groups)
    min_group_channels = check_positive_int("min_group_channels", min_group_channels)
    limit = min(max_groups, channels // min_group_channels)
    return max([g for g in range(1, limit + 1) if channels % g == 0], default=1)


class GroupNorm32(nn.GroupNorm):
    """GroupNorm computed in float32 (autocast off), result cast back to the input dtype."""

    def forward(self, x: Tensor) -> Tensor:
        low = x.dtype in _LOW_PRECISION or self.weight.dtype in _LOW_PRECISION
        if low or _autocast_enabled(x.device.type):
            with torch.autocast(device_type=x.device.type, enabled=False):
                y = F.group_norm(x.float(), self.num_groups, self.weight.float(), self.bias.float(), self.eps)
            return y.to(x.dtype)
        return F.group_norm(x, self.num_groups, self.weight, self.bias, self.eps)


def group_norm(channels: int, min_group_channels: int) -> GroupNorm32:
    """A :class:`GroupNorm32` over ``channels`` with :func:`group_count` groups (up to 32)."""
    return GroupNorm32(group_count(channels, 32, min_group_channels), channels)


def zeroed(module: nn.Module, enabled: bool) -> nn.Module:
    """``module`` with its parameters set to zero when ``enabled`` (zero-initialised output layers)."""
    if enabled:
        for p in module.parameters():
            nn.init.zeros_(p)
    return module


class ResBlock(nn.Module):
    """Residual block conditioned on the (already SiLU-activated) time embedding ``emb: (n, emb_dim)``.

    Additive conditioning adds ``Linear(emb)`` after the first conv; scale-shift conditioning
    (``scale_shift=True``) applies ``norm2(h) * (1 + scale) + shift`` instead.
    """

    def __init__(self, in_ch: int, out_ch: int, emb_dim: int, dropout: float, *, scale_shift: bool,
                 zero_init: bool, min_group_channels: int = 4) -> None:
        super().__init__()
        self.scale_shift = scale_shift
        self.norm1 = group_norm(in_ch, min_group_channels)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.emb_proj = nn.Linear(emb_dim, 2 * out_ch if scale_shift else out_ch)
        self.norm2 = group_norm(out_ch, min_group_channels)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = zeroed(nn.Conv2d(out_ch, out_ch, 3, padding=1), zero_init)
        self.skip = nn.Identity() if in_ch == out_ch else nn.Conv2d(in_ch, out_ch, 1)

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        e = self.emb_proj(emb).to(h.dtype)[:, :, None, None]
        if self.scale_shift:
            scale, shift = e.chunk(2, dim=1)
            h = self.norm2(h) * (1 + scale) + shift
        else:
            h = self.norm2(h + e)
        h = self.conv2(self.dropout(F.silu(h)))
        return self.skip(x) + h


class AttentionBlock(nn.Module):
    """Multi-head self-attention over the ``H * W`` positions, with a residual connection."""

    def __init__(
        self, channels: int, num_heads: int, *, zero_init: bool, min_group_channels: int = 4
    ) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.norm = group_norm(channels, min_group_channels)
        self.qkv = nn.Linear(channels, 3 * channels)
        self.proj = zeroed(nn.Linear(channels, channels), zero_init)

    def forward(self, x: Tensor) -> Tensor:
        n, c, h, w = x.shape
        # (n, C, H, W) -> (n, H*W, C): a free view for channels_last inputs.
        tokens = self.norm(x).permute(0, 2, 3, 1).reshape(n, h * w, c)
        qkv = self.qkv(tokens).reshape(n, h * w, 3, self.num_heads, c // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (n, heads, H*W, head_dim)
        a = F.scaled_dot_product_attention(q, k, v)
        a = a.transpose(1, 2).reshape(n, h * w, c)
        out = self.proj(a).reshape(n, h, w, c).permute(0, 3, 1, 2)
        return x + out.to(x.dtype)

    def extra_repr(self) -> str:
        return f"num_heads={self.num_heads}"


class Downsample(nn.Module):
    """3x3 convolution with stride 2: (n, C, H, W) -> (n, C, H/2, W/2)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    """Nearest-neighbour x2 upsampling followed by a 3x3 convolution."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))
