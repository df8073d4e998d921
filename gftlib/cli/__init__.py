"""The ``gft`` command (also ``python -m gftlib``): pretrain, finetune, sample and eval flows.

Data SPEC: ``2d:NAME`` (moons, gaussians8, ...), ``patches:SOURCE`` (ihc, natural, hubble, retina),
``cifar10:ROOT``, ``wilds-camelyon17:ROOT`` (also wilds-rxrx1, wilds-fmow, ...), ``folder:PATH``,
``npz:PATH``. Model SPEC: a gftlib weights file (``--out`` of pretrain/finetune), ``torchcfm:PATH``
(torchcfm's release checkpoint), or a fresh network ``mlp`` | ``unet:tiny|small|cifar10``.

Every subcommand shows a tqdm progress bar (``--no-progress`` turns it off), writes its outputs
atomically, resumes from ``--checkpoint-dir`` and runs under ``torchrun`` (pretrain/finetune train
with DDP, the batch being the global batch; sample and eval run on rank 0 while the other ranks
wait). A bad argument stops the command before any work with exit status 2 and a message naming the
option, the value and the allowed values.
"""

from __future__ import annotations

import argparse
import sys

from gftlib.cli.specs import CLIError

__all__ = ["build_parser", "main", "CLIError"]

_EXAMPLES = {
    None: """example (2-D, a minute on a laptop CPU):
  gft pretrain --data 2d:gaussians8 --model mlp --steps 2000 --out pre.pt
  gft finetune --pretrained pre.pt --data 2d:moons --method gft-coupling --steps 500 --n-data 256 --out ft.pt
  gft sample --weights ft.pt --n 2000 --nfe 32 --out s.npz --grid s.png
  gft eval --weights ft.pt --data 2d:moons --metrics fd,w2,path_length,nfe --out e.json""",
    "pretrain": """example:
  gft pretrain --data patches:natural --model unet:tiny --image-size 16 --steps 500 --batch-size 32 \\
      --checkpoint-dir ckpt/pre --out pre.pt""",
    "finetune": """example (torchcfm's CIFAR-10 OT-CFM checkpoint fine-tuned on Camelyon17 at 32 px):
  gft finetune --pretrained torchcfm:otcfm_cifar10_weights_step_400000.pt \\
      --data wilds-camelyon17:/data/wilds --n-data 5000 --image-size 32 --method gft-coupling \\
      --steps 20000 --batch-size 128 --checkpoint-dir ckpt/gft --out gft.pt""",
    "sample": """example:
  gft sample --weights gft.pt --n 5000 --nfe 50 --solver euler --out samples.npz --grid samples.png""",
    "eval": """example:
  gft eval --weights gft.pt --data wilds-camelyon17:/data/wilds --metrics fd,fid,path_length,nfe,w2 \\
      --inception inception-2015-12-05.pt --n 5000 --n-ref 5000 --nfe 50 --out eval.json""",
}

_HELP = {"pretrain": "train a fresh network with CFM (the 'scratch' method)",
         "finetune": "fine-tune a pretrained network with one method",
         "sample": "draw samples with an ODE solver (.npz, optional PNG grid)",
         "eval": "FD / FID / W2 to held-out data, path length, NFE (.json)"}


def _sub(sub: argparse._SubParsersAction, name: str, doc: str | None) -> argparse.ArgumentParser:
    return sub.add_parser(name, help=_HELP[name], description=doc, epilog=_EXAMPLES[name],
                          formatter_class=argparse.RawDescriptionHelpFormatter)


def build_parser() -> argparse.ArgumentParser:
    from gftlib.cli import eval_cmd, sample_cmd, train_cmd

    p = argparse.ArgumentParser(prog="gft", description=__doc__, epilog=_EXAMPLES[None],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True, metavar="{pretrain,finetune,sample,eval}")
    train_cmd.add_arguments(_sub(sub, "pretrain", train_cmd.__doc__), finetune=False)
    train_cmd.add_arguments(_sub(sub, "finetune", train_cmd.__doc__), finetune=True)
    sample_cmd.add_arguments(_sub(sub, "sample", sample_cmd.__doc__))
    eval_cmd.add_arguments(_sub(sub, "eval", eval_cmd.__doc__))
    return p


def _dispatch(args: argparse.Namespace) -> int:
    from gftlib.cli import eval_cmd, sample_cmd, train_cmd

    if args.command in ("pretrain", "finetune"):
        return train_cmd.run(args, finetune=args.command == "finetune")
    if args.command == "sample":
        return sample_cmd.run(args)
    return eval_cmd.run(args)


def main(argv: list[str] | None = None) -> int:
    """Run ``gft`` with ``argv`` (default sys.argv[1:]); returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return _dispatch(args)
    except CLIError as err:
        sub = parser._subparsers._group_actions[0].choices[args.command]  # type: ignore[union-attr]
        sub.error(str(err))  # exits with status 2
    return 2


def console_main() -> None:
    """Entry point of the ``gft`` console script."""
    sys.exit(main())
