"""Legacy command-line training: ``python -m gftlib.experiments.train_cli --task 2d --method scratch ...``.

Superseded by the ``gft`` command (:mod:`gftlib.cli`: pretrain / finetune / sample / eval on any
data and model SPEC, torchcfm checkpoints included), which also reads the weights files written
here. Kept unchanged for existing scripts and tests.

Also runs under ``torchrun --nproc_per_node=N -m gftlib.experiments.train_cli ...`` (DDP; the
batch size is the global batch). Re-running the same command with the same ``--checkpoint-dir``
resumes exactly where a killed run stopped; a finished run is not repeated (its final checkpoint
is loaded and ``--out`` rewritten). A different command on the same directory is refused.

Exit codes: 0 done; 75 (``EX_TEMPFAIL``, :data:`gftlib.training.preemption.EXIT_PREEMPTED`) preempted:
SIGTERM or SIGUSR1 (what SLURM and most schedulers send before a time limit) made the run write a
checkpoint after the update in progress and stop, without writing ``--out``; rerun the same command
to resume bit-exactly. Under torchrun every rank exits 75 (torchrun itself then reports the failed
ranks and their exit code 75 and exits 1). 1: refused because another live run holds
``--checkpoint-dir`` (message names the directory and the holder's pid), or any other error.
2: bad arguments, each rejected before any work starts with a message naming the flag, the value and
what is allowed (:func:`check_args`).

Tasks: ``2d``: ``--n-data`` points of ``gftlib.data.datasets.make_2d(--dataset)`` (default "moons"), an
``MLPVelocity(2, --hidden, --depth)``. ``images``: ``gftlib.data.datasets.image_patches(--dataset)``
(default "natural", train split) at the tiny UNet's 16 x 16 resolution, ``unet_config('tiny')``.
The data come from ``--data-seed``, the initial weights and the training randomness from ``--seed``.

``--out`` receives ``{"format": "gftlib-weights-v1", "model", "ema", "args", "history"}`` (written
atomically by rank 0). ``--pretrained`` takes such a file (its EMA weights; a plain state dict
also works) for the fine-tuning methods; the pretrained network has the same architecture.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from pathlib import Path
from typing import Any

import torch
from torch import nn

from gftlib.training import distributed as D
from gftlib.io import atomic_torch_save, atomic_write_json
from gftlib.locking import DirectoryBusy
from gftlib.training.preemption import EXIT_PREEMPTED, TrainingPreempted
from gftlib.schedules import SCHEDULES
from gftlib.training.config import AMP_MODES, TrainConfig
from gftlib.training import train

__all__ = ["build_parser", "check_args", "main", "load_weights", "TASKS"]

TASKS: tuple[str, ...] = ("2d", "images")
_DEFAULT_DATASET = {"2d": "moons", "images": "natural"}
WEIGHTS_FORMAT = "gftlib-weights-v1"


def _methods() -> tuple[str, ...]:
    from gftlib.experiments.methods import METHODS

    return METHODS


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m gftlib.experiments.train_cli", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", choices=TASKS, required=True)
    p.add_argument("--method", choices=_methods(), default="scratch")
    p.add_argument("--steps", type=int, required=True)
    p.add_argument("--batch-size", type=int, default=256, help="global batch (all ranks together)")
    p.add_argument("--seed", type=int, default=0, help="initial weights and training randomness")
    p.add_argument("--data-seed", type=int, default=0)
    p.add_argument("--dataset", default=None,
                   help="2d: a DISTRIBUTIONS_2D name; images: an IMAGE_SOURCES name")
    p.add_argument("--n-data", type=int, default=2048, help="number of target samples")
    p.add_argument("--hidden", type=int, default=128, help="2d: MLP width")
    p.add_argument("--depth", type=int, default=3, help="2d: MLP hidden layers")
    p.add_argument("--checkpoint-dir", default=None)
    p.add_argument("--checkpoint-every", type=int, default=None)
    p.add_argument("--out", default=None, help="final weights (.pt)")
    p.add_argument("--history", default=None, help="write the training history as JSON here")
    p.add_argument("--device", default="auto")
    p.add_argument("--pretrained", default=None, help="pretrained weights for the fine-tuning methods")
    p.add_argument("--beta0", type=float, default=4.0)
    p.add_argument("--schedule", choices=[k for k in SCHEDULES if k != "custom"], default="cosine")
    p.add_argument("--target-coupling", default="ot", help="target-term coupling of l2-reg / gft-*")
    p.add_argument("--lr", type=float, default=2e-4)
    p.add_argument("--ema-decay", type=float, default=0.999)
    p.add_argument("--grad-clip", type=float, default=1.0, help="<= 0 disables clipping")
    p.add_argument("--warmup-steps", type=int, default=0)
    p.add_argument("--log-every", type=int, default=50)
    p.add_argument("--amp", choices=AMP_MODES, default="none")
    p.add_argument("--compile", action="store_true")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--per-rank-out", action="store_true",
                   help="debug: every rank writes its final weights to OUT with a .rankR suffix")
    return p


def load_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """EMA weights of a file written by this CLI (or a plain state dict)."""
    if not Path(path).is_file():
        raise FileNotFoundError(
            f"--pretrained file not found: {str(path)!r} (expected weights written by train_cli --out, "
            f"format {WEIGHTS_FORMAT}, or a state dict)")
    state = torch.load(Path(path), map_location="cpu", weights_only=True)
    if isinstance(state, dict) and state.get("format") == WEIGHTS_FORMAT:
        return state["ema"]
    if isinstance(state, dict) and all(isinstance(v, torch.Tensor) for v in state.values()):
        return state
    raise ValueError(f"{str(path)!r} holds neither {WEIGHTS_FORMAT} weights nor a state dict")


def _data(args: argparse.Namespace) -> torch.Tensor:
    from gftlib.data.datasets import image_patches, make_2d

    if args.task == "2d":
        return make_2d(args.dataset, args.n_data, generator=torch.Generator().manual_seed(args.data_seed))
    return image_patches(args.dataset, size=16, n=args.n_data, split="train", seed=args.data_seed)


def _model(args: argparse.Namespace) -> nn.Module:
    from gftlib.models import build_model

    if args.task == "2d":
        return build_model("mlp", seed=args.seed, dim=2, hidden=args.hidden, depth=args.depth)
    return build_model("unet", seed=args.seed, config="tiny")


def _sha256(path: str) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


def _suffixed(path: Path, rank: int) -> Path:
    return path.with_name(f"{path.stem}.rank{rank}{path.suffix}")


def check_args(args: argparse.Namespace) -> None:
    """Reject bad values before any work starts: ``ValueError`` naming the flag, value and what is
    allowed (``main`` turns it into argparse's usage error, exit code 2)."""
    from gftlib.paths.couplings import COUPLINGS
    from gftlib.data.datasets import DISTRIBUTIONS_2D, IMAGE_SOURCES
    from gftlib.io import check_output_path
    from gftlib.validation import check_finite_number, check_positive_int, resolve_device

    def flag(name: str) -> str:
        return "--" + name.replace("_", "-")

    minimum = {"steps": 1, "batch_size": 1, "seed": 0, "data_seed": 0, "n_data": 1, "hidden": 1, "depth": 1,
               "warmup_steps": 0, "log_every": 1}
    for name, low in minimum.items():
        check_positive_int(flag(name), getattr(args, name), minimum=low)
    if args.checkpoint_every is not None:
        check_positive_int("--checkpoint-every", args.checkpoint_every)
        if args.checkpoint_dir is None:
            raise ValueError(f"--checkpoint-every {args.checkpoint_every} needs --checkpoint-dir (where to "
                             f"write the checkpoints), got none")
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if args.batch_size % world:
        raise ValueError(f"--batch-size (the global batch) must be divisible by the {world} torchrun ranks, "
                         f"got {args.batch_size}")
    check_finite_number("--lr", args.lr, minimum=0.0, strict=True)
    check_finite_number("--ema-decay", args.ema_decay, minimum=0.0, maximum=1.0)
    if args.ema_decay >= 1.0:
        raise ValueError(f"--ema-decay must be a finite number >= 0 and < 1, got {args.ema_decay!r}")
    check_finite_number("--grad-clip", args.grad_clip)
    check_finite_number("--beta0", args.beta0, minimum=0.0)
    names = DISTRIBUTIONS_2D if args.task == "2d" else tuple(IMAGE_SOURCES)
    if args.dataset not in names:
        raise ValueError(f"--dataset must be one of {', '.join(map(repr, names))} for --task {args.task}; "
                         f"got {args.dataset!r}")
    if args.target_coupling not in COUPLINGS:
        raise ValueError(f"--target-coupling must be one of {', '.join(map(repr, COUPLINGS))}; "
                         f"got {args.target_coupling!r}")
    try:
        resolve_device(args.device)
    except ValueError as err:
        raise ValueError(f"--device: {err}") from None
    if args.pretrained is not None and not Path(args.pretrained).is_file():
        raise ValueError(f"--pretrained must be an existing weights file (train_cli --out, format "
                         f"{WEIGHTS_FORMAT}, or a state dict); got {args.pretrained!r}, which does not exist")
    if args.checkpoint_dir is not None:
        check_output_path("--checkpoint-dir", args.checkpoint_dir, directory=True)
    for name in ("out", "history"):
        if getattr(args, name) is not None:
            check_output_path(flag(name), getattr(args, name), directory=False)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.dataset = args.dataset or _DEFAULT_DATASET[args.task]
    try:
        check_args(args)
    except (TypeError, ValueError) as err:
        parser.error(str(err))  # exit code 2, before anything is built
    ctx = D.init_from_env(args.device)
    try:
        from gftlib.experiments.methods import build_method

        data = _data(args).to(ctx.device)
        model = _model(args)
        pretrained = None
        if args.pretrained is not None:
            pretrained = _model(args)
            pretrained.load_state_dict(load_weights(args.pretrained))
        spec = build_method(args.method, target_data=data, pretrained_model=pretrained,
                            batch_size=args.batch_size, steps=args.steps, beta0=args.beta0,
                            schedule_kind=args.schedule, target_coupling=args.target_coupling,
                            seed=args.data_seed, device=ctx.device)
        if spec.init_from_pretrained:
            model.load_state_dict(pretrained.state_dict())
        config = TrainConfig(
            steps=args.steps, lr=args.lr, ema_decay=args.ema_decay,
            grad_clip=args.grad_clip if args.grad_clip > 0 else None, warmup_steps=args.warmup_steps,
            log_every=args.log_every, checkpoint_every=args.checkpoint_every,
            checkpoint_dir=args.checkpoint_dir, seed=args.seed, device=str(ctx.device), amp=args.amp,
            compile=args.compile, progress=not args.no_progress,
        )
        fingerprint: dict[str, Any] = {
            key: getattr(args, key) for key in ("task", "method", "batch_size", "data_seed", "dataset",
                                                "n_data", "hidden", "depth", "beta0", "schedule",
                                                "target_coupling")
        }
        fingerprint["pretrained_sha256"] = _sha256(args.pretrained) if args.pretrained else None
        try:
            result = train(model, spec.objective, config, schedule=spec.schedule, fingerprint=fingerprint)
        except TrainingPreempted as stop:
            if ctx.is_main:
                print(f"[train_cli] {stop}", file=sys.stderr, flush=True)
                print(json.dumps({"preempted": stop.signal_name, "step": stop.step,
                                  "checkpoint": stop.checkpoint}), flush=True)
            return EXIT_PREEMPTED
        except DirectoryBusy as busy:  # another run holds --checkpoint-dir
            if ctx.is_main:
                print(f"[train_cli] REFUSED: {busy}", file=sys.stderr, flush=True)
            return 1
        if args.out is not None and (ctx.is_main or args.per_rank_out):
            out = Path(args.out)
            payload = {"format": WEIGHTS_FORMAT, "model": result.model.state_dict(),
                       "ema": result.ema_model.state_dict(), "args": vars(args), "history": result.history}
            atomic_torch_save(payload, _suffixed(out, ctx.rank) if args.per_rank_out else out)
        if ctx.is_main:
            if args.history is not None:
                atomic_write_json(args.history, result.history)
            last = result.history[-1] if result.history else {}
            print(json.dumps({"step": last.get("step"), "loss": last.get("total"),
                              "resumed_from": result.resumed_from, "out": args.out}), flush=True)
        D.barrier()
    finally:
        D.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
