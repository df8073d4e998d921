"""A small on-disk cache for expensive artefacts (pretrained weights of the quick profile).

The key is a hash of the parameters that made the artefact *and* of the source code of the
library modules that could change it, so editing the code or a parameter invalidates the entry.
Entries live under ``build/cache`` (gitignored) and are written atomically.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

import torch

from gftlib.experiments.report import repo_root, to_jsonable
from gftlib.io import atomic_torch_save

__all__ = ["ALL_MODULES", "cache_key", "cached_torch"]

#: ``modules`` value that keys an artefact on the source of the whole package (the safe choice for
#: results that pass through many modules: no edit anywhere can leave a stale entry).
ALL_MODULES: tuple[str, ...] = ("*",)

T = TypeVar("T")


def _code_digest(modules: Iterable[str]) -> str:
    h = hashlib.sha256()
    root = repo_root() / "gftlib"
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root).as_posix()
        if any(m == "*" or rel in (m, m + ".py") or rel.startswith(m.rstrip("/") + "/") for m in modules):
            h.update(rel.encode())
            h.update(path.read_bytes())
    return h.hexdigest()


def cache_key(params: dict[str, Any], modules: Iterable[str]) -> str:
    """Hash of ``params`` (JSON) and of the source of ``modules`` (paths relative to gftlib/)."""
    blob = json.dumps(to_jsonable(params), sort_keys=True).encode()
    return hashlib.sha256(blob + _code_digest(modules).encode()).hexdigest()[:16]


def cached_torch(name: str, params: dict[str, Any], build: Callable[[], T], *,
                 modules: Iterable[str] = ALL_MODULES,
                 cache_dir: str | os.PathLike[str] | None = None) -> T:
    """Return ``build()``'s result, loading it from the cache when the same key was built before."""
    folder = Path(cache_dir or os.environ.get("GFT_CACHE_DIR", repo_root() / "build" / "cache"))
    path = folder / f"{name}-{cache_key(params, modules)}.pt"
    if path.exists():
        return torch.load(path, map_location="cpu", weights_only=False)
    value = build()
    atomic_torch_save(value, path)
    return value
