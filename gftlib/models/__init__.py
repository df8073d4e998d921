"""Velocity / drift networks ``model(x, t)`` (``x: (n, *shape)``, ``t: (n,)`` in [0, 1], t = 0 noise).

``MLPVelocity`` for vectors ``(n, d)``, ``UNetVelocity`` for images ``(n, C, H, W)`` (its blocks in
:mod:`gftlib.models.unet_blocks`); named UNet presets via :func:`unet_config`; :func:`build_model` builds either from a plain config dict.
Models from other libraries: :func:`load_torchcfm` / :func:`save_torchcfm` (torchcfm checkpoints),
:func:`flow_matching_velocity` (Meta flow_matching) and :class:`VelocityAdapter` (any module).
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
from torch import nn

from gftlib.models.adapters import (ADAPTER_SIGNATURES, ADAPTER_TIME_SHAPES, VelocityAdapter,
                                   flow_matching_velocity)
from gftlib.models.embeddings import SinusoidalTimeEmbedding, sinusoidal_embedding
from gftlib.models.mlp import ACTIVATIONS, MLPVelocity
from gftlib.models.torchcfm import (TORCHCFM_CIFAR10, TORCHCFM_RECIPE, TorchCFMVelocity, load_torchcfm,
                                   save_torchcfm, torchcfm_state_dict)
from gftlib.models.unet import UNET_CONFIGS, UNetVelocity, to_fast_layout, unet_config
from gftlib.models.unet_blocks import group_count
from gftlib.validation import check_choice

__all__ = [
    "MLPVelocity",
    "UNetVelocity",
    "SinusoidalTimeEmbedding",
    "sinusoidal_embedding",
    "ACTIVATIONS",
    "MODEL_KINDS",
    "UNET_CONFIGS",
    "unet_config",
    "build_model",
    "count_parameters",
    "group_count",
    "to_fast_layout",
    "TORCHCFM_CIFAR10",
    "TORCHCFM_RECIPE",
    "TorchCFMVelocity",
    "load_torchcfm",
    "save_torchcfm",
    "torchcfm_state_dict",
    "VelocityAdapter",
    "flow_matching_velocity",
    "ADAPTER_SIGNATURES",
    "ADAPTER_TIME_SHAPES",
]

_KINDS: dict[str, type[nn.Module]] = {"mlp": MLPVelocity, "unet": UNetVelocity, "torchcfm": TorchCFMVelocity}
#: Names accepted by :func:`build_model`.
MODEL_KINDS: tuple[str, ...] = tuple(_KINDS)


def build_model(kind: str, *, seed: int | None = None, **cfg: Any) -> nn.Module:
    """Build ``MLPVelocity(**cfg)`` (``kind="mlp"``), ``UNetVelocity(**cfg)`` (``kind="unet"``) or
    ``TorchCFMVelocity(**cfg)`` (``kind="torchcfm"``: torchcfm's UNet, TORCHCFM_CIFAR10 + overrides).

    For ``kind="unet"``, ``config="tiny" | "small" | "cifar10"`` starts from :func:`unet_config` and
    the other keys override it. ``seed`` initialises the weights from ``torch.manual_seed(seed)``
    inside a forked RNG state (the global RNG is left untouched); ``seed=None`` uses the global RNG.
    Unknown keys raise ``TypeError`` naming the allowed ones.
    """
    cls = _KINDS[check_choice("kind", kind, MODEL_KINDS)]
    if kind == "unet" and "config" in cfg:
        cfg = {**unet_config(cfg.pop("config")), **cfg}
    if kind == "torchcfm":
        from gftlib.models.torchcfm import _wrapper_args

        allowed = _wrapper_args()
    else:
        allowed = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
    unknown = sorted(set(cfg) - set(allowed))
    if unknown:
        raise TypeError(f"unknown {kind} model argument(s) {unknown}; allowed: {allowed}")
    if seed is None:
        return cls(**cfg)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an integer or None, got {seed!r}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return cls(**cfg)


def count_parameters(model: nn.Module, *, trainable_only: bool = False) -> int:
    """Number of scalar parameters of ``model`` (only those with ``requires_grad`` if ``trainable_only``)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
