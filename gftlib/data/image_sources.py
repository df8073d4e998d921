"""Image data sets from disk, streamed through a torch DataLoader (never downloaded).

One entry point, :func:`open_image_source` (or :func:`open_image_spec` for ``KIND:PATH`` strings),
returns an :class:`ImageSource` (a ``torch.utils.data.Dataset``) whose items are single images
(3, S, S) float32 in [-1, 1] (pixel v in 0..255 -> v / 127.5 - 1, torchcfm's range), centre-cropped
to a square and resized (bilinear, antialiased) to ``image_size`` S. :func:`image_loader` batches
them with worker processes. Kinds and the SPEC names the ``gft`` command maps to them:

==================  =====================  ==================================================
SPEC                kind                   layout
==================  =====================  ==================================================
``folder:PATH``     folder                 PNG/JPEG files anywhere under PATH (recursive)
``npz:PATH``        npz                    PATH.npy or PATH.npz: (N, H, W, C) uint8 or
                                           (N, C, H, W) float in [-1, 1], C in {1, 3}
``cifar10:ROOT``    cifar10                ROOT/cifar-10-batches-py/data_batch_1..5, test_batch
``wilds-camelyon17:ROOT`` (also ``wilds-rxrx1``, ``wilds-fmow``): the WILDS layout, see
                    :mod:`gftlib.data.wilds_sources`
==================  =====================  ==================================================

Splits: folder and npz "train" / "heldout" / "all", by a seeded hash of the relative path (array:
of the row index): an item is held out when sha256(f"{seed}:{key}") / 2^256 < heldout_fraction, so
the split is stable when files are added or removed. cifar10 "train" / "test". WILDS: the official
splits (and ``where=`` domain filters). Image files are decoded one at a time in ``__getitem__``;
only file names and labels are held in memory (arrays: .npy is memory-mapped; .npz and CIFAR-10
batches are loaded, as their formats require).
"""

from __future__ import annotations

import hashlib
import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from gftlib.validation import check_bool, check_choice, check_finite_number, check_positive_int
from gftlib.data.wilds_sources import read_wilds

__all__ = ["IMAGE_SOURCE_KINDS", "IMAGE_EXTENSIONS", "ImageSource", "open_image_source", "open_image_spec",
           "image_loader", "to_model_range", "CIFAR_HELP"]

IMAGE_SOURCE_KINDS: tuple[str, ...] = ("folder", "npz", "cifar10", "wilds-camelyon17", "wilds-rxrx1",
                                       "wilds-fmow")
IMAGE_EXTENSIONS: tuple[str, ...] = (".png", ".jpg", ".jpeg")
_HASH_SPLITS = ("train", "heldout", "all")
CIFAR_HELP = ("CIFAR-10 is not downloaded by gftlib. Get the python version from "
              "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz and extract it into root, so that "
              "root/cifar-10-batches-py/data_batch_1 ... data_batch_5 and test_batch exist.")


def to_model_range(image: np.ndarray | Tensor, image_size: int) -> Tensor:
    """(H, W, C) uint8 or (C, H, W) float in [-1, 1] -> (3, S, S) float32 in [-1, 1].

    Grey (C = 1) is replicated to RGB, alpha dropped; centre crop to the largest square (offsets
    floor((H - s) / 2), floor((W - s) / 2)), then bilinear antialiased resize to S (none if s == S).
    """
    x = torch.as_tensor(np.array(image))  # a copy: PIL arrays and memory maps are read-only
    if x.dtype == torch.uint8:
        if x.ndim == 2:
            x = x[:, :, None]
        x = x.permute(2, 0, 1).float() / 127.5 - 1.0
    else:
        x = x.float()
        if x.ndim == 2:
            x = x[None]
    if x.ndim != 3 or x.shape[0] not in (1, 3, 4):
        raise ValueError(f"image must be (H, W, C) uint8 or (C, H, W) float with C in 1, 3, 4; got shape "
                         f"{tuple(image.shape)} {image.dtype}")
    x = x[:3] if x.shape[0] >= 3 else x.expand(3, *x.shape[1:])
    h, w = x.shape[-2:]
    s = min(h, w)
    top, left = (h - s) // 2, (w - s) // 2
    x = x[:, top:top + s, left:left + s]
    if s != image_size:
        x = F.interpolate(x[None], size=(image_size, image_size), mode="bilinear", align_corners=False,
                          antialias=True)[0]
    return x.clamp(-1.0, 1.0).contiguous()


def _read_file(path: Path) -> np.ndarray:
    from PIL import Image

    if not path.is_file():
        raise FileNotFoundError(f"image file not found: {path}")
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def _heldout(key: str, seed: int, fraction: float) -> bool:
    digest = hashlib.sha256(f"{seed}:{key}".encode()).digest()
    return int.from_bytes(digest, "big") / 2.0 ** 256 < fraction


def _hash_select(keys: list[str], split: str, seed: int, fraction: float) -> list[int]:
    if split == "all":
        return list(range(len(keys)))
    want = split == "heldout"
    return [i for i, k in enumerate(keys) if _heldout(k, seed, fraction) == want]


class ImageSource(Dataset):
    """A map-style data set of images ``ds[i] -> (3, S, S)`` float32 in [-1, 1].

    ``hflip``: flip left-right with probability 1/2 per access (training augmentation, as torchcfm's
    CIFAR-10 recipe), drawn from torch's RNG, which a DataLoader seeds in each worker from its
    generator. Attributes: ``kind``, ``split``, ``image_size``, ``directory`` (resolved data folder),
    ``labels`` ((n,) int64 tensor or None), ``metadata`` (WILDS: a pandas DataFrame of the selected
    metadata rows as strings; else None), ``keys`` (relative file paths or row indices, in order).
    """

    def __init__(self, kind: str, split: str, image_size: int, directory: Path, keys: list[str], *,
                 files: bool = False, array: Any = None, rows: list[int] | None = None,
                 labels: Any = None, metadata: Any = None, hflip: bool = False) -> None:
        self.kind, self.split, self.image_size, self.directory = kind, split, image_size, directory
        self.hflip = hflip
        # keys as one bytes array, not a list of str/Path: compact for 455k files, and DataLoader
        # workers (fork) do not copy pages by touching Python refcounts
        self._keys = np.array([k.encode() for k in keys], dtype=bytes)
        self._files, self._array = files, array
        self._rows = None if rows is None else np.asarray(rows, dtype=np.int64)
        self.labels = None if labels is None else torch.as_tensor(np.asarray(labels), dtype=torch.long)
        self.metadata = metadata
        if len(keys) == 0:
            raise ValueError(f"{kind} data at {directory}: split {split!r} selects no images")
        if files:  # fail at once on a wrong layout: the first files must exist
            for i in range(min(8, len(keys))):
                f = self.path(i)
                if not f.is_file():
                    raise FileNotFoundError(f"image file not found: {f} (expected by the {kind} layout "
                                            f"under {directory})")

    @property
    def keys(self) -> list[str]:
        """Relative file paths (folder, WILDS) or row indices (arrays) of the items, in order."""
        return [k.decode() for k in self._keys]

    def path(self, i: int) -> Path:
        """The file of item ``i`` (folder and WILDS sources)."""
        return self.directory / self._keys[i].decode()

    def __len__(self) -> int:
        return len(self._keys)

    def __getitem__(self, i: int) -> Tensor:
        if self._files:
            x = to_model_range(_read_file(self.path(i)), self.image_size)
        else:
            x = to_model_range(np.asarray(self._array[self._rows[i]]), self.image_size)
        if self.hflip and bool(torch.rand(()) < 0.5):  # torch's RNG: seeded per DataLoader worker
            x = x.flip(-1)
        return x

    def __repr__(self) -> str:
        return (f"ImageSource(kind={self.kind!r}, split={self.split!r}, n={len(self)}, "
                f"image_size={self.image_size}, directory={str(self.directory)!r})")


def _open_folder(root: Path, split: str, size: int, seed: int, fraction: float) -> ImageSource:
    if not root.is_dir():
        raise FileNotFoundError(f"image folder not found: {root} (expected a folder of {IMAGE_EXTENSIONS} "
                                f"files, searched recursively)")
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
    if not files:
        raise FileNotFoundError(f"no image files under {root} (expected files ending in "
                                f"{', '.join(IMAGE_EXTENSIONS)}, case-insensitive, in any subfolder)")
    rel = [p.relative_to(root).as_posix() for p in files]
    keep = _hash_select(rel, split, seed, fraction)
    return ImageSource("folder", split, size, root, [rel[i] for i in keep], files=True)


def _load_array(path: Path, key: str | None) -> np.ndarray:
    if not path.is_file():
        raise FileNotFoundError(f"array file not found: {path} (expected a .npy or .npz file)")
    if path.suffix == ".npy":
        return np.load(path, mmap_mode="r", allow_pickle=False)
    if path.suffix != ".npz":
        raise ValueError(f"array file must end in .npy or .npz, got {path}")
    with np.load(path, allow_pickle=False) as z:
        names = list(z.files)
        if key is None:
            key = next((k for k in ("images", "x", "samples", "arr_0") if k in names),
                       names[0] if len(names) == 1 else None)
        if key not in names:
            raise ValueError(f"{path}: choose the image array with key=..., one of {names} (got {key!r})")
        return z[key]


def _check_array(arr: np.ndarray, path: Path) -> None:
    ok_u8 = arr.dtype == np.uint8 and arr.ndim == 4 and arr.shape[3] in (1, 3)
    ok_float = np.issubdtype(arr.dtype, np.floating) and arr.ndim == 4 and arr.shape[1] in (1, 3)
    if not (ok_u8 or ok_float):
        raise ValueError(f"{path}: expected images (N, H, W, C) uint8 or (N, C, H, W) float with C in 1, 3; "
                         f"got shape {arr.shape} dtype {arr.dtype}")
    if ok_float:
        head = np.asarray(arr[: min(len(arr), 256)])
        lo, hi = float(head.min()), float(head.max())
        if lo < -1.0 - 1e-6 or hi > 1.0 + 1e-6 or not np.isfinite([lo, hi]).all():
            raise ValueError(f"{path}: float images must lie in [-1, 1] (gftlib's range), found [{lo}, {hi}] "
                             f"in the first {len(head)} images")


def _open_npz(path: Path, split: str, size: int, seed: int, fraction: float, key: str | None) -> ImageSource:
    arr = _load_array(path, key)
    _check_array(arr, path)
    keys = [str(i) for i in range(arr.shape[0])]
    keep = _hash_select(keys, split, seed, fraction)
    return ImageSource("npz", split, size, path, [keys[i] for i in keep], array=arr, rows=keep)


def _open_cifar10(root: Path, split: str, size: int) -> ImageSource:
    split = check_choice("split", split, ("train", "test"))
    if not root.is_dir():
        raise FileNotFoundError(f"CIFAR-10 root not found: {root}. {CIFAR_HELP}")
    directory = root / "cifar-10-batches-py"
    if not directory.is_dir():
        raise FileNotFoundError(f"CIFAR-10 directory not found: {directory}. {CIFAR_HELP}")
    names = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
    data, labels = [], []
    for name in names:
        f = directory / name
        if not f.is_file():
            raise FileNotFoundError(f"CIFAR-10 file not found: {f}. {CIFAR_HELP}")
        with open(f, "rb") as fh:
            batch = pickle.load(fh, encoding="bytes")
        arr = np.asarray(batch[b"data"], dtype=np.uint8)
        if arr.ndim != 2 or arr.shape[1] != 3 * 32 * 32:
            raise ValueError(f"{f}: expected data of shape (N, 3072), got {arr.shape}")
        data.append(arr)
        labels.append(np.asarray(batch[b"labels"], dtype=np.int64))
    # rows are 1024 red, 1024 green, 1024 blue values, each 32 x 32 row-major -> (N, 32, 32, 3)
    arr = np.concatenate(data).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    n = arr.shape[0]
    return ImageSource("cifar10", split, size, directory, [str(i) for i in range(n)], array=arr,
                       rows=list(range(n)), labels=np.concatenate(labels))


def open_image_source(kind: str, root: str | Path, *, split: str = "train", image_size: int = 32,
                      seed: int = 0, heldout_fraction: float = 0.1, where: Mapping[str, Any] | None = None,
                      key: str | None = None, hflip: bool = False) -> ImageSource:
    """Open an image data set on disk as an :class:`ImageSource` (see the module docstring).

    kind: one of IMAGE_SOURCE_KINDS (or "wilds-<name>" for another WILDS set with a filename column).
    split: folder / npz "train" | "heldout" | "all" (seeded hash, ``heldout_fraction`` held out);
    cifar10 "train" | "test"; WILDS the official splits or "all" (:func:`gftlib.data.wilds_sources.read_wilds`).
    where: WILDS column filters (domain selection, e.g. ``{"center": [0, 3, 4]}``). key: the array
    inside an .npz. image_size: output side S (>= 2), e.g. 32, 64, 96. hflip: random left-right flips.
    """
    if not isinstance(kind, str) or not (kind in IMAGE_SOURCE_KINDS or (kind.startswith("wilds-")
                                                                       and len(kind) > 6)):
        raise ValueError(f"kind must be one of {list(IMAGE_SOURCE_KINDS)} (or 'wilds-<dataset>'), "
                         f"got {kind!r}")
    if not isinstance(root, (str, Path)):
        raise TypeError(f"root must be a path, got {type(root).__name__}")
    if not isinstance(split, str):
        raise TypeError(f"split must be a string, got {split!r}")
    size = check_positive_int("image_size", image_size, minimum=2)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an integer, got {seed!r}")
    fraction = check_finite_number("heldout_fraction", heldout_fraction, minimum=0.0, maximum=1.0)
    hflip = check_bool("hflip", hflip)
    root = Path(root).expanduser()
    if where and not kind.startswith("wilds-"):
        raise ValueError(f"where is only supported for WILDS data sets, got where={where!r} "
                         f"for kind {kind!r}")
    if kind in ("folder", "npz"):
        split = check_choice("split", split, _HASH_SPLITS)
        if kind == "folder":
            source = _open_folder(root, split, size, seed, fraction)
        else:
            source = _open_npz(root, split, size, seed, fraction, key)
    elif kind == "cifar10":
        source = _open_cifar10(root, split, size)
    else:
        table = read_wilds(kind[len("wilds-"):], root, split=split, where=where)
        source = ImageSource(kind, split, size, table.directory, list(table.files), files=True,
                             labels=table.labels, metadata=table.rows)
    source.hflip = hflip
    return source


def open_image_spec(spec: str, **kwargs: Any) -> ImageSource:
    """``open_image_source`` from a ``KIND:PATH`` string, e.g. ``"wilds-camelyon17:/data/wilds"``."""
    if not isinstance(spec, str) or ":" not in spec:
        raise ValueError(f"data spec must be KIND:PATH with KIND one of {list(IMAGE_SOURCE_KINDS)}, "
                         f"got {spec!r}")
    kind, path = spec.split(":", 1)
    return open_image_source(kind, path, **kwargs)


def image_loader(source: Dataset, batch_size: int, *, shuffle: bool = True, num_workers: int = 2,
                 seed: int = 0, drop_last: bool = False, rank: int = 0, world_size: int = 1,
                 pin_memory: bool = False) -> DataLoader:
    """Batches (B, 3, S, S) of ``source`` with ``num_workers`` decoding processes.

    Shuffling draws from a CPU generator seeded with ``seed`` (same order on every run). With
    ``world_size > 1`` a DistributedSampler gives rank ``rank`` its 1/world_size share (call
    ``loader.sampler.set_epoch(e)`` each epoch).
    """
    batch_size = check_positive_int("batch_size", batch_size)
    num_workers = check_positive_int("num_workers", num_workers, minimum=0)
    world_size = check_positive_int("world_size", world_size)
    if isinstance(rank, bool) or not isinstance(rank, int) or not 0 <= rank < world_size:
        raise ValueError(f"rank must be an integer in [0, {world_size}), got {rank!r}")
    kwargs: dict[str, Any] = dict(batch_size=batch_size, num_workers=num_workers, drop_last=drop_last,
                                  pin_memory=pin_memory, persistent_workers=num_workers > 0)
    if world_size > 1:
        from torch.utils.data.distributed import DistributedSampler

        sampler = DistributedSampler(source, num_replicas=world_size, rank=rank, shuffle=shuffle, seed=seed)
        return DataLoader(source, sampler=sampler, **kwargs)
    g = torch.Generator().manual_seed(seed)
    return DataLoader(source, shuffle=shuffle, generator=g if shuffle else None, **kwargs)
