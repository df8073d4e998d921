"""Pieces shared by the ``gft`` subcommands: argument types, common options, resumable sampling."""

from __future__ import annotations

import argparse
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from gftlib.cli.specs import CLIError
from gftlib.io import atomic_torch_save, atomic_write_json

__all__ = ["positive_int", "nonneg_int", "positive_float", "nonneg_float", "add_common", "Samples",
           "generate", "file_digest", "SOLVERS", "check_out_path"]

SOLVERS: tuple[str, ...] = ("euler", "midpoint", "rk4", "dopri5")


def _number(kind: type, minimum: float, strict: bool, what: str) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"invalid value {text!r}; allowed: {what}") from None
        if value != value or value in (float("inf"),
                                       float("-inf")) or value < minimum or (strict and value == minimum):
            raise argparse.ArgumentTypeError(f"invalid value {text!r}; allowed: {what}")
        return value

    parse.__name__ = what
    return parse


positive_int = _number(int, 1, False, "an integer >= 1")
nonneg_int = _number(int, 0, False, "an integer >= 0")
positive_float = _number(float, 0.0, True, "a finite number > 0")
nonneg_float = _number(float, 0.0, False, "a finite number >= 0")


def add_common(p: argparse.ArgumentParser) -> None:
    """Options every subcommand has."""
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default auto)")
    p.add_argument("--seed", type=nonneg_int, default=0, help="initial weights / sampling noise (default 0)")
    p.add_argument("--checkpoint-dir", default=None,
                   help="resume from here: re-running the same command continues a killed run")
    p.add_argument("--no-progress", action="store_true", help="no tqdm progress bar")


def check_out_path(option: str, path: str | None, suffixes: tuple[str, ...]) -> None:
    """``path`` ends with one of ``suffixes`` and its parent directory exists."""
    if path is None:
        return
    p = Path(path)
    if p.suffix.lower() not in suffixes:
        raise CLIError(option, path, "a file name ending in " + " or ".join(suffixes))
    if not p.expanduser().resolve().parent.is_dir():
        raise CLIError(option, path, f"a path in an existing directory (no directory {p.parent})")


def file_digest(path: str) -> str:
    """First 16 hex digits of the file's SHA-256 (for resume fingerprints)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


@dataclass(frozen=True)
class Samples:
    """Generated samples ``x`` (n, *shape) (raw solver output, not clamped), per-sample
    ``path_length`` and ``straightness`` (n,), and the solver's NFE per sample."""

    x: Tensor
    path_length: Tensor
    straightness: Tensor
    nfe: int


def _chunk_noise(seed: int, index: int, n: int, shape: tuple[int, ...]) -> Tensor:
    """Noise of chunk ``index``: its own seeded CPU generator, so a resumed run draws the same."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + index)
    return torch.randn((n, *shape), generator=g)


def _chunk_dir(checkpoint_dir: str | None, fingerprint: dict[str, Any]) -> Path | None:
    if checkpoint_dir is None:
        return None
    d = Path(checkpoint_dir) / "samples"
    d.mkdir(parents=True, exist_ok=True)
    meta = d / "fingerprint.json"
    if meta.exists():
        saved = json.loads(meta.read_text())
        if saved != fingerprint:
            diff = sorted(k for k in set(saved) | set(fingerprint) if saved.get(k) != fingerprint.get(k))
            raise CLIError("--checkpoint-dir", checkpoint_dir,
                           f"an empty directory or one of the same command (it holds samples with other {diff})")
    else:
        atomic_write_json(meta, fingerprint)
    return d


def generate(model: nn.Module, *, n: int, shape: tuple[int, ...], nfe: int, solver: str, seed: int,
             batch_size: int, device: torch.device, checkpoint_dir: str | None,
             fingerprint: dict[str, Any], progress: bool) -> Samples:
    """Sample ``n`` points from noise with the ODE solver (t = 0 noise -> t = 1 data), in chunks of
    ``batch_size``; each finished chunk is saved under ``checkpoint_dir/samples`` and reused on resume."""
    from tqdm.auto import tqdm

    from gftlib.solvers.ode import sample_ode

    model = model.to(device).eval()
    directory = _chunk_dir(checkpoint_dir, fingerprint)
    parts: list[dict[str, Any]] = []
    starts = list(range(0, n, batch_size))
    for i, start in enumerate(tqdm(starts, desc="sampling", unit="batch", disable=not progress)):
        path = None if directory is None else directory / f"chunk_{i:06d}.pt"
        if path is not None and path.exists():
            parts.append(torch.load(path, map_location="cpu", weights_only=True))
            continue
        m = min(batch_size, n - start)
        x0 = _chunk_noise(seed, i, m, shape).to(device)
        res = sample_ode(model, x0, method=solver, steps=nfe)
        part = {"x": res.x.float().cpu(), "path_length": res.path_length.float().cpu(),
                "straightness": res.straightness.float().cpu(), "nfe": int(res.nfe)}
        if path is not None:
            atomic_torch_save(part, path)
        parts.append(part)
    return Samples(x=torch.cat([p["x"] for p in parts]),
                   path_length=torch.cat([p["path_length"] for p in parts]),
                   straightness=torch.cat([p["straightness"] for p in parts]),
                   nfe=max(p["nfe"] for p in parts))
