"""Networks of the ``gft`` command: fresh ones, gftlib weights files and torchcfm checkpoints.

A gftlib weights file (``format = "gftlib-weights-v1"``) is a ``torch.save`` dict with ``model``
and ``ema`` state dicts, ``model_spec`` (``{"kind": "mlp"|"unet"|"torchcfm", "config": {...}}``, the
constructor arguments that rebuild the network), ``data_spec``, ``args`` and ``history``. A model
fine-tuned from a torchcfm checkpoint additionally holds ``net_model`` / ``ema_model`` (torchcfm's
own state dicts), so torchcfm's sampling and FID scripts read the file as is. Files written by the
legacy ``python -m gftlib.experiments.train_cli`` (no ``model_spec``) are understood too.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from gftlib.cli.specs import CLIError, ModelSpec
from gftlib.io import atomic_torch_save

__all__ = ["WEIGHTS_FORMAT", "LoadedModel", "build", "fresh_spec", "load", "save",
           "sample_shape"]

WEIGHTS_FORMAT = "gftlib-weights-v1"


class LoadedModel:
    """A network and how to rebuild it: ``model`` (a velocity field ``model(x, t)``),
    ``model_spec`` ({"kind", "config"}), ``raw`` (the loaded file, or None for a fresh network)."""

    def __init__(self, model: nn.Module, model_spec: dict[str, Any], raw: dict[str, Any] | None) -> None:
        self.model, self.model_spec, self.raw = model, model_spec, raw

    @property
    def kind(self) -> str:
        return self.model_spec["kind"]


def sample_shape(model_spec: dict[str, Any]) -> tuple[int, ...]:
    """Shape of one sample (without the batch dimension) of the network ``model_spec`` describes."""
    cfg = model_spec["config"]
    if model_spec["kind"] == "mlp":
        return (int(cfg["dim"]),)
    if model_spec["kind"] == "unet":
        return (int(cfg.get("in_channels", 3)), int(cfg["image_size"]), int(cfg["image_size"]))
    return tuple(int(d) for d in cfg["dim"])


def _torchcfm_build(config: dict[str, Any]) -> nn.Module:
    from gftlib.models.torchcfm import TorchCFMVelocity

    return TorchCFMVelocity(**config)


def build(model_spec: dict[str, Any], *, seed: int | None = None) -> nn.Module:
    """A fresh network from ``model_spec`` (weights from ``seed``; None: the global RNG)."""
    from gftlib.models import build_model

    kind, cfg = model_spec["kind"], dict(model_spec["config"])
    if kind in ("mlp", "unet"):
        return build_model(kind, seed=seed, **cfg)
    if kind == "torchcfm":
        if seed is None:
            return _torchcfm_build(cfg)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return _torchcfm_build(cfg)
    raise ValueError(f"model_spec kind must be 'mlp', 'unet' or 'torchcfm', got {kind!r}")


def fresh_spec(spec: ModelSpec, *, data_shape: tuple[int, ...] | None, image_size: int | None,
               hidden: int = 256, depth: int = 3) -> dict[str, Any]:
    """The model_spec of a fresh ``mlp`` / ``unet:NAME`` for samples of ``data_shape``."""
    from gftlib.models import unet_config

    if spec.kind == "mlp":
        dim = 2 if data_shape is None else int(data_shape[0])
        if data_shape is not None and len(data_shape) != 1:
            raise CLIError("--model", "mlp", f"unet:tiny|small|cifar10 for image data of shape {data_shape}")
        return {"kind": "mlp", "config": {"dim": dim, "hidden": hidden, "depth": depth, "time_scale": 1.0}}
    cfg = unet_config(spec.value)
    if data_shape is not None and len(data_shape) != 3:
        raise CLIError("--model", str(spec), f"mlp for vector data of shape {data_shape}")
    if image_size is not None:
        cfg["image_size"] = int(image_size)
    for key in ("channel_mult", "attention_resolutions"):
        cfg[key] = list(cfg[key])
    return {"kind": "unet", "config": cfg}


def _legacy_spec(raw: dict[str, Any]) -> dict[str, Any]:
    """model_spec of a file written by gftlib.experiments.train_cli (args.task 2d | images)."""
    args = raw.get("args") or {}
    if args.get("task") == "2d":
        return {"kind": "mlp", "config": {"dim": 2, "hidden": int(args["hidden"]),
                                          "depth": int(args["depth"])}}
    if args.get("task") == "images":
        from gftlib.models import unet_config

        return {"kind": "unet", "config": unet_config("tiny")}
    raise ValueError("the weights file has neither model_spec nor train_cli args (task 2d | images)")


def torchcfm_size_config(size: int) -> dict[str, Any]:
    """:func:`gftlib.models.torchcfm.torchcfm_size_config`, as a CLIError naming ``--image-size``."""
    from gftlib.models.torchcfm import torchcfm_size_config as size_config

    try:
        return size_config(size)
    except ValueError:
        raise CLIError("--image-size", size, "a multiple of 8 for torchcfm's CIFAR-10 network "
                       "(3 downsamplings)") from None


def _load_torchcfm(option: str, path: str, image_size: int | None, ema: bool) -> LoadedModel:
    from gftlib.models.torchcfm import TORCHCFM_CIFAR10, load_torchcfm

    config = dict(TORCHCFM_CIFAR10)  # torchcfm's CIFAR-10 OT-CFM architecture at side S
    config.update(torchcfm_size_config(int(image_size or 32)))
    try:
        model = load_torchcfm(path, ema=ema, **config)
    except (KeyError, RuntimeError, TypeError, ValueError) as err:
        raise CLIError(option, f"torchcfm:{path}", "a torchcfm release checkpoint (dict with net_model and "
                       f"ema_model state dicts of the CIFAR-10 UNetModelWrapper): {err}") from None
    return LoadedModel(model, {"kind": "torchcfm", "config": config}, None)


def load(option: str, spec: ModelSpec, *, image_size: int | None = None, ema: bool = True) -> LoadedModel:
    """Load a weights file (its EMA weights when ``ema``) or a torchcfm checkpoint (CPU)."""
    if spec.kind == "torchcfm":
        return _load_torchcfm(option, spec.value, image_size, ema)
    if spec.kind != "weights":
        raise ValueError(f"load() takes a weights file or torchcfm checkpoint, got {spec}")
    try:
        raw = torch.load(spec.value, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unreadable file is a bad argument
        raise CLIError(option, spec.value, f"a gftlib weights file ({WEIGHTS_FORMAT}): {err}") from None
    if not isinstance(raw, dict) or raw.get("format") != WEIGHTS_FORMAT:
        torchcfm_like = isinstance(raw, dict) and "ema_model" in raw
        hint = " (for a torchcfm checkpoint write torchcfm:PATH)" if torchcfm_like else ""
        raise CLIError(option, spec.value, f"a gftlib weights file (format {WEIGHTS_FORMAT}){hint}")
    model_spec = raw.get("model_spec") or _legacy_spec(raw)
    if image_size is not None and model_spec["kind"] != "mlp" and sample_shape(model_spec)[-1] != image_size:
        raise CLIError("--image-size", image_size, f"{sample_shape(model_spec)[-1]} (the size {spec.value} "
                       "was trained at)")
    model = build(model_spec, seed=0)
    model.load_state_dict(raw["ema" if ema else "model"])
    return LoadedModel(model, model_spec, raw)


class _SharedCPU:
    """One CPU tensor per distinct device tensor (same memory, shape, strides and dtype), so that two
    state dicts of one network name the same storages and ``torch.save`` writes each only once."""

    def __init__(self) -> None:
        self._seen: dict[tuple[Any, ...], torch.Tensor] = {}

    def __call__(self, state: Mapping[str, torch.Tensor]) -> OrderedDict[str, torch.Tensor]:
        out: OrderedDict[str, torch.Tensor] = OrderedDict()
        for name, t in state.items():
            key = (t.device, t.data_ptr(), tuple(t.shape), t.stride(), t.dtype)
            if key not in self._seen:
                self._seen[key] = t.detach().cpu()
            out[name] = self._seen[key]
        return out


def save(path: str | Path, *, model: nn.Module, ema_model: nn.Module, model_spec: dict[str, Any],
         extra: dict[str, Any]) -> Path:
    """Write a gftlib weights file atomically (with torchcfm's keys for torchcfm networks). Every
    state dict is on the CPU; torchcfm's ``net_model`` / ``ema_model`` share the storages of
    ``model`` / ``ema``, so the file holds each network once."""
    cpu = _SharedCPU()
    payload: dict[str, Any] = {"format": WEIGHTS_FORMAT, "model": cpu(model.state_dict()),
                               "ema": cpu(ema_model.state_dict()), "model_spec": model_spec, **extra}
    if model_spec["kind"] == "torchcfm":
        from gftlib.models.torchcfm import torchcfm_state_dict

        payload["net_model"] = cpu(torchcfm_state_dict(model, copy=False))
        payload["ema_model"] = cpu(torchcfm_state_dict(ema_model, copy=False))
    return atomic_torch_save(payload, path)
