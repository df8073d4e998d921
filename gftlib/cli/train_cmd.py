"""``gft pretrain`` and ``gft finetune``: train a velocity network with gftlib.training.loop.train.

pretrain = the ``scratch`` method (CFM, independent coupling) on a fresh ``--model``; finetune = one
method of :mod:`gftlib.experiments.methods` started from ``--pretrained`` (``scratch`` there means a
fresh network of the pretrained architecture). Under ``torchrun`` the batch is the global batch
(DDP); rank 0 writes ``--out``. The same command with the same ``--checkpoint-dir`` resumes a killed
run exactly; a finished run is not repeated (its last checkpoint is loaded and ``--out`` rewritten).
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from gftlib.training import distributed as D
from gftlib.cli import common, weights
from gftlib.cli.datasets import load_data, parse_where, resolve_split
from gftlib.cli.specs import CLIError, DataSpec, ModelSpec, parse_data_spec, parse_model_spec

__all__ = ["add_arguments", "prepare", "run"]

_TORCHCFM_ONLY = "only for torchcfm networks (--pretrained torchcfm:PATH or a file fine-tuned from one)"

def _methods() -> tuple[str, ...]:
    from gftlib.experiments.methods import METHODS

    return METHODS


def add_arguments(p: argparse.ArgumentParser, *, finetune: bool) -> None:
    """The options of pretrain (``finetune=False``) or finetune."""
    from gftlib.paths.couplings import COUPLINGS
    from gftlib.losses import LOSS_REDUCTIONS
    from gftlib.models.torchcfm import TORCHCFM_RECIPE as R
    from gftlib.schedules import SCHEDULES
    from gftlib.training.config import AMP_MODES

    p.add_argument("--data", required=True, help="data SPEC (see `gft --help`)")
    if finetune:
        p.add_argument("--pretrained", required=True, help="weights file or torchcfm:PATH")
        p.add_argument("--method", required=True, choices=_methods())
    else:
        p.add_argument("--model", required=True,
                       help="mlp | unet:tiny|small|cifar10 | a weights file to continue")
    p.add_argument("--steps", type=common.positive_int, required=True)
    p.add_argument("--out", required=True, help="weights file to write (.pt)")
    p.add_argument("--image-size", type=common.positive_int, default=None,
                   help="image side S (default: the model's; fresh UNets and torchcfm networks take any)")
    p.add_argument("--n-data", type=common.positive_int, default=2048,
                   help="target samples held in memory (a seeded subset of the split; default 2048)")
    p.add_argument("--split", default="auto", help="data split (default auto: train)")
    p.add_argument("--where", action="append", metavar="COL=VALUE", help="WILDS metadata filter (repeatable)")
    p.add_argument("--data-seed", type=common.nonneg_int, default=0, help="data subset and order")
    p.add_argument("--workers", type=common.nonneg_int, default=2,
                   help="image decoding processes (disk data)")
    p.add_argument("--batch-size", type=common.positive_int, default=128, help="global batch (default 128)")
    p.add_argument("--lr", type=common.positive_float, default=R["lr"])
    p.add_argument("--ema-decay", type=common.nonneg_float, default=R["ema_decay"])
    p.add_argument("--grad-clip", type=float, default=R["grad_clip"], help="gradient-norm clip; <= 0 disables")
    p.add_argument("--warmup-steps", type=common.nonneg_int, default=0)
    p.add_argument("--loss-reduction", choices=("auto",) + LOSS_REDUCTIONS, default="auto",
                   help="sum: squared error summed over dimensions (gftlib); mean: over all elements "
                        "(torchcfm). auto: mean for torchcfm networks, else sum")
    p.add_argument("--hidden", type=common.positive_int, default=256, help="mlp width")
    p.add_argument("--depth", type=common.positive_int, default=3, help="mlp hidden layers")
    if finetune:
        p.add_argument("--beta0", type=common.nonneg_float, default=4.0, help="initial GFT temperature")
        p.add_argument("--schedule", choices=[k for k in SCHEDULES if k != "custom"], default="cosine")
        p.add_argument("--target-coupling", choices=COUPLINGS, default="ot")
        p.add_argument("--cache-size", type=common.positive_int, default=None,
                       help="pretrained pairs of gft-coupling / reflow (default --n-data)")
        p.add_argument("--n-trajectories", type=common.positive_int, default=None,
                       help="pretrained trajectories of gft-drift (default min(--n-data, 1024))")
        p.add_argument("--time-grid", type=common.positive_int, default=32,
                       help="gft-drift times per trajectory")
        p.add_argument("--solver-steps", type=common.positive_int, default=32,
                       help="Euler steps of the frozen pretrained sampler (caches)")
    p.add_argument("--checkpoint-every", type=common.positive_int, default=None)
    p.add_argument("--log-every", type=common.positive_int, default=50)
    p.add_argument("--amp", choices=AMP_MODES, default="none")
    p.add_argument("--compile", action="store_true")
    p.add_argument("--history", default=None, help="also write the training history as JSON here")
    p.add_argument("--torchcfm-out", default=None,
                   help="also write the EMA/raw weights in torchcfm's release format (torchcfm networks)")
    common.add_common(p)


def prepare(args: argparse.Namespace, *, finetune: bool) -> dict[str, Any]:
    """Validate everything that can be checked without loading data (raises CLIError)."""
    data = parse_data_spec("--data", args.data)
    common.check_out_path("--out", args.out, (".pt", ".pth"))
    common.check_out_path("--history", args.history, (".json",))
    common.check_out_path("--torchcfm-out", args.torchcfm_out, (".pt", ".pth"))
    if args.checkpoint_every is not None and args.checkpoint_dir is None:
        raise CLIError("--checkpoint-every", args.checkpoint_every, "only together with --checkpoint-dir")
    if args.ema_decay >= 1:
        raise CLIError("--ema-decay", args.ema_decay, "a number in [0, 1)")
    option = "--pretrained" if finetune else "--model"
    model = parse_model_spec(option, args.pretrained if finetune else args.model, fresh=not finetune)
    if data.is_2d and model.kind in ("unet", "torchcfm"):
        raise CLIError(option, str(model), "mlp (or an mlp weights file) for 2-D data " + str(data))
    if not data.is_2d and model.kind == "mlp":
        raise CLIError(option, "mlp",
                       "unet:tiny|small|cifar10, torchcfm:PATH or a UNet weights file for images")
    if args.torchcfm_out is not None and model.kind not in ("torchcfm", "weights"):
        raise CLIError("--torchcfm-out", args.torchcfm_out, _TORCHCFM_ONLY)
    where = parse_where(args.where)
    if where and not data.kind.startswith("wilds-"):
        raise CLIError("--where", args.where, "only with wilds-NAME:ROOT data")
    return {"data": data, "model": model, "where": where}


def _image_size(args: argparse.Namespace, loaded: weights.LoadedModel | None, model: ModelSpec) -> int:
    if args.image_size is not None:
        return args.image_size
    if loaded is not None and loaded.kind != "mlp":
        return weights.sample_shape(loaded.model_spec)[-1]
    from gftlib.models import unet_config

    return int(unet_config(model.value)["image_size"]) if model.kind == "unet" else 32


def _networks(args: argparse.Namespace, spec: ModelSpec, data: DataSpec, finetune: bool):
    """(initial network, pretrained network or None, model_spec, image size)."""
    if spec.is_fresh:
        size = _image_size(args, None, spec)
        shape = (2,) if data.is_2d else (3, size, size)
        mspec = weights.fresh_spec(spec, data_shape=shape, image_size=size, hidden=args.hidden,
                                   depth=args.depth)
        return weights.build(mspec, seed=args.seed), None, mspec, size
    loaded = weights.load("--pretrained" if finetune else "--model", spec, image_size=args.image_size)
    size = _image_size(args, loaded, spec)
    if not finetune:  # pretrain continues from the given weights
        return loaded.model, None, loaded.model_spec, size
    return weights.build(loaded.model_spec, seed=args.seed), loaded.model, loaded.model_spec, size


def _reduction(args: argparse.Namespace, model_spec: dict[str, Any]) -> str:
    if args.loss_reduction != "auto":
        return args.loss_reduction
    from gftlib.models.torchcfm import TORCHCFM_RECIPE

    return TORCHCFM_RECIPE["loss_reduction"] if model_spec["kind"] == "torchcfm" else "sum"


def _fingerprint(args: argparse.Namespace, finetune: bool, reduction: str, size: int) -> dict[str, Any]:
    keys = ["data", "n_data", "split", "where", "data_seed", "batch_size", "hidden", "depth"]
    if finetune:
        keys += ["method", "beta0", "schedule", "target_coupling", "cache_size", "n_trajectories",
                 "time_grid", "solver_steps"]
    fp = {k: getattr(args, k) for k in keys}
    source = args.pretrained if finetune else args.model
    path = source.split(":", 1)[1] if source.startswith("torchcfm:") else source
    fp.update(command="finetune" if finetune else "pretrain", loss_reduction=reduction, image_size=size,
              model=source if source == "mlp" or source.startswith("unet:") else common.file_digest(path))
    return fp


def _method(args, finetune, target, pretrained, reduction, device):
    from gftlib.experiments.methods import build_method
    from gftlib.losses import reduction_weight

    weight = reduction_weight(reduction, tuple(target.shape[1:]))
    if not finetune:
        return build_method("scratch", target_data=target, pretrained_model=None, batch_size=args.batch_size,
                            steps=args.steps, seed=args.data_seed, device=device, time_weight=weight)
    return build_method(args.method, target_data=target, pretrained_model=pretrained,
                        batch_size=args.batch_size,
                        steps=args.steps, beta0=args.beta0, schedule_kind=args.schedule,
                        target_coupling=args.target_coupling, cache_size=args.cache_size,
                        n_trajectories=args.n_trajectories, time_grid=args.time_grid,
                        solver_steps=args.solver_steps, seed=args.data_seed, device=device,
                        time_weight=weight)


def run(args: argparse.Namespace, *, finetune: bool) -> int:
    """Train and write ``--out`` (see the module docstring)."""
    from gftlib.training.config import TrainConfig
    from gftlib.training.loop import train

    checked = prepare(args, finetune=finetune)
    data, spec = checked["data"], checked["model"]
    ctx = D.init_from_env(args.device)
    try:
        model, pretrained, model_spec, size = _networks(args, spec, data, finetune)
        if data.is_2d != (model_spec["kind"] == "mlp"):
            option = "--pretrained" if finetune else "--model"
            raise CLIError(option, str(spec),
                           f"a {'2-D (mlp)' if data.is_2d else 'image'} network for --data "
                           f"{data} (this one is a {model_spec['kind']} for samples of shape "
                           f"{weights.sample_shape(model_spec)})")
        if args.torchcfm_out is not None and model_spec["kind"] != "torchcfm":
            raise CLIError("--torchcfm-out", args.torchcfm_out, _TORCHCFM_ONLY)
        target = load_data(data, n=args.n_data, image_size=size, split=resolve_split(data, args.split,
                                                                                     role="train"),
                           seed=args.data_seed, where=checked["where"], workers=args.workers)
        reduction = _reduction(args, model_spec)
        method = _method(args, finetune, target, pretrained, reduction, ctx.device)
        if method.init_from_pretrained:
            model.load_state_dict(pretrained.state_dict())
        config = TrainConfig(steps=args.steps, lr=args.lr, ema_decay=args.ema_decay,
                             grad_clip=args.grad_clip if args.grad_clip > 0 else None,
                             warmup_steps=args.warmup_steps, log_every=args.log_every,
                             checkpoint_every=args.checkpoint_every, checkpoint_dir=args.checkpoint_dir,
                             seed=args.seed, device=str(ctx.device), amp=args.amp, compile=args.compile,
                             progress=not args.no_progress and ctx.is_main)
        result = train(model, method.objective, config, schedule=method.schedule,
                       fingerprint=_fingerprint(args, finetune, reduction, size))
        if ctx.is_main:
            extra = {"args": vars(args), "history": result.history, "data_spec": str(data),
                     "loss_reduction": reduction}
            weights.save(args.out, model=result.model, ema_model=result.ema_model, model_spec=model_spec,
                         extra=extra)
            if args.torchcfm_out is not None:
                from gftlib.models import save_torchcfm

                save_torchcfm(result.model, args.torchcfm_out, ema_model=result.ema_model, step=args.steps)
            if args.history is not None:
                from gftlib.io import atomic_write_json

                atomic_write_json(args.history, result.history)
            last = result.history[-1] if result.history else {}
            print(json.dumps({"step": last.get("step"), "loss": last.get("total"),
                              "loss_reduction": reduction,
                              "resumed_from": result.resumed_from, "out": args.out}), flush=True)
        D.barrier()
    finally:
        D.cleanup()
    return 0
