"""Atomic writers keep the old file on failure; validators name parameter, value and allowed range."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from gftlib.io import atomic_savefig, atomic_torch_save, atomic_write_json, atomic_write_text
from gftlib.validation import (check_choice, check_existing_path, check_finite_number, check_positive_int,
                               check_probability_vector, check_same_shape, check_tensor, resolve_device)


def test_atomic_write_replaces_and_leaves_no_temp(tmp_path: Path) -> None:
    p = tmp_path / "r.json"
    atomic_write_json(p, {"a": 1})
    atomic_write_json(p, {"a": 2})
    assert json.loads(p.read_text()) == {"a": 2}
    assert [f.name for f in tmp_path.iterdir()] == ["r.json"]


def test_failed_write_keeps_previous_file(tmp_path: Path) -> None:
    p = tmp_path / "r.json"
    atomic_write_text(p, "old")
    with pytest.raises(ValueError):
        atomic_write_json(p, {"x": math.nan})  # NaN is not valid JSON: refused mid-write
    assert p.read_text() == "old"
    assert [f.name for f in tmp_path.iterdir()] == ["r.json"]

    class Boom:
        def __reduce__(self):
            raise RuntimeError("interrupted")

    atomic_torch_save({"w": torch.ones(2)}, tmp_path / "ck.pt")
    with pytest.raises(RuntimeError, match="interrupted"):
        atomic_torch_save({"w": Boom()}, tmp_path / "ck.pt")
    assert torch.equal(torch.load(tmp_path / "ck.pt")["w"], torch.ones(2))
    assert sorted(f.name for f in tmp_path.iterdir()) == ["ck.pt", "r.json"]


def test_failed_figure_keeps_previous(tmp_path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    ax.plot([0, 1])
    atomic_savefig(fig, tmp_path / "f.png")
    before = (tmp_path / "f.png").read_bytes()
    with pytest.raises(Exception):
        atomic_savefig(fig, tmp_path / "f.png", format_kwargs_that_do_not_exist=1)
    assert (tmp_path / "f.png").read_bytes() == before
    plt.close(fig)


@pytest.mark.parametrize("value, match", [
    (-1.0, r"beta must be a finite number >= 0, got -1.0"),
    (math.nan, r"beta must be a finite number >= 0, got nan"),
    (math.inf, r"beta must be a finite number >= 0, got inf"),
])
def test_check_finite_number(value, match) -> None:
    with pytest.raises(ValueError, match=match):
        check_finite_number("beta", value, minimum=0.0)


def test_other_validators() -> None:
    assert check_finite_number("beta", 2, minimum=0) == 2.0
    with pytest.raises(TypeError, match="beta must be a real number"):
        check_finite_number("beta", "1")
    with pytest.raises(ValueError, match="steps must be an integer >= 1, got 0"):
        check_positive_int("steps", 0)
    with pytest.raises(ValueError, match="coupling must be one of 'independent', 'ot'; got 'emd'"):
        check_choice("coupling", "emd", ("independent", "ot"))
    with pytest.raises(ValueError, match="x0 must contain only finite values, found 1 NaN/Inf"):
        check_tensor("x0", torch.tensor([[0.0, float("nan")]]))
    with pytest.raises(ValueError, match=r"x0 and x1 must have the same shape, got \(2, 2\) and \(3, 2\)"):
        check_same_shape("x0", torch.zeros(2, 2), "x1", torch.zeros(3, 2))
    with pytest.raises(ValueError, match="weights must sum to 1"):
        check_probability_vector("weights", [0.5, 0.6])
    assert resolve_device("cpu") == torch.device("cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="device='cuda' was requested but no CUDA GPU is available"):
            resolve_device("cuda")
    with pytest.raises(ValueError, match="device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got 'gpu'"):
        resolve_device("gpu")


def test_check_existing_path(tmp_path: Path) -> None:
    assert check_existing_path("pretrain_root", str(tmp_path)) == tmp_path
    missing = tmp_path / "nope"
    with pytest.raises(FileNotFoundError,
                       match=r"pretrain_root must be a local folder, got '.*nope': .*nope does not exist"):
        check_existing_path("pretrain_root", str(missing), what="a local folder")
    with pytest.raises(TypeError, match="weights must be an existing local path"):
        check_existing_path("weights", 3)
    with pytest.raises(TypeError, match="weights must be an existing local path"):
        check_existing_path("weights", "")
