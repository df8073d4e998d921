"""``gft sample``: draw samples from a trained network with an ODE solver (t = 0 noise -> t = 1 data).

``--out S.npz`` holds ``x`` (n, *shape) float32 (raw solver output), for images also ``images``
(n, H, W, 3) uint8 = round((clamp(x, -1, 1) + 1) * 127.5) (the FID convention), ``path_length`` and
``straightness`` (n,), ``nfe`` (per sample), ``solver`` and ``seed``. The noise of chunk i comes
from its own generator (seed, i), so a resumed run (``--checkpoint-dir``: finished chunks are kept)
gives the same file as an uninterrupted one. Under torchrun only rank 0 samples (the others wait).
"""

from __future__ import annotations

import argparse
import io
import json
import math
from typing import Any

import numpy as np
import torch
from torch import Tensor

from gftlib.training import distributed as D
from gftlib.cli import common, weights
from gftlib.cli.specs import ModelSpec, parse_model_spec

__all__ = ["add_arguments", "load_for_sampling", "to_uint8", "write_grid", "run"]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--weights", required=True,
                   help="weights file, torchcfm:PATH, or mlp | unet:NAME (random)")
    p.add_argument("--n", "--num-samples", dest="n", type=common.positive_int, required=True,
                   help="number of samples (under torchrun write --num-samples: torchrun takes --n for itself)")
    p.add_argument("--nfe", type=common.positive_int, required=True,
                   help="solver steps (euler: NFE = steps; midpoint 2x, rk4 4x; dopri5: adaptive, ignored)")
    p.add_argument("--solver", choices=common.SOLVERS, default="euler")
    p.add_argument("--out", required=True, help="samples file (.npz)")
    p.add_argument("--grid", default=None, help="also write a PNG grid (images) or scatter plot (2-D)")
    p.add_argument("--batch-size", type=common.positive_int, default=256, help="samples per solver call")
    p.add_argument("--image-size", type=common.positive_int, default=None, help="image side (fresh/torchcfm)")
    p.add_argument("--raw", action="store_true", help="use the raw (non-EMA) weights of a weights file")
    common.add_common(p)


def load_for_sampling(option: str, spec: ModelSpec, *, image_size: int | None, seed: int,
                      ema: bool = True) -> tuple[torch.nn.Module, tuple[int, ...], dict[str, Any]]:
    """(network, sample shape, model_spec) of a weights SPEC (fresh specs get seeded random weights)."""
    if spec.is_fresh:
        mspec = weights.fresh_spec(spec, data_shape=None, image_size=image_size)
        return weights.build(mspec, seed=seed), weights.sample_shape(mspec), mspec
    loaded = weights.load(option, spec, image_size=image_size, ema=ema)
    return loaded.model, weights.sample_shape(loaded.model_spec), loaded.model_spec


def to_uint8(x: Tensor) -> np.ndarray:
    """(n, 3, H, W) in [-1, 1] -> (n, H, W, 3) uint8, round((clamp(x) + 1) * 127.5)."""
    u8 = ((x.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return u8.permute(0, 2, 3, 1).numpy()


def write_grid(path: str, x: Tensor) -> None:
    """Images: a PNG tile of at most 64 samples; 2-D points: a scatter plot (atomic)."""
    from gftlib.io import atomic_savefig, atomic_write_bytes

    if x.ndim == 4:
        from PIL import Image

        from gftlib.experiments.tasks.images_eval import image_grid

        tile = (image_grid(x[:64]) * 255).round().astype(np.uint8)
        buf = io.BytesIO()
        Image.fromarray(tile).save(buf, format="PNG")
        atomic_write_bytes(path, buf.getvalue())
        return
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4, 4))
    pts = x.reshape(x.shape[0], -1).numpy()
    ax.scatter(pts[:, 0], pts[:, 1 % pts.shape[1]], s=2, alpha=0.5)
    ax.set_xlabel("x1")
    ax.set_ylabel("x2")
    ax.set_title(f"{x.shape[0]} samples")
    atomic_savefig(fig, path, dpi=120)
    plt.close(fig)


def _write_npz(path: str, arrays: dict[str, Any]) -> None:
    from gftlib.io import atomic_write_bytes

    buf = io.BytesIO()
    np.savez(buf, **arrays)
    atomic_write_bytes(path, buf.getvalue())


def run(args: argparse.Namespace) -> int:
    spec = parse_model_spec("--weights", args.weights)
    common.check_out_path("--out", args.out, (".npz",))
    common.check_out_path("--grid", args.grid, (".png",))
    ctx = D.init_from_env(args.device)
    try:
        if ctx.is_main:
            model, shape, _ = load_for_sampling("--weights", spec, image_size=args.image_size, seed=args.seed,
                                                ema=not args.raw)
            fp = {"command": "sample",
                  "weights": args.weights if spec.is_fresh else common.file_digest(spec.value),
                  "n": args.n, "nfe": args.nfe, "solver": args.solver, "seed": args.seed, "raw": args.raw,
                  "batch_size": args.batch_size, "shape": list(shape)}
            s = common.generate(model, n=args.n, shape=shape, nfe=args.nfe, solver=args.solver,
                                seed=args.seed,
                                batch_size=args.batch_size, device=ctx.device,
                                checkpoint_dir=args.checkpoint_dir,
                                fingerprint=fp, progress=not args.no_progress)
            arrays = {"x": s.x.numpy(), "path_length": s.path_length.numpy(),
                      "straightness": s.straightness.numpy(), "nfe": np.int64(s.nfe),
                      "solver": np.str_(args.solver), "seed": np.int64(args.seed)}
            if s.x.ndim == 4:
                arrays["images"] = to_uint8(s.x)
            _write_npz(args.out, arrays)
            if args.grid is not None:
                write_grid(args.grid, s.x)
            print(json.dumps({"n": args.n, "nfe": s.nfe, "mean_path_length": float(s.path_length.mean()),
                              "finite": bool(math.isfinite(float(s.x.sum()))), "out": args.out}), flush=True)
        D.barrier()
    finally:
        D.cleanup()
    return 0

