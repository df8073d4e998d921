"""ADM/DDPM-style UNet velocity field for images: ``model(x (n, C, H, W), t (n,)) -> (n, C, H, W)``.

Layout (Ho et al. 2020; Dhariwal & Nichol 2021, the network of the OT-CFM CIFAR-10 experiments):
sinusoidal time features -> 2-layer MLP (width 4 * base_channels); input 3x3 conv; per resolution
level ``num_res_blocks`` residual blocks (GroupNorm, SiLU, conv, time conditioning, GroupNorm, SiLU,
dropout, conv), self-attention after each block whose resolution is in ``attention_resolutions``,
3x3 stride-2 conv downsampling between levels; middle ResBlock-Attention-ResBlock; a mirrored decoder
with ``num_res_blocks + 1`` blocks per level that each take the matching encoder activation as a skip
connection (channel concatenation), nearest-neighbour x2 upsampling + 3x3 conv; output GroupNorm,
SiLU, 3x3 conv back to ``in_channels``.

The blocks live in :mod:`gftlib.models.unet_blocks`; this module composes them. Numerics: GroupNorm
always runs in float32 with autocast disabled, attention uses
``torch.nn.functional.scaled_dot_product_attention`` (fused kernels, float32 softmax accumulation),
the time features are computed in float32, and the output is returned in ``x.dtype``. Works on any
device and dtype, under ``torch.autocast`` (bfloat16/float16) and with channels_last inputs (see
:func:`to_fast_layout`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gftlib.models.embeddings import SinusoidalTimeEmbedding, check_time_batch
from gftlib.models.unet_blocks import AttentionBlock, Downsample, ResBlock, Upsample, group_norm, zeroed
from gftlib.validation import check_finite_number, check_positive_int

__all__ = ["UNetVelocity", "UNET_CONFIGS", "unet_config", "to_fast_layout"]


def to_fast_layout(model: nn.Module) -> nn.Module:
    """Convert ``model``'s 4-D parameters/buffers to channels_last in place and return it.

    Pair it with ``x.contiguous(memory_format=torch.channels_last)`` inputs for faster convolutions on
    GPUs with tensor cores (mostly under bfloat16 autocast). The numbers computed do not change.
    """
    return model.to(memory_format=torch.channels_last)


class _Stage(nn.Module):
    """One UNet step: optional ResBlock, optional attention, optional resampling (in that order)."""

    def __init__(self, res: ResBlock | None = None, attn: AttentionBlock | None = None,
                 resample: nn.Module | None = None) -> None:
        super().__init__()
        self.res = res
        self.attn = attn
        self.resample = resample

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        if self.res is not None:
            x = self.res(x, emb)
        if self.attn is not None:
            x = self.attn(x)
        if self.resample is not None:
            x = self.resample(x)
        return x


def _int_tuple(name: str, value: Any, *, allow_empty: bool) -> tuple[int, ...]:
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise TypeError(f"{name} must be a tuple of positive integers, got {value!r}")
    out = tuple(check_positive_int(f"{name}[{i}]", v) for i, v in enumerate(value))
    if not out and not allow_empty:
        raise ValueError(f"{name} must be a non-empty tuple of positive integers, got {value!r}")
    return out


class UNetVelocity(nn.Module):
    """UNet velocity / drift ``b(x, t)`` for images ``x: (n, in_channels, image_size, image_size)``.

    Parameters
    ----------
    in_channels, image_size: input (and output) channels and square side length. ``image_size``
        must be a multiple of ``2 ** (len(channel_mult) - 1)``.
    base_channels: width of the first level; level ``i`` has ``base_channels * channel_mult[i]``.
    channel_mult: per-level width multipliers; the resolution halves between levels.
    num_res_blocks: residual blocks per encoder level (the decoder has one more per level).
    attention_resolutions: feature-map sizes (e.g. ``(16,)``) after whose residual blocks
        self-attention is applied; each must be one of the sizes the UNet visits. The middle block
        always has attention (as in ADM).
    num_heads: attention heads, used when ``num_head_channels == -1``.
    num_head_channels: channels per head (heads = channels // num_head_channels) or -1.
    dropout: dropout rate inside residual blocks, in [0, 1).
    use_scale_shift_norm: scale-shift (FiLM) time conditioning instead of additive.
    zero_init: zero-initialise the last conv of each residual block, the attention output projection
        and the output conv (ADM/torchcfm default: the untrained network outputs 0).
    min_group_channels: GroupNorm keeps at least this many channels per group (see
        :func:`gftlib.models.unet_blocks.group_count`; up to 32 groups). 1 reproduces torchcfm's layout for narrow networks,
        but then additive time conditioning is erased wherever a group has a single channel.

    ``config`` holds the validated constructor arguments (``UNetVelocity(**model.config)`` rebuilds it).
    """

    def __init__(
        self,
        in_channels: int = 3,
        image_size: int = 32,
        base_channels: int = 128,
        channel_mult: Sequence[int] = (1, 2, 2, 2),
        num_res_blocks: int = 2,
        attention_resolutions: Sequence[int] = (16,),
        num_heads: int = 4,
        num_head_channels: int = -1,
        dropout: float = 0.0,
        use_scale_shift_norm: bool = False,
        zero_init: bool = True,
        min_group_channels: int = 4,
    ) -> None:
        super().__init__()
        cfg = _check_arguments(
            in_channels=in_channels, image_size=image_size, base_channels=base_channels,
            channel_mult=channel_mult, num_res_blocks=num_res_blocks,
            attention_resolutions=attention_resolutions, num_heads=num_heads,
            num_head_channels=num_head_channels, dropout=dropout,
            use_scale_shift_norm=use_scale_shift_norm, zero_init=zero_init,
            min_group_channels=min_group_channels,
        )
        resolutions = _resolutions(cfg)
        self.in_channels = cfg["in_channels"]
        self.image_size = cfg["image_size"]
        self.config: dict[str, Any] = cfg
        base, emb_dim = cfg["base_channels"], 4 * cfg["base_channels"]
        self.time_features = SinusoidalTimeEmbedding(base)
        self.time_mlp = nn.Sequential(nn.Linear(base, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        blocks = _Blocks(cfg, emb_dim)
        ch = base * cfg["channel_mult"][0]
        self.input_conv = nn.Conv2d(cfg["in_channels"], ch, 3, padding=1)
        self.down, skip_channels = _encoder(blocks, cfg, resolutions, ch)
        ch = skip_channels[-1]
        self.middle = nn.ModuleList([_Stage(blocks.res(ch, ch), blocks.attn(ch)), _Stage(blocks.res(ch, ch))])
        self.up, ch = _decoder(blocks, cfg, resolutions, ch, skip_channels)
        self.out_norm = group_norm(ch, cfg["min_group_channels"])
        self.out_conv = zeroed(nn.Conv2d(ch, cfg["in_channels"], 3, padding=1), cfg["zero_init"])

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        """``x: (n, C, H, W)``, ``t: (n,)`` in [0, 1] -> velocity ``(n, C, H, W)`` in ``x.dtype``."""
        if not isinstance(x, Tensor):
            raise TypeError(f"x must be a torch.Tensor of shape (n, C, H, W), got {type(x).__name__}")
        if x.ndim != 4:
            raise ValueError(f"x must have 4 dimensions (n, C, H, W), got shape {tuple(x.shape)}")
        if x.shape[1] != self.in_channels:
            raise ValueError(
                f"x must have {self.in_channels} channels (in_channels), got {x.shape[1]} "
                f"in shape {tuple(x.shape)}"
            )
        if x.shape[2] != self.image_size or x.shape[3] != self.image_size:
            raise ValueError(
                f"x must be {self.image_size}x{self.image_size} (image_size), got "
                f"{x.shape[2]}x{x.shape[3]} in shape {tuple(x.shape)}"
            )
        check_time_batch(t, x.shape[0])

        weight = self.input_conv.weight
        emb = self.time_mlp(self.time_features(t).to(weight.dtype))
        emb = F.silu(emb)  # every ResBlock projects SiLU(emb)
        h = self.input_conv(x.to(weight.dtype))
        skips = [h]
        for stage in self.down:
            h = stage(h, emb)
            skips.append(h)
        for stage in self.middle:
            h = stage(h, emb)
        for stage in self.up:
            h = stage(torch.cat([h, skips.pop()], dim=1), emb)
        h = self.out_conv(F.silu(self.out_norm(h)))
        return h.to(x.dtype)


# ----------------------------------------------------------------------------------------- construction
def _check_arguments(*, in_channels: int, image_size: int, base_channels: int, channel_mult: Sequence[int],
                     num_res_blocks: int, attention_resolutions: Sequence[int], num_heads: int,
                     num_head_channels: int, dropout: float, use_scale_shift_norm: bool, zero_init: bool,
                     min_group_channels: int) -> dict[str, Any]:
    """:class:`UNetVelocity`'s arguments validated (each error names the argument), as its ``config``."""
    in_channels = check_positive_int("in_channels", in_channels)
    image_size = check_positive_int("image_size", image_size)
    base_channels = check_positive_int("base_channels", base_channels)
    channel_mult = _int_tuple("channel_mult", channel_mult, allow_empty=False)
    num_res_blocks = check_positive_int("num_res_blocks", num_res_blocks)
    attention_resolutions = _int_tuple("attention_resolutions", attention_resolutions, allow_empty=True)
    num_heads = check_positive_int("num_heads", num_heads)
    if isinstance(num_head_channels, bool) or not isinstance(num_head_channels, int):
        raise TypeError(f"num_head_channels must be -1 or a positive integer, got {num_head_channels!r}")
    if num_head_channels != -1 and num_head_channels < 1:
        raise ValueError(f"num_head_channels must be -1 or a positive integer, got {num_head_channels!r}")
    min_group_channels = check_positive_int("min_group_channels", min_group_channels)
    dropout = check_finite_number("dropout", dropout, minimum=0.0)
    if dropout >= 1.0:
        raise ValueError(f"dropout must be a finite number >= 0 and < 1, got {dropout!r}")
    return dict(
        in_channels=in_channels, image_size=image_size, base_channels=base_channels,
        channel_mult=channel_mult, num_res_blocks=num_res_blocks,
        attention_resolutions=attention_resolutions, num_heads=num_heads,
        num_head_channels=num_head_channels, dropout=dropout,
        use_scale_shift_norm=bool(use_scale_shift_norm), zero_init=bool(zero_init),
        min_group_channels=min_group_channels,
    )


def _resolutions(cfg: dict[str, Any]) -> tuple[int, ...]:
    """The feature-map side length of each level; checks that ``image_size`` halves evenly and that
    every attention resolution is one of them."""
    image_size, channel_mult = cfg["image_size"], cfg["channel_mult"]
    factor = 2 ** (len(channel_mult) - 1)
    if image_size % factor:
        raise ValueError(
            f"image size {image_size} is not supported: the UNet with channel_mult={channel_mult} "
            f"halves the resolution {len(channel_mult) - 1} times and needs a multiple of {factor}"
        )
    resolutions = tuple(image_size // 2**i for i in range(len(channel_mult)))
    for r in cfg["attention_resolutions"]:
        if r not in resolutions:
            raise ValueError(
                f"attention_resolutions contains {r}, which is not a feature-map size of this UNet; "
                f"allowed sizes for image_size={image_size} and channel_mult={channel_mult}: "
                f"{resolutions}"
            )
    return resolutions


class _Blocks:
    """Makes the residual and attention blocks of one UNet from its validated ``config``."""

    def __init__(self, cfg: dict[str, Any], emb_dim: int) -> None:
        self.cfg, self.emb_dim = cfg, emb_dim

    def heads(self, ch: int) -> int:
        """Attention heads for ``ch`` channels (``num_heads``, or ``ch // num_head_channels``)."""
        num_heads, num_head_channels = self.cfg["num_heads"], self.cfg["num_head_channels"]
        if num_head_channels == -1:
            if ch % num_heads:
                raise ValueError(
                    f"num_heads={num_heads} must divide the {ch} channels of an attention layer"
                )
            return num_heads
        if ch % num_head_channels:
            raise ValueError(
                f"num_head_channels={num_head_channels} must divide the {ch} channels of an "
                "attention layer"
            )
        return ch // num_head_channels

    def res(self, cin: int, cout: int) -> ResBlock:
        cfg = self.cfg
        return ResBlock(cin, cout, self.emb_dim, cfg["dropout"], scale_shift=cfg["use_scale_shift_norm"],
                        zero_init=cfg["zero_init"], min_group_channels=cfg["min_group_channels"])

    def attn(self, ch: int) -> AttentionBlock:
        return AttentionBlock(ch, self.heads(ch), zero_init=self.cfg["zero_init"],
                              min_group_channels=self.cfg["min_group_channels"])


def _encoder(blocks: _Blocks, cfg: dict[str, Any], resolutions: tuple[int, ...], ch: int
             ) -> tuple[nn.ModuleList, list[int]]:
    """The encoder stages (``num_res_blocks`` per level, attention where asked, downsampling between
    levels) and the channels of every activation the decoder takes as a skip (input conv first)."""
    skip_channels = [ch]
    down = nn.ModuleList()
    channel_mult = cfg["channel_mult"]
    for level, mult in enumerate(channel_mult):
        size = resolutions[level]
        for _ in range(cfg["num_res_blocks"]):
            out = cfg["base_channels"] * mult
            down.append(_Stage(blocks.res(ch, out),
                               blocks.attn(out) if size in cfg["attention_resolutions"] else None))
            ch = out
            skip_channels.append(ch)
        if level < len(channel_mult) - 1:
            down.append(_Stage(resample=Downsample(ch)))
            skip_channels.append(ch)
    return down, skip_channels


def _decoder(blocks: _Blocks, cfg: dict[str, Any], resolutions: tuple[int, ...], ch: int,
             skip_channels: list[int]) -> tuple[nn.ModuleList, int]:
    """The mirrored decoder (``num_res_blocks + 1`` stages per level, each taking one skip, x2
    upsampling at the end of every level but the last); consumes ``skip_channels``. Returns the
    stages and the output channels."""
    up = nn.ModuleList()
    channel_mult = cfg["channel_mult"]
    for level in reversed(range(len(channel_mult))):
        size = resolutions[level]
        out = cfg["base_channels"] * channel_mult[level]
        for i in range(cfg["num_res_blocks"] + 1):
            block = blocks.res(ch + skip_channels.pop(), out)
            ch = out
            up.append(
                _Stage(
                    block,
                    blocks.attn(ch) if size in cfg["attention_resolutions"] else None,
                    Upsample(ch) if level > 0 and i == cfg["num_res_blocks"] else None,
                )
            )
    assert not skip_channels
    return up, ch


_UNET_CONFIGS: dict[str, dict[str, Any]] = {
    # CPU smoke tests: forward + backward of 8 images in a few tens of milliseconds.
    "tiny": dict(in_channels=3, image_size=16, base_channels=16, channel_mult=(1, 2), num_res_blocks=1,
                 attention_resolutions=(8,), num_heads=2, num_head_channels=-1, dropout=0.0),
    # CPU quick profile of the image experiments (16x16 patches).
    "small": dict(in_channels=3, image_size=16, base_channels=32, channel_mult=(1, 2, 2), num_res_blocks=1,
                  attention_resolutions=(8,), num_heads=2, num_head_channels=-1, dropout=0.0),
    # OT-CFM CIFAR-10 UNet (torchcfm UNetModelWrapper(dim=(3, 32, 32), num_channels=128,
    # channel_mult=[1, 2, 2, 2], num_res_blocks=2, attention_resolutions="16", num_heads=4,
    # num_head_channels=64, dropout=0.1)): 35,746,307 parameters.
    "cifar10": dict(in_channels=3, image_size=32, base_channels=128, channel_mult=(1, 2, 2, 2),
                    num_res_blocks=2, attention_resolutions=(16,), num_heads=4, num_head_channels=64,
                    dropout=0.1),
}
#: Names accepted by :func:`unet_config`.
UNET_CONFIGS: tuple[str, ...] = tuple(_UNET_CONFIGS)


def unet_config(name: str) -> dict[str, Any]:
    """A fresh dict of :class:`UNetVelocity` keyword arguments for ``"tiny" | "small" | "cifar10"``."""
    if not isinstance(name, str) or name not in _UNET_CONFIGS:
        allowed = ", ".join(map(repr, UNET_CONFIGS))
        raise ValueError(f"unknown UNet config name {name!r}; must be one of {allowed}")
    return dict(_UNET_CONFIGS[name])

