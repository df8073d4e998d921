"""Every `gft` subcommand shows a tqdm progress bar on stderr, and ``--no-progress`` removes it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from gftlib.cli import main

SMALL = ["--hidden", "16", "--depth", "1", "--batch-size", "16", "--n-data", "64"]
BAR = re.compile(r"\d+/\d+ \[")  # tqdm's "k/n [elapsed<remaining, rate]"


def _commands(tmp: Path) -> dict[str, list[str]]:
    pre, ft = tmp / "pre.pt", tmp / "ft.pt"
    return {
        "pretrain": ["pretrain", "--data", "2d:gaussians8", "--model", "mlp", "--steps", "4", "--out", str(pre),
                     *SMALL],
        "finetune": ["finetune", "--pretrained", str(pre), "--data", "2d:moons", "--method", "ft", "--steps", "3",
                     "--out", str(ft), *SMALL],
        "sample": ["sample", "--weights", str(ft), "--n", "20", "--nfe", "2", "--out", str(tmp / "s.npz")],
        "eval": ["eval", "--weights", str(ft), "--data", "2d:moons", "--n", "20", "--n-ref", "20", "--nfe", "2",
                 "--metrics", "w2,nfe", "--out", str(tmp / "e.json")],
    }


@pytest.mark.parametrize("progress", [True, False], ids=["bar", "no-progress"])
def test_each_subcommand_shows_a_progress_bar_unless_told_not_to(progress, tmp_path, capsys):
    for name, args in _commands(tmp_path).items():  # in order: each uses the previous one's output
        capsys.readouterr()
        assert main(args if progress else [*args, "--no-progress"]) == 0, name
        err = capsys.readouterr().err
        assert bool(BAR.search(err)) is progress, f"gft {name}: stderr was {err[-500:]!r}"
