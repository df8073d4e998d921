"""Data: 2-D toy distributions, image patches from scikit-image's shipped images, optional local
CIFAR-10 / WILDS image sets loaded into memory (streaming readers for those and for image folders
and arrays: :mod:`gftlib.data.image_sources`, :mod:`gftlib.data.wilds_sources`).

Conventions: samples are data points (t = 1 end of the flow). 2-D sets have shape (n, 2) in
float32 with mean 0 and variance 1 per coordinate in the population (exactly, by construction).
Images are float32 (n, 3, H, W) in [-1, 1]. Randomness only through an explicit torch.Generator
(``make_2d``) or an integer ``seed`` (images).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from gftlib.validation import check_choice, check_finite_number, check_positive_int

__all__ = [
    "DISTRIBUTIONS_2D",
    "make_2d",
    "IMAGE_SOURCES",
    "PATCH_SPLITS",
    "PatchBoxes",
    "split_columns",
    "patch_boxes",
    "image_patches",
    "IMAGE_DATASETS",
    "ImageDataset",
    "load_image_dataset",
]

# --------------------------------------------------------------------------------------------
# 2-D toy distributions. Each raw sampler returns float64 points; standardisation uses the exact
# population mean / std per coordinate (closed form, or quadrature for the spiral).
# --------------------------------------------------------------------------------------------

_G8_RADIUS, _G8_STD = 1.0, 0.1
_G4_STD = 0.15
_MOONS_NOISE = 0.05
_RINGS_RADII, _RINGS_NOISE = (0.5, 1.0), 0.04
_SPIRAL_TURNS, _SPIRAL_NOISE = 1.5, 0.03  # angle up to 2*pi*turns


def _normal(n: int, d: int, g: torch.Generator) -> Tensor:
    return torch.randn(n, d, generator=g, dtype=torch.float64)


def _uniform(n: int, g: torch.Generator) -> Tensor:
    return torch.rand(n, generator=g, dtype=torch.float64)


def _choice(n: int, k: int, g: torch.Generator) -> Tensor:
    return torch.randint(0, k, (n,), generator=g)


def _raw_gaussians8(n: int, g: torch.Generator) -> Tensor:
    angle = _choice(n, 8, g).double() * (math.pi / 4)
    centers = _G8_RADIUS * torch.stack([torch.cos(angle), torch.sin(angle)], dim=1)
    return centers + _G8_STD * _normal(n, 2, g)


def _raw_gaussians4(n: int, g: torch.Generator) -> Tensor:
    k = _choice(n, 4, g)
    centers = torch.stack([(k % 2) * 2.0 - 1.0, (k // 2) * 2.0 - 1.0], dim=1).double()
    return centers + _G4_STD * _normal(n, 2, g)


def _raw_moons(n: int, g: torch.Generator) -> Tensor:
    upper = _choice(n, 2, g).bool()
    theta = math.pi * _uniform(n, g)
    x = torch.where(upper, torch.cos(theta), 1.0 - torch.cos(theta))
    y = torch.where(upper, torch.sin(theta), 0.5 - torch.sin(theta))
    return torch.stack([x, y], dim=1) + _MOONS_NOISE * _normal(n, 2, g)


def _raw_rings(n: int, g: torch.Generator) -> Tensor:
    radius = torch.tensor(_RINGS_RADII, dtype=torch.float64)[_choice(n, 2, g)]
    theta = 2 * math.pi * _uniform(n, g)
    pts = radius[:, None] * torch.stack([torch.cos(theta), torch.sin(theta)], dim=1)
    return pts + _RINGS_NOISE * _normal(n, 2, g)


def _raw_checkerboard(n: int, g: torch.Generator) -> Tensor:
    # 4 x 4 cells of side 1 on [-2, 2]^2; the 8 cells with (row + col) even carry uniform mass.
    col = _choice(n, 4, g)
    row = 2 * _choice(n, 2, g) + (col % 2)  # row parity equals column parity
    u = torch.rand(n, 2, generator=g, dtype=torch.float64)
    return torch.stack([col.double() + u[:, 0], row.double() + u[:, 1]], dim=1) - 2.0


def _spiral_arm(s: Tensor) -> Tensor:
    """Arm point at arc parameter s in [0, 1]: radius s, angle 2 pi turns s."""
    theta = 2 * math.pi * _SPIRAL_TURNS * s
    return torch.stack([s * torch.cos(theta), s * torch.sin(theta)], dim=1)


def _raw_spiral(n: int, g: torch.Generator) -> Tensor:
    # Two point-symmetric arms; s = sqrt(u) spreads points roughly evenly along the curve.
    sign = _choice(n, 2, g).double() * 2.0 - 1.0
    s = torch.sqrt(_uniform(n, g))
    return sign[:, None] * _spiral_arm(s) + _SPIRAL_NOISE * _normal(n, 2, g)


@functools.lru_cache(maxsize=None)
def _spiral_second_moments() -> tuple[float, float]:
    # E[x^2], E[y^2] of one arm by the midpoint rule in u (s = sqrt(u)); the two arms share them.
    m = 400_000
    u = (torch.arange(m, dtype=torch.float64) + 0.5) / m
    pts = _spiral_arm(torch.sqrt(u))
    return float((pts[:, 0] ** 2).mean()), float((pts[:, 1] ** 2).mean())


def _moments(name: str) -> tuple[tuple[float, float], tuple[float, float]]:
    """Exact population (mean, variance) per coordinate of the raw distribution ``name``."""
    if name == "gaussians8":
        v = _G8_RADIUS ** 2 / 2 + _G8_STD ** 2
        return (0.0, 0.0), (v, v)
    if name == "gaussians4":
        v = 1.0 + _G4_STD ** 2
        return (0.0, 0.0), (v, v)
    if name == "moons":
        # x: cos(th) or 1 - cos(th), th ~ U[0, pi]; y: sin(th) or 1/2 - sin(th); E sin = 2/pi.
        mean_y = 0.25
        ey2 = 0.5 * (0.5 + (0.25 - 2.0 / math.pi + 0.5))
        return (0.5, mean_y), (0.75 + _MOONS_NOISE ** 2, ey2 - mean_y ** 2 + _MOONS_NOISE ** 2)
    if name == "rings":
        v = sum(r * r for r in _RINGS_RADII) / len(_RINGS_RADII) / 2 + _RINGS_NOISE ** 2
        return (0.0, 0.0), (v, v)
    if name == "checkerboard":
        return (0.0, 0.0), (4.0 / 3.0, 4.0 / 3.0)
    if name == "spiral":
        ex2, ey2 = _spiral_second_moments()
        return (0.0, 0.0), (ex2 + _SPIRAL_NOISE ** 2, ey2 + _SPIRAL_NOISE ** 2)
    if name == "gaussian":
        return (0.0, 0.0), (1.0, 1.0)
    raise KeyError(name)


_RAW_2D: dict[str, Callable[[int, torch.Generator], Tensor]] = {
    "gaussians8": _raw_gaussians8,
    "gaussians4": _raw_gaussians4,
    "moons": _raw_moons,
    "rings": _raw_rings,
    "checkerboard": _raw_checkerboard,
    "spiral": _raw_spiral,
    "gaussian": lambda n, g: _normal(n, 2, g),
}

#: Names accepted by :func:`make_2d`.
DISTRIBUTIONS_2D: tuple[str, ...] = tuple(_RAW_2D)


def make_2d(name: str, n: int, *, generator: torch.Generator | None = None) -> Tensor:
    """Draw ``n`` points (n, 2) float32 from the 2-D distribution ``name`` (see DISTRIBUTIONS_2D).

    gaussians8: 8 Gaussians on a circle; gaussians4: 4 Gaussians at the corners of a square;
    moons: two interleaved half circles; rings: two concentric rings (radius ratio 2, equal mass);
    checkerboard: uniform on 8 squares of a 4 x 4 board; spiral: two point-symmetric spiral arms;
    gaussian: standard normal. Every set is shifted and scaled to mean 0 and variance 1 per
    coordinate in the population. ``generator`` must be a CPU generator (None: seeded with 0).
    """
    name = check_choice("name", name, DISTRIBUTIONS_2D)
    n = check_positive_int("n", n)
    if generator is None:
        generator = torch.Generator().manual_seed(0)
    if not isinstance(generator, torch.Generator) or generator.device.type != "cpu":
        raise TypeError(f"generator must be a CPU torch.Generator, got {generator!r}")
    raw = _RAW_2D[name](n, generator)
    mean, var = _moments(name)
    out = (raw - torch.tensor(mean, dtype=torch.float64)) / torch.tensor(var, dtype=torch.float64).sqrt()
    return out.float()


# --------------------------------------------------------------------------------------------
# Image patches from scikit-image's shipped images (no download).
# --------------------------------------------------------------------------------------------

#: source name -> names of ``skimage.data`` functions (all ship inside scikit-image).
IMAGE_SOURCES: dict[str, tuple[str, ...]] = {
    "natural": ("astronaut", "chelsea", "coffee", "rocket"),
    "ihc": ("immunohistochemistry",),
    "hubble": ("hubble_deep_field",),
    "retina": ("retina",),
}
PATCH_SPLITS: tuple[str, ...] = ("train", "heldout")
_TRAIN_FRACTION = 0.75


@functools.lru_cache(maxsize=None)
def _skimage_image(name: str) -> np.ndarray:
    import skimage.data

    img = np.asarray(getattr(skimage.data, name)())
    if img.ndim == 2:
        img = np.repeat(img[:, :, None], 3, axis=2)
    img = img[:, :, :3]
    if img.dtype != np.uint8:
        raise TypeError(f"skimage.data.{name} is {img.dtype}, expected uint8")
    img.setflags(write=False)
    return img


def split_columns(source: str, split: str, *, train_fraction: float = _TRAIN_FRACTION
                  ) -> tuple[tuple[int, int], ...]:
    """Column range [start, end) of each image of ``source`` that ``split`` may use.

    "train": the left ``floor(train_fraction * W)`` columns; "heldout": the remaining right columns.
    The two ranges are disjoint, so held-out patches never share a pixel with training patches.
    """
    source = check_choice("source", source, IMAGE_SOURCES)
    split = check_choice("split", split, PATCH_SPLITS)
    train_fraction = check_finite_number("train_fraction", train_fraction, minimum=0.0, maximum=1.0,
                                         strict=True)
    out = []
    for name in IMAGE_SOURCES[source]:
        w = _skimage_image(name).shape[1]
        cut = int(math.floor(train_fraction * w))
        out.append((0, cut) if split == "train" else (cut, w))
    return tuple(out)


@dataclass(frozen=True)
class PatchBoxes:
    """Crop boxes in source-image pixels: image index into IMAGE_SOURCES[source], top row, left
    column (each (n,) long), crop side ``crop`` (= size * downsample) and horizontal flips (n,) bool."""

    image_index: Tensor
    top: Tensor
    left: Tensor
    flipped: Tensor
    crop: int


def _check_patch_args(source: str, size: Any, downsample: Any, split: str,
                      train_fraction: float) -> tuple[int, int, tuple[tuple[int, int], ...]]:
    size = check_positive_int("size", size, minimum=2)
    downsample = check_positive_int("downsample", downsample)
    crop = size * downsample
    regions = split_columns(source, split, train_fraction=train_fraction)
    other = split_columns(source, "heldout" if split == "train" else "train", train_fraction=train_fraction)
    # A crop must fit in both splits' regions of every image, so both splits see the same images.
    limit = min(min(e - s, _skimage_image(nm).shape[0])
                for nm, regs in zip(IMAGE_SOURCES[source], zip(regions, other)) for (s, e) in regs)
    if crop > limit:
        raise ValueError(f"size * downsample must be <= {limit} for source {source!r} (the narrowest "
                         f"train/heldout region), got size={size}, downsample={downsample} (crop {crop})")
    return size, downsample, regions


def patch_boxes(source: str, *, size: int = 32, n: int, split: str = "train", seed: int = 0,
                flip: bool = True, downsample: int = 1,
                train_fraction: float = _TRAIN_FRACTION) -> PatchBoxes:
    """The random crop boxes :func:`image_patches` uses (same arguments, same seed -> same boxes).

    Images are chosen uniformly, then the top-left corner uniformly among the positions whose crop
    lies inside the split's column range; flips with probability 1/2 when ``flip``.
    """
    n = check_positive_int("n", n)
    size, downsample, regions = _check_patch_args(source, size, downsample, split, train_fraction)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an integer, got {seed!r}")
    crop = size * downsample
    g = torch.Generator().manual_seed(seed)
    names = IMAGE_SOURCES[source]
    idx = torch.randint(0, len(names), (n,), generator=g)
    heights = torch.tensor([_skimage_image(nm).shape[0] for nm in names])
    starts = torch.tensor([s for s, _ in regions])
    ends = torch.tensor([e for _, e in regions])
    u = torch.rand(n, 2, generator=g, dtype=torch.float64)
    n_top = (heights[idx] - crop + 1).double()
    n_left = (ends[idx] - starts[idx] - crop + 1).double()
    top = torch.clamp((u[:, 0] * n_top).long(), max=(heights[idx] - crop))
    left = starts[idx] + torch.clamp((u[:, 1] * n_left).long(), max=(ends[idx] - starts[idx] - crop))
    flips = torch.rand(n, generator=g) < 0.5 if flip else torch.zeros(n, dtype=torch.bool)
    return PatchBoxes(image_index=idx, top=top, left=left, flipped=flips, crop=crop)


def image_patches(source: str, *, size: int = 32, n: int, split: str = "train", seed: int = 0,
                  flip: bool = True, downsample: int = 1,
                  train_fraction: float = _TRAIN_FRACTION) -> Tensor:
    """Random RGB patches (n, 3, size, size) float32 in [-1, 1] from scikit-image's shipped images.

    source: "natural" (astronaut, chelsea, coffee, rocket) | "ihc" (immunohistochemistry) |
    "hubble" (hubble_deep_field) | "retina". split: "train" uses the left ``train_fraction`` (75 %)
    of every image's columns, "heldout" the rest, so the splits share no pixel. A crop of side
    ``size * downsample`` is taken (optionally flipped left-right) and average-pooled by
    ``downsample`` (so small patches can still show structure). The crop must fit the narrowest
    region of the source (checked; e.g. 113 for "natural", whose chelsea image is 451 wide).
    Deterministic given ``seed``. Pixel value v in 0..255 maps to v / 127.5 - 1.
    """
    boxes = patch_boxes(source, size=size, n=n, split=split, seed=seed, flip=flip,
                        downsample=downsample, train_fraction=train_fraction)
    crop = boxes.crop
    out = torch.empty(boxes.top.shape[0], 3, crop, crop, dtype=torch.float32)
    ar = torch.arange(crop)
    for k, name in enumerate(IMAGE_SOURCES[source]):
        sel = torch.nonzero(boxes.image_index == k).flatten()
        if sel.numel() == 0:
            continue
        img = torch.from_numpy(np.array(_skimage_image(name)))  # (H, W, 3) uint8
        rows = (boxes.top[sel][:, None] + ar)[:, :, None]         # (m, crop, 1)
        cols = (boxes.left[sel][:, None] + ar)[:, None, :]        # (m, 1, crop)
        out[sel] = img[rows, cols].permute(0, 3, 1, 2).float()     # (m, 3, crop, crop)
    out = torch.where(boxes.flipped[:, None, None, None], out.flip(-1), out)
    if downsample > 1:
        out = F.avg_pool2d(out, kernel_size=downsample)
    return out / 127.5 - 1.0


# --------------------------------------------------------------------------------------------
# Optional local data sets (never downloaded): in-memory loading on top of gftlib.data.image_sources.
# --------------------------------------------------------------------------------------------

IMAGE_DATASETS: tuple[str, ...] = ("cifar10", "wilds-camelyon17", "wilds-rxrx1", "wilds-fmow", "wilds-<name>")


@dataclass(frozen=True)
class ImageDataset:
    """A loaded image set: images (n, 3, size, size) float32 in [-1, 1]; labels (n,) long or None
    (CIFAR class; Camelyon17 ``tumor``; RxRx1 ``sirna_id``; FMoW category index); metadata: the WILDS
    metadata rows (dicts of strings) of the returned images, in order, or None (CIFAR-10); the
    resolved data directory."""

    images: Tensor
    labels: Tensor | None
    metadata: tuple[dict[str, str], ...] | None
    name: str
    split: str
    directory: Path


def _subset(total: int, n: int | None, seed: int) -> np.ndarray:
    """Indices of a random size-n subset (sorted) of range(total); all when n is None."""
    if n is None:
        return np.arange(total)
    n = check_positive_int("n", n)
    if n > total:
        raise ValueError(f"n must be <= {total} (the number of available images), got {n}")
    g = torch.Generator().manual_seed(seed)
    return np.sort(torch.randperm(total, generator=g)[:n].numpy())


def load_image_dataset(name: str, root: str | Path, *, split: str = "train", size: int = 32,
                       n: int | None = None, seed: int = 0,
                       where: Mapping[str, Any] | None = None) -> ImageDataset:
    """Load an optional local image set into memory as (n, 3, size, size) float32 in [-1, 1].

    For large sets stream instead: :func:`gftlib.data.image_sources.open_image_source` (same names and
    layouts, plus image folders and .npy/.npz arrays) with :func:`gftlib.data.image_sources.image_loader`.
    name "cifar10": ``root/cifar-10-batches-py/{data_batch_1..5, test_batch}``; split "train" | "test".
    name "wilds-<dataset>" (camelyon17, rxrx1, fmow, or any WILDS set whose metadata.csv has a
    filename column), layouts and official splits as in :mod:`gftlib.data.wilds_sources` (e.g. camelyon17
    "train" | "id_val" | "val" (hospital 1) | "test" (hospital 2) | "all"); ``where`` adds column ==
    value filters (e.g. ``{"center": 3}``). Images are centre-cropped to a square and resized
    (antialiased) to ``size``. ``n``: a random subset of that many images (sorted, from ``seed``);
    None = all. A missing root or file raises FileNotFoundError naming the path and how to obtain it.
    """
    from gftlib.data.image_sources import open_image_source

    if not isinstance(name, str) or not (name == "cifar10" or (name.startswith("wilds-") and len(name) > 6)):
        raise ValueError(f"name must be 'cifar10' or 'wilds-<dataset>' (e.g. 'wilds-camelyon17'), "
                         f"got {name!r}")
    size = check_positive_int("size", size, minimum=2)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an integer, got {seed!r}")
    source = open_image_source(name, root, split=split, image_size=size, where=where)
    keep = _subset(len(source), n, seed)
    images = torch.stack([source[int(i)] for i in keep]) if len(keep) else torch.empty(0, 3, size, size)
    labels = None if source.labels is None else source.labels[torch.from_numpy(keep)]
    meta = None
    if source.metadata is not None:
        meta = tuple(source.metadata.iloc[keep].to_dict("records"))
    return ImageDataset(images=images.contiguous(), labels=labels, metadata=meta, name=name, split=split,
                        directory=source.directory)
