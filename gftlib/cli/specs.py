"""Parsing of the ``gft`` command's data and model SPEC strings (validated before any work).

Data SPEC (``--data``): ``KIND:VALUE``

==========================  ===================================================================
``2d:NAME``                 ``gftlib.data.datasets.make_2d(NAME)`` points (n, 2) (NAME in DISTRIBUTIONS_2D)
``patches:SOURCE``          scikit-image patches ``gftlib.data.datasets.image_patches(SOURCE)`` (ihc, natural, ...)
``cifar10:ROOT``            ``ROOT/cifar-10-batches-py`` (python batches)
``wilds-NAME:ROOT``         WILDS set NAME (camelyon17, rxrx1, fmow, ...) under ``ROOT/NAME_v<version>``
``folder:PATH``             a folder of PNG/JPEG images (recursive)
``npz:PATH``                a ``.npy`` / ``.npz`` image array
==========================  ===================================================================

Model SPEC (``--model``, ``--pretrained``, ``--weights``): a gftlib weights file (written by
``gft pretrain|finetune --out``), ``torchcfm:PATH`` (a torchcfm release checkpoint with
``net_model`` / ``ema_model``), or a fresh network: ``mlp`` or ``unet:tiny|small|cifar10``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

__all__ = ["CLIError", "DataSpec", "ModelSpec", "parse_data_spec", "parse_model_spec", "parse_choice_list",
           "DATA_KINDS", "FRESH_MODELS", "UNET_NAMES"]

#: Data SPEC kinds; ``wilds-*`` stands for every WILDS set name.
DATA_KINDS: tuple[str, ...] = ("2d", "patches", "cifar10", "wilds-camelyon17", "wilds-rxrx1", "wilds-fmow",
                               "folder", "npz")
UNET_NAMES: tuple[str, ...] = ("tiny", "small", "cifar10")
FRESH_MODELS: tuple[str, ...] = ("mlp",) + tuple(f"unet:{n}" for n in UNET_NAMES)
_DISK_KINDS = ("cifar10", "folder", "npz")


class CLIError(ValueError):
    """A bad command-line argument: names the option, the value and what is allowed."""

    def __init__(self, option: str, value: object, allowed: str) -> None:
        self.option, self.value, self.allowed = option, value, allowed
        super().__init__(f"{option}: invalid value {value!r}; allowed: {allowed}")


@dataclass(frozen=True)
class DataSpec:
    """``kind`` (one of DATA_KINDS, or ``wilds-<name>``) and its ``value`` (a name or a path)."""

    kind: str
    value: str

    @property
    def is_2d(self) -> bool:
        return self.kind == "2d"

    def __str__(self) -> str:
        return f"{self.kind}:{self.value}"


@dataclass(frozen=True)
class ModelSpec:
    """``kind``: "weights" (gftlib file), "torchcfm" (release checkpoint), "mlp" or "unet";
    ``value``: the path (weights, torchcfm) or the UNet preset name (unet); "" for mlp."""

    kind: str
    value: str

    @property
    def is_fresh(self) -> bool:
        return self.kind in ("mlp", "unet")

    def __str__(self) -> str:
        return {"mlp": "mlp", "unet": f"unet:{self.value}", "torchcfm": f"torchcfm:{self.value}"}.get(
            self.kind, self.value)


_DATA_HELP = ("2d:NAME, patches:SOURCE, cifar10:ROOT, wilds-NAME:ROOT (camelyon17, rxrx1, fmow, ...), "
              "folder:PATH, npz:PATH")


def parse_data_spec(option: str, spec: str) -> DataSpec:
    """Parse and check a data SPEC: the name exists, or the path exists (nothing is read yet)."""
    from gftlib.data.datasets import DISTRIBUTIONS_2D, IMAGE_SOURCES

    kind, sep, value = str(spec).partition(":")
    if not sep or not value:
        raise CLIError(option, spec, _DATA_HELP)
    if kind == "2d":
        if value not in DISTRIBUTIONS_2D:
            raise CLIError(option, spec, "2d:" + "|".join(DISTRIBUTIONS_2D))
    elif kind == "patches":
        if value not in IMAGE_SOURCES:
            raise CLIError(option, spec, "patches:" + "|".join(IMAGE_SOURCES))
    elif kind in _DISK_KINDS or (kind.startswith("wilds-") and len(kind) > 6):
        path = Path(value).expanduser()
        want_file = kind == "npz"
        if not (path.is_file() if want_file else path.is_dir()):
            what = "an existing .npy/.npz file" if want_file else "an existing directory"
            raise CLIError(option, spec,
                           f"{kind}:PATH with PATH {what} (no such {'file' if want_file else 'directory'}: "
                                         f"{path})")
        value = str(path)
    else:
        raise CLIError(option, spec, _DATA_HELP)
    return DataSpec(kind, value)


def parse_model_spec(option: str, spec: str, *, fresh: bool = True) -> ModelSpec:
    """Parse and check a model SPEC (``fresh=False``: only weights files and torchcfm checkpoints)."""
    spec = str(spec)
    allowed = "a gftlib weights file, torchcfm:PATH" + (", " + ", ".join(FRESH_MODELS) if fresh else "")
    if spec == "mlp" or spec.startswith("unet:"):
        if not fresh:
            raise CLIError(option, spec, allowed)
        if spec == "mlp":
            return ModelSpec("mlp", "")
        name = spec[len("unet:"):]
        if name not in UNET_NAMES:
            raise CLIError(option, spec, "unet:" + "|".join(UNET_NAMES))
        return ModelSpec("unet", name)
    kind = "weights"
    path_text = spec
    if spec.startswith("torchcfm:"):
        kind, path_text = "torchcfm", spec[len("torchcfm:"):]
    path = Path(path_text).expanduser()
    if not path_text or not path.is_file():
        raise CLIError(option, spec, f"{allowed} (no such file: {path_text!r})")
    return ModelSpec(kind, str(path))


def parse_choice_list(option: str, text: str, allowed: tuple[str, ...]) -> tuple[str, ...]:
    """``"a,b"`` -> ("a", "b"), every item in ``allowed``, no repeats, at least one."""
    items = tuple(s.strip() for s in str(text).split(",") if s.strip())
    bad = [s for s in items if s not in allowed]
    if not items or bad or len(set(items)) != len(items):
        raise CLIError(option, text, "a comma-separated list without repeats of " + ",".join(allowed))
    return items
