"""E2's start from someone else's pretrained model: torchcfm networks and their checkpoints.

``pretrained_checkpoint`` (a notebook parameter of ``e2_image_shift``) is one of

- ``"pretrain"``: pretrain the source model here (``pretrain_steps`` OT-CFM steps on the source);
- a local path to a checkpoint in torchcfm's release format (``{"net_model", "ema_model"}``, e.g.
  torchcfm's CIFAR-10 OT-CFM ``otcfm_cifar10_weights_step_400000.pt``): its EMA weights are the
  pretrained model, as in the paper; the network is then torchcfm's own ``UNetModelWrapper``
  (``model_config="torchcfm"`` or ``{"config": "torchcfm", ...overrides}``), and fine-tuning follows
  torchcfm's recipe :data:`gftlib.models.torchcfm.TORCHCFM_RECIPE` (lr 2e-4, clip 1, EMA 0.9999,
  squared error averaged over all elements);
- :data:`REQUIRED` (the ``paper`` profile's value): the user must give the path; resolving it fails at
  once with a message saying where the file comes from.

Nothing is downloaded. The checkpoint's SHA-256 enters every cache key of the runs that use it.
"""

from __future__ import annotations

import functools
import hashlib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch import nn

__all__ = ["PRETRAIN", "REQUIRED", "TORCHCFM", "TORCHCFM_RELEASE", "check_pretrained_checkpoint",
           "check_checkpoint_task", "checkpoint_sha256", "is_torchcfm_config", "torchcfm_model_config",
           "torchcfm_model_items", "load_checkpoint_model"]

#: Value of ``pretrained_checkpoint`` that pretrains the source model here.
PRETRAIN = "pretrain"
#: Value of ``pretrained_checkpoint`` that asks the user for the file (the paper profile's).
REQUIRED = "required"
#: ``model_config`` name (or ``model_config["config"]``) of torchcfm's network.
TORCHCFM = "torchcfm"
#: File name of torchcfm's CIFAR-10 OT-CFM release (github.com/atong01/conditional-flow-matching).
TORCHCFM_RELEASE = "otcfm_cifar10_weights_step_400000.pt"


def check_pretrained_checkpoint(value: Any) -> str | None:
    """None for :data:`PRETRAIN`, else the checkpoint's path (must be an existing file).

    Raises ValueError for :data:`REQUIRED` (naming the parameter and where the file comes from),
    FileNotFoundError naming the parameter and the path for a missing file, TypeError otherwise.
    """
    if value == PRETRAIN:
        return None
    if value == REQUIRED:
        raise ValueError(
            f"pretrained_checkpoint is required by this profile: it starts, as the paper does, from "
            f"torchcfm's CIFAR-10 OT-CFM checkpoint ({TORCHCFM_RELEASE}, from the releases of "
            f"github.com/atong01/conditional-flow-matching; never downloaded here). Pass "
            f"-p pretrained_checkpoint /path/to/{TORCHCFM_RELEASE} -p pretrain_root /path/to/cifar10, "
            f"or -p pretrained_checkpoint {PRETRAIN} to pretrain the source model here")
    if not isinstance(value, (str, os.PathLike)) or str(value) in ("", REQUIRED):
        raise TypeError(f"pretrained_checkpoint must be {PRETRAIN!r} or a local torchcfm checkpoint path, "
                        f"got {value!r}")
    path = Path(value).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"pretrained_checkpoint must be {PRETRAIN!r} or an existing torchcfm checkpoint "
                                f"file (such as {TORCHCFM_RELEASE}); no such file: {path}")
    return str(path)


def check_checkpoint_task(checkpoint: str | None, model_kind: str, pretrain_root: str | None) -> None:
    """Raise ValueError unless a task starting from torchcfm checkpoint ``checkpoint`` (None: none)
    has torchcfm's network (``model_kind``) and a ``pretrain_root`` (the source's held-out split)."""
    if checkpoint is None:
        return
    if model_kind != TORCHCFM:
        raise ValueError(f"pretrained_checkpoint={checkpoint!r} is a torchcfm checkpoint: model_config must "
                         f"be 'torchcfm' or {{'config': 'torchcfm', ...}} (its architecture), got a gftlib "
                         f"UNet config")
    if pretrain_root is None:
        raise ValueError("pretrained_checkpoint needs pretrain_root: the local CIFAR-10 folder the "
                         "checkpoint was trained on (its test split is the held-out source set of the "
                         "source references), got None")


@functools.lru_cache(maxsize=8)
def _sha256(path: str, size: int, mtime_ns: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def checkpoint_sha256(path: str) -> str:
    """SHA-256 of the file (cached per path, size and modification time)."""
    st = os.stat(path)
    return _sha256(str(path), st.st_size, st.st_mtime_ns)


def torchcfm_model_config(overrides: Mapping[str, Any], image_size: int) -> dict[str, Any]:
    """``build_model`` arguments of torchcfm's network at side ``image_size``: ``kind="torchcfm"``,
    TORCHCFM_CIFAR10 with ``dim`` (3, S, S) and attention at the CIFAR-10 depth
    (:func:`gftlib.models.torchcfm.torchcfm_size_config`; only where ``overrides`` sets no
    ``attention_resolutions``), then ``overrides`` (``UNetModelWrapper`` arguments; not ``dim``)."""
    from gftlib.models.torchcfm import TORCHCFM_CIFAR10, torchcfm_size_config

    extra = dict(overrides)
    if "dim" in extra:
        raise ValueError(f"model_config['dim']={extra['dim']!r}: set image_size only (dim is (3, S, S))")
    cfg: dict[str, Any] = dict(TORCHCFM_CIFAR10)
    if "attention_resolutions" in extra:
        cfg["dim"] = [3, image_size, image_size]
    else:
        cfg.update(torchcfm_size_config(image_size))
    cfg.update(extra)
    cfg["kind"] = TORCHCFM
    return cfg


def is_torchcfm_config(model_config: Any) -> bool:
    """Whether ``model_config`` names torchcfm's network ("torchcfm" or {"config": "torchcfm", ...})."""
    return model_config == TORCHCFM or (isinstance(model_config, Mapping)
                                        and model_config.get("config") == TORCHCFM)


def torchcfm_model_items(model_config: str | Mapping[str, Any], image_size: int) -> tuple[tuple[str, Any], ...]:
    """:func:`torchcfm_model_config` of a torchcfm ``model_config`` (see :func:`is_torchcfm_config`)
    as sorted ``(name, value)`` items, lists made tuples (``ImageTask.model_config``)."""
    extra = {} if isinstance(model_config, str) else {k: v for k, v in model_config.items() if k != "config"}
    cfg = torchcfm_model_config(extra, image_size)
    return tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in cfg.items()))


def load_checkpoint_model(path: str, model_kwargs: Mapping[str, Any]) -> nn.Module:
    """The EMA network of torchcfm checkpoint ``path`` (CPU, eval mode, no gradients);
    ``model_kwargs``: :func:`torchcfm_model_config` output (``kind`` dropped)."""
    from gftlib.models import load_torchcfm

    cfg = {k: v for k, v in model_kwargs.items() if k != "kind"}
    return load_torchcfm(path, ema=True, **cfg).eval().requires_grad_(False)
