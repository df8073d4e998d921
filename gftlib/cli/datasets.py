"""Load the samples a data SPEC names, as one in-memory tensor (the training target / eval reference).

2-D: ``(n, 2)`` float32; images: ``(n, 3, S, S)`` float32 in [-1, 1] (centre crop + antialiased
resize to ``S = --image-size``). Fine-tuning uses a fixed target sample of ``--n-data`` items (the
paper's setting: a few thousand target images), drawn as a seeded random subset of the split; the
full set (e.g. Camelyon17's 455k patches) is never loaded. Splits (``--split auto``): training
uses ``train``; evaluation uses a disjoint held-out split: patches ``heldout`` (other image columns),
CIFAR-10 ``test``, WILDS Camelyon17 ``id_val`` (the training hospitals' held-out patches), other WILDS
sets ``test``, folders/arrays ``heldout`` (the seeded hash split of :mod:`gftlib.data.image_sources`).
2-D: an independent draw (seed ``data_seed + 1``). Disk images are decoded by ``workers`` DataLoader
processes (:func:`gftlib.data.image_sources.image_loader`).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from gftlib.cli.specs import CLIError, DataSpec

__all__ = ["resolve_split", "load_data", "parse_where"]


def resolve_split(spec: DataSpec, split: str, *, role: str) -> str:
    """``split`` unless it is "auto": then the training (``role="train"``) or held-out split."""
    if split != "auto":
        return split
    if role == "train":
        return "train"
    if spec.kind in ("patches", "2d", "folder", "npz"):
        return "heldout"
    if spec.kind == "wilds-camelyon17":
        return "id_val"
    return "test"


def parse_where(items: list[str] | None) -> dict[str, Any] | None:
    """``["center=3", "split=0"]`` -> {"center": 3, "split": 0} (integers where they parse)."""
    if not items:
        return None
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise CLIError("--where", item, "COLUMN=VALUE (a metadata column of a WILDS set, e.g. center=3)")
        out[key] = int(value) if value.lstrip("-").isdigit() else value
    return out


def _patch_downsample(size: int) -> int:
    """Crop side 64 (or the image size if larger) average-pooled to ``size``, as the notebooks do."""
    return max(1, 64 // size)


def load_data(spec: DataSpec, *, n: int, image_size: int, split: str, seed: int,
              where: dict[str, Any] | None = None, workers: int = 0) -> Tensor:
    """``n`` samples of ``spec`` (see the module docstring); FileNotFoundError/ValueError name the path."""
    from gftlib.data import datasets as gdata

    if spec.kind == "2d":
        gen = torch.Generator().manual_seed(seed + (0 if split == "train" else 1))
        return gdata.make_2d(spec.value, n, generator=gen)
    if spec.kind == "patches":
        return gdata.image_patches(spec.value, size=image_size, n=n, split=split, seed=seed,
                                   downsample=_patch_downsample(image_size))
    return _disk_images(spec, n=n, image_size=image_size, split=split, seed=seed, where=where,
                        workers=workers)


def _disk_images(spec: DataSpec, *, n: int, image_size: int, split: str, seed: int,
                 where: dict[str, Any] | None, workers: int) -> Tensor:
    """A seeded random subset of ``n`` images of a disk source, decoded by ``workers`` processes."""
    import numpy as np
    from torch.utils.data import Subset

    from gftlib.data.image_sources import image_loader, open_image_source

    try:
        source = open_image_source(spec.kind, spec.value, split=split, image_size=image_size, seed=seed,
                                   where=where)
    except (FileNotFoundError, ValueError) as err:
        raise CLIError("--data", str(spec), f"a data set in the documented layout: {err}") from None
    if len(source) < n:
        raise CLIError("--n-data" if split == "train" else "--n-ref", n,
                       f"at most {len(source)} (the images of {spec} split {split!r})")
    keep = np.sort(np.random.default_rng(seed).permutation(len(source))[:n])
    loader = image_loader(Subset(source, keep.tolist()), batch_size=256, shuffle=False, num_workers=workers)
    return torch.cat(list(loader)).contiguous()
