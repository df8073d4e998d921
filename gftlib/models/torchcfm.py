"""torchcfm's UNet as a gftlib velocity field, and its checkpoint format (load and save).

torchcfm (Tong et al.) trains ``torchcfm.models.unet.unet.UNetModelWrapper`` and releases
checkpoints as ``torch.save({"net_model": state_dict, "ema_model": state_dict, ...})``; with
``--parallel`` the keys carry DataParallel's ``module.`` prefix. Its networks are called as
``net(t, x)`` with t = 0 noise, t = 1 data, the same direction as gftlib, so the adapter only swaps
the arguments: :class:`TorchCFMVelocity` is ``model(x, t)`` with ``t: (n,)``.

gftlib wraps torchcfm's own class (outputs identical by construction of the weights, not a
re-implementation). torchcfm is installed with ``pip install --no-deps torchcfm==1.0.7`` (the
Makefile does): its declared dependencies include torchdyn, which pulls torchvision and lightning,
but ``torchcfm.models.unet`` needs only torch, numpy, scipy, POT and pandas, all in the lock file.
"""

from __future__ import annotations

import inspect
import os
import pickle
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from gftlib.io import atomic_torch_save

__all__ = ["TORCHCFM_CIFAR10", "TORCHCFM_RECIPE", "TorchCFMVelocity", "load_torchcfm", "save_torchcfm",
           "torchcfm_size_config", "torchcfm_state_dict"]

#: torchcfm's CIFAR-10 architecture (examples/images/cifar10/train_cifar10.py): 35,746,307 parameters.
TORCHCFM_CIFAR10: dict[str, Any] = {
    "dim": (3, 32, 32),
    "num_channels": 128,
    "num_res_blocks": 2,
    "channel_mult": [1, 2, 2, 2],
    "attention_resolutions": "16",
    "num_heads": 4,
    "num_head_channels": 64,
    "dropout": 0.1,
}

#: torchcfm's optimiser and loss (examples/images/cifar10/train_cifar10.py): Adam at lr 2e-4 (gftlib's
#: AdamW with weight_decay 0 is Adam), gradient-norm clip 1, EMA 0.9999, squared error averaged over
#: all elements (gftlib.losses.ElementMean). What ``gft finetune`` and E2 use when they start from a
#: torchcfm network. (torchcfm also warms the lr up over 5000 steps when it trains from scratch;
#: fine-tuning starts at the full lr.)
TORCHCFM_RECIPE: dict[str, Any] = {"lr": 2e-4, "grad_clip": 1.0, "ema_decay": 0.9999, "loss_reduction": "mean"}

_INSTALL = "pip install --no-deps torchcfm==1.0.7"
_STRIP_PREFIXES = ("module.", "_orig_mod.")  # DataParallel / DDP, torch.compile


def _wrapper_class() -> type[nn.Module]:
    try:
        from torchcfm.models.unet.unet import UNetModelWrapper
    except ImportError as exc:  # pragma: no cover - torchcfm is installed by the Makefile
        raise ImportError(f"torchcfm models need the torchcfm package ({_INSTALL}); "
                          f"import failed: {exc}") from exc
    return UNetModelWrapper


def _wrapper_args() -> list[str]:
    return [p for p in inspect.signature(_wrapper_class().__init__).parameters if p != "self"]


class TorchCFMVelocity(nn.Module):
    """torchcfm ``UNetModelWrapper(**config)`` as gftlib's ``model(x, t)``: x (n, C, H, W), t (n,).

    ``config`` overrides :data:`TORCHCFM_CIFAR10` (any ``UNetModelWrapper`` argument; unknown keys
    raise TypeError naming the allowed ones). The torchcfm network is ``self.net``; ``self.config``
    is the full argument dict (so the model can be rebuilt as ``TorchCFMVelocity(**model.config)``).
    """

    def __init__(self, **config: Any) -> None:
        super().__init__()
        allowed = _wrapper_args()
        unknown = sorted(set(config) - set(allowed))
        if unknown:
            raise TypeError(f"unknown torchcfm UNetModelWrapper argument(s) {unknown}; allowed: {allowed}")
        cfg = {**TORCHCFM_CIFAR10, **config}
        dim = cfg["dim"]
        if (not isinstance(dim, (tuple, list)) or len(dim) != 3
                or not all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in dim)):
            raise ValueError(f"dim must be (C, H, W) of positive integers, got {dim!r}")
        cfg["dim"] = tuple(dim)
        if cfg.get("learn_sigma"):
            raise ValueError("learn_sigma=True doubles the output channels; a velocity field needs "
                             "learn_sigma=False")
        self.config = cfg
        self.net = _wrapper_class()(**cfg)

    def forward(self, x: Tensor, t: Tensor, y: Tensor | None = None) -> Tensor:
        """Velocity at (x, t): x (n, C, H, W), t (n,) or a scalar in [0, 1] (t = 0 noise); y: class
        labels (n,) for ``class_cond=True`` models."""
        if not isinstance(x, Tensor) or x.ndim != 4 or tuple(x.shape[1:2]) != (self.config["dim"][0],):
            raise ValueError(f"x must have shape (n, {self.config['dim'][0]}, H, W), got "
                             f"{getattr(x, 'shape', type(x).__name__)}")
        t = torch.as_tensor(t, dtype=x.dtype, device=x.device)
        if t.ndim == 0:
            t = t.expand(x.shape[0])
        if t.shape != (x.shape[0],):
            raise ValueError(f"t must have shape ({x.shape[0]},) or be a scalar, got {tuple(t.shape)}")
        return self.net(t, x, y)


def torchcfm_size_config(size: int) -> dict[str, Any]:
    """``dim`` and ``attention_resolutions`` of the CIFAR-10 network at image side ``size``.

    torchcfm places attention at downsampling factor ``image_size // res`` ("16" at 32 px: factor 2,
    the 16 x 16 level). Keeping factor 2 at any side (res = size // 2, e.g. "48" at 96 px) keeps the
    checkpoint's attention blocks, so its state dict loads unchanged; "16" at 96 px would ask for
    factor 6, which does not exist, and drop every attention block. ValueError unless size % 8 == 0.
    """
    if isinstance(size, bool) or not isinstance(size, int) or size < 8 or size % 8:
        raise ValueError(f"image size must be a multiple of 8 for torchcfm's CIFAR-10 network "
                         f"(3 downsamplings), got {size!r}")
    return {"dim": [3, size, size], "attention_resolutions": str(size // 2)}


def _strip(state: Mapping[str, Tensor]) -> "OrderedDict[str, Tensor]":
    out = OrderedDict(state)
    changed = True
    while changed and out:
        changed = False
        for prefix in _STRIP_PREFIXES:
            if all(k.startswith(prefix) for k in out):
                out = OrderedDict((k[len(prefix):], v) for k, v in out.items())
                changed = True
    return out


def _select_state(obj: Any, ema: bool, source: str) -> "OrderedDict[str, Tensor]":
    if not isinstance(obj, Mapping):
        raise TypeError(f"{source}: expected a torchcfm checkpoint dict or a state dict, "
                        f"got {type(obj).__name__}")
    key = "ema_model" if ema else "net_model"
    if "net_model" in obj or "ema_model" in obj:
        if key not in obj:
            raise KeyError(f"{source}: checkpoint has no {key!r} entry (ema={ema}); keys: {sorted(obj)}")
        state = obj[key]
    elif obj and all(isinstance(v, Tensor) for v in obj.values()):
        state = obj  # a bare state dict
    else:
        raise ValueError(f"{source}: expected torchcfm's release format (a dict with 'net_model' and "
                         f"'ema_model' state dicts) or a bare state dict; keys: {sorted(obj)[:10]}")
    if not isinstance(state, Mapping):
        raise TypeError(f"{source}: {key!r} must be a state dict, got {type(state).__name__}")
    return _strip(state)


def load_torchcfm(path_or_state: str | os.PathLike[str] | Mapping[str, Any], *, ema: bool = True,
                  map_location: str | torch.device = "cpu", **config: Any) -> TorchCFMVelocity:
    """Load a torchcfm checkpoint as a gftlib velocity field ``model(x, t)`` (in eval mode).

    ``path_or_state``: a file in torchcfm's release format (dict with ``net_model`` / ``ema_model``),
    that dict itself, or a bare ``UNetModelWrapper`` state dict; ``module.`` (DataParallel) and
    ``_orig_mod.`` (torch.compile) key prefixes are removed. ``ema``: take ``ema_model`` (the weights
    torchcfm samples and reports FID with) rather than ``net_model``. ``config``: architecture
    overrides of :data:`TORCHCFM_CIFAR10` (e.g. ``dim=(3, 64, 64)``). Shape or key mismatches raise
    ValueError naming the first offending tensors and the config in use.
    """
    if not isinstance(ema, bool):
        raise TypeError(f"ema must be True or False, got {ema!r}")
    if isinstance(path_or_state, (str, os.PathLike)):
        path = Path(path_or_state).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"torchcfm checkpoint not found: {path}")
        try:
            obj = torch.load(path, map_location=map_location, weights_only=True)
        except pickle.UnpicklingError as exc:
            raise ValueError(f"{path} holds objects other than tensors and plain containers, which gftlib "
                             f"does not unpickle; if you trust the file, pass "
                             f"torch.load(path, weights_only=False) "
                             f"as path_or_state ({str(exc).splitlines()[0]})") from exc
        source = str(path)
    else:
        obj, source = path_or_state, "path_or_state"
    state = _select_state(obj, ema, source)
    model = TorchCFMVelocity(**config)
    own = model.net.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong = [f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
             for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or wrong:
        raise ValueError(f"{source} does not match torchcfm UNetModelWrapper({model.config}): "
                         f"{len(missing)} missing (e.g. {missing[:3]}), {len(unexpected)} unexpected "
                         f"(e.g. {unexpected[:3]}), {len(wrong)} of another shape (e.g. {wrong[:2]}); "
                         f"pass the checkpoint's architecture as keyword arguments")
    model.net.load_state_dict(state, strict=True)
    return model.eval()


def torchcfm_state_dict(model: nn.Module, *, copy: bool = True) -> "OrderedDict[str, Tensor]":
    """The ``UNetModelWrapper`` state dict (no prefix) of a TorchCFMVelocity, a torchcfm network, or
    either inside DataParallel/DDP: detached CPU copies, or with ``copy=False`` the detached tensors
    themselves (sharing the network's memory, on its device)."""
    wrappers = (nn.DataParallel, nn.parallel.DistributedDataParallel)
    inner = model.module if isinstance(model, wrappers) else model
    if isinstance(inner, TorchCFMVelocity):
        inner = inner.net
    if not isinstance(inner, _wrapper_class()):
        raise TypeError(f"model must be a TorchCFMVelocity or a torchcfm UNetModelWrapper, got "
                        f"{type(model).__name__}")
    if not copy:
        return OrderedDict((k, v.detach()) for k, v in _strip(inner.state_dict()).items())
    return OrderedDict((k, v.detach().to("cpu").clone()) for k, v in _strip(inner.state_dict()).items())


def save_torchcfm(model: nn.Module, path: str | os.PathLike[str], *, ema_model: nn.Module | None = None,
                  step: int | None = None) -> Path:
    """Write ``model`` in torchcfm's release format ``{"net_model", "ema_model"[, "step"]}``, atomically.

    ``net_model`` holds ``model``'s weights, ``ema_model`` those of ``ema_model`` (default: ``model``
    again, e.g. for a fine-tuned EMA network saved alone). Keys carry no ``module.`` prefix, which
    torchcfm's ``compute_fid.py`` and :func:`load_torchcfm` both accept.
    """
    net = torchcfm_state_dict(model)
    ema_state = net if ema_model is None else torchcfm_state_dict(ema_model)
    if ema_model is not None and list(ema_state) != list(net):
        raise ValueError("ema_model must have the same architecture as model")
    obj: dict[str, Any] = {"net_model": net, "ema_model": ema_state}
    if step is not None:
        if isinstance(step, bool) or not isinstance(step, int) or step < 0:
            raise ValueError(f"step must be a non-negative integer or None, got {step!r}")
        obj["step"] = step
    return atomic_torch_save(obj, path)
