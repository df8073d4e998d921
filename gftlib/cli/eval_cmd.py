"""``gft eval``: distances of a network's samples to held-out data, path length and NFE, as JSON.

Metrics (``--metrics``, comma-separated):

- ``fd``: Fréchet distance of Gaussians fitted to features: for images the fixed random conv net
  :class:`gftlib.eval.features.RandomConvFeatures` (seed 0; **not FID**, comparable only with itself),
  for 2-D points the points themselves;
- ``fid``: Fréchet distance of Inception features (images only; ``--inception`` = the local NVlabs
  TorchScript file, never downloaded); images are quantised to uint8 first;
- ``w2``: 2-D: exact W2 between the two point sets (POT); images: sliced W2 in pixel space
  (``--n-projections`` fixed random directions) - reported as ``sliced_w2``;
- ``path_length``: mean length of the sampling paths (and ``straightness``);
- ``nfe``: network evaluations per sample of the solver.

Generated images are clamped to [-1, 1] (what an image file holds) before every distance. The
reference is ``--n-ref`` samples of ``--data`` on its held-out split (``--split auto``, see
gftlib.cli.datasets). ``--samples S.npz`` evaluates the samples of ``gft sample`` instead of drawing
new ones. Generation resumes from ``--checkpoint-dir``. Under torchrun only rank 0 evaluates.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gftlib.training import distributed as D
from gftlib.cli import common
from gftlib.cli.datasets import load_data, parse_where, resolve_split
from gftlib.cli.sample_cmd import load_for_sampling
from gftlib.cli.specs import CLIError, parse_choice_list, parse_data_spec, parse_model_spec

__all__ = ["METRICS", "add_arguments", "run", "compute_metrics"]

METRICS: tuple[str, ...] = ("fd", "fid", "path_length", "nfe", "w2")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--weights", required=True,
                   help="weights file, torchcfm:PATH, or mlp | unet:NAME (random)")
    p.add_argument("--data", required=True, help="reference data SPEC (see `gft --help`)")
    p.add_argument("--metrics", default="fd,path_length,nfe,w2",
                   help="comma-separated subset of " + ",".join(METRICS))
    p.add_argument("--out", required=True, help="metrics file (.json)")
    p.add_argument("--n", "--num-samples", dest="n", type=common.positive_int, default=1000,
                   help="generated samples (default 1000; under torchrun write --num-samples)")
    p.add_argument("--n-ref", type=common.positive_int, default=1000, help="reference samples (default 1000)")
    p.add_argument("--nfe", type=common.positive_int, default=32, help="solver steps (default 32)")
    p.add_argument("--solver", choices=common.SOLVERS, default="euler")
    p.add_argument("--samples", default=None, help="evaluate this .npz of `gft sample` instead of sampling")
    p.add_argument("--inception", default=None, help="local Inception TorchScript file (needed for fid)")
    p.add_argument("--split", default="auto", help="reference split (default auto: the held-out split)")
    p.add_argument("--where", action="append", metavar="COL=VALUE", help="WILDS metadata filter (repeatable)")
    p.add_argument("--data-seed", type=common.nonneg_int, default=0)
    p.add_argument("--workers", type=common.nonneg_int, default=2,
                   help="image decoding processes (disk data)")
    p.add_argument("--image-size", type=common.positive_int, default=None)
    p.add_argument("--batch-size", type=common.positive_int, default=256, help="samples per solver call")
    p.add_argument("--feature-width", type=common.positive_int, default=64,
                   help="fd: RandomConvFeatures width")
    p.add_argument("--feature-depth", type=common.positive_int, default=3,
                   help="fd: RandomConvFeatures depth")
    p.add_argument("--n-projections", type=common.positive_int, default=256, help="w2 on images: directions")
    common.add_common(p)


def _check(args: argparse.Namespace) -> dict[str, Any]:
    metrics = parse_choice_list("--metrics", args.metrics, METRICS)
    data = parse_data_spec("--data", args.data)
    spec = parse_model_spec("--weights", args.weights)
    common.check_out_path("--out", args.out, (".json",))
    if "fid" in metrics:
        if data.is_2d:
            raise CLIError("--metrics", args.metrics, "metrics without fid for 2-D data: " + ",".join(
                m for m in METRICS if m != "fid"))
        if args.inception is None or not Path(args.inception).expanduser().is_file():
            raise CLIError("--inception", args.inception,
                           "an existing Inception TorchScript file when --metrics "
                           "has fid (gftlib never downloads it; see gftlib.eval.features.INCEPTION_URL)")
    if args.samples is not None:
        if not Path(args.samples).is_file():
            raise CLIError("--samples", args.samples, "an existing .npz written by `gft sample`")
    if args.n < 2 or args.n_ref < 2:
        raise CLIError("--n" if args.n < 2 else "--n-ref", min(args.n, args.n_ref), "an integer >= 2")
    where = parse_where(args.where)
    return {"metrics": metrics, "data": data, "spec": spec, "where": where}


def _load_samples(path: str) -> dict[str, Any]:
    with np.load(path) as z:
        missing = [k for k in ("x", "path_length", "nfe") if k not in z.files]
        if missing:
            raise CLIError("--samples", path, f"an .npz of `gft sample` (missing {missing})")
        return {"x": torch.from_numpy(z["x"]).float(), "path_length": torch.from_numpy(z["path_length"]),
                "straightness": torch.from_numpy(z["straightness"]) if "straightness" in z.files else None,
                "nfe": int(z["nfe"])}


def _fd(x: torch.Tensor, ref: torch.Tensor, args: argparse.Namespace, device: torch.device) -> float:
    from gftlib.eval.features import RandomConvFeatures, frechet_feature_distance
    from gftlib.eval.metrics import frechet_distance

    if x.ndim == 2:
        return frechet_distance(x.double(), ref.double())
    net = RandomConvFeatures(seed=0, width=args.feature_width, depth=args.feature_depth).to(device)
    return frechet_feature_distance(x, ref, net, method="eigh")


def compute_metrics(gen: dict[str, Any], ref: torch.Tensor, metrics: tuple[str, ...],
                    args: argparse.Namespace,
                    device: torch.device) -> dict[str, float]:
    """The requested metrics of generated ``gen["x"]`` against ``ref`` (same sample shape)."""
    from gftlib.eval.metrics import sliced_wasserstein, wasserstein2

    x = gen["x"]
    if x.shape[1:] != ref.shape[1:]:
        raise CLIError("--data", args.data, f"data of the samples' shape {tuple(x.shape[1:])}, got "
                       f"{tuple(ref.shape[1:])} (set --image-size)")
    if x.ndim == 4:
        x = x.clamp(-1, 1)
    out: dict[str, float] = {}
    if "fd" in metrics:
        out["fd"] = _fd(x, ref, args, device)
    if "fid" in metrics:
        from gftlib.eval.features import frechet_feature_distance, load_inception_features

        out["fid"] = frechet_feature_distance(x, ref, load_inception_features(args.inception, device=device),
                                              method="eigh")
    if "w2" in metrics:
        if x.ndim == 2:
            out["w2"] = wasserstein2(x.double(), ref.double())
        else:
            out["sliced_w2"] = sliced_wasserstein(x, ref, n_projections=args.n_projections,
                                                  generator=torch.Generator().manual_seed(12345))
    if "path_length" in metrics:
        out["path_length"] = float(gen["path_length"].double().mean())
        if gen.get("straightness") is not None:
            out["straightness"] = float(gen["straightness"].double().mean())
    if "nfe" in metrics:
        out["nfe"] = int(gen["nfe"])
    return out


def _generated(args: argparse.Namespace, spec, image_size: int | None, device: torch.device) -> dict[str,
                                                                                                     Any]:
    if args.samples is not None:
        return _load_samples(args.samples)
    model, shape, _ = load_for_sampling("--weights", spec, image_size=image_size, seed=args.seed)
    if (len(shape) == 1) != args.data.startswith("2d:"):
        raise CLIError("--data", args.data, f"data of the network's sample shape {shape} (2d:NAME for a 2-D "
                       "network, an image SPEC for an image network)")
    fp = {"command": "eval", "weights": args.weights if spec.is_fresh else common.file_digest(spec.value),
          "n": args.n, "nfe": args.nfe, "solver": args.solver, "seed": args.seed,
          "batch_size": args.batch_size,
          "shape": list(shape)}
    s = common.generate(model, n=args.n, shape=shape, nfe=args.nfe, solver=args.solver, seed=args.seed,
                        batch_size=args.batch_size, device=device, checkpoint_dir=args.checkpoint_dir,
                        fingerprint=fp, progress=not args.no_progress)
    return {"x": s.x, "path_length": s.path_length, "straightness": s.straightness, "nfe": s.nfe}


def run(args: argparse.Namespace) -> int:
    from gftlib.io import atomic_write_json

    checked = _check(args)
    data, metrics = checked["data"], checked["metrics"]
    ctx = D.init_from_env(args.device)
    try:
        if ctx.is_main:
            gen = _generated(args, checked["spec"], args.image_size, ctx.device)
            size = gen["x"].shape[-1] if gen["x"].ndim == 4 else 2
            split = resolve_split(data, args.split, role="eval")
            ref = load_data(data, n=args.n_ref, image_size=size, split=split, seed=args.data_seed,
                            where=checked["where"], workers=args.workers)
            values = compute_metrics(gen, ref, metrics, args, ctx.device)
            report = {"weights": args.weights, "samples": args.samples, "data": str(data), "split": split,
                      "n": int(gen["x"].shape[0]), "n_ref": args.n_ref, "solver": args.solver,
                      "metrics": values}
            atomic_write_json(args.out, report)
            print(json.dumps(values), flush=True)
        D.barrier()
    finally:
        D.cleanup()
    return 0
