"""The papermill runner: unknown parameters rejected, failures name the notebook and the cell."""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook

from gftlib.experiments.run_notebooks import NotebookFailed, declared_parameters, main, run_notebook


def _notebook(path: Path, body: str) -> Path:
    params = new_code_cell("seed = 0\nprofile = 'quick'\ndevice = 'auto'\nn = None")
    params.metadata["tags"] = ["parameters"]
    nb = new_notebook(cells=[params, new_code_cell(body)])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    path.write_text(nbformat.writes(nb))
    return path


def test_declared_parameters(tmp_path: Path) -> None:
    nb = _notebook(tmp_path / "a.ipynb", "x = 1")
    assert set(declared_parameters(nb)) == {"seed", "profile", "device", "n"}


def test_unknown_parameter_is_rejected_before_running(tmp_path: Path) -> None:
    nb = _notebook(tmp_path / "a.ipynb", "raise SystemExit('must not run')")
    with pytest.raises(ValueError, match=r"unknown parameter\(s\) \['sede'\]"):
        run_notebook(nb, parameters={"sede": 1}, build_dir=tmp_path / "build")


def test_notebook_without_parameters_cell_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "b.ipynb"
    path.write_text(nbformat.writes(new_notebook(cells=[new_code_cell("x = 1")])))
    with pytest.raises(ValueError, match="no code cell is tagged 'parameters'"):
        declared_parameters(path)


@pytest.mark.slow
def test_failure_names_notebook_and_cell_and_keeps_copy(tmp_path: Path, capsys) -> None:
    nb = _notebook(tmp_path / "broken.ipynb", "raise ValueError('beta must be >= 0, got -1')")
    with pytest.raises(NotebookFailed, match=r"broken.ipynb failed in code cell 3 .*ValueError: beta must be"):
        run_notebook(nb, parameters={"seed": 1}, build_dir=tmp_path / "build")
    kept = tmp_path / "build" / "notebooks" / "broken.ipynb"
    assert kept.exists()
    # The CLI stops at the first failing notebook and does not run the next one.
    good = _notebook(tmp_path / "good.ipynb", "open('ran.txt', 'w').write('x')")
    rc = main([str(nb), str(good), "--build", str(tmp_path / "build2")])
    assert rc == 1
    assert "broken.ipynb failed" in capsys.readouterr().err
    assert not (tmp_path / "ran.txt").exists()


@pytest.mark.slow
def test_parallel_jobs_run_every_notebook_in_its_own_process_and_report_a_failure(tmp_path: Path,
                                                                                   capsys) -> None:
    # two workers: both notebooks start; the good one finishes (running notebooks are not killed),
    # the broken one is reported, and the run fails
    nb = _notebook(tmp_path / "broken.ipynb", "raise ValueError('beta must be >= 0, got -1')")
    good = _notebook(tmp_path / "good.ipynb", "import os\nopen('ran.txt', 'w').write(str(os.getpid()))")
    rc = main([str(nb), str(good), "--jobs", "2", "--build", str(tmp_path / "build")])
    assert rc == 1
    assert "broken.ipynb failed" in capsys.readouterr().err
    assert (tmp_path / "ran.txt").exists()
    ok = [_notebook(tmp_path / f"ok{i}.ipynb", f"open('ok{i}.txt', 'w').write('x')") for i in range(3)]
    assert main([*map(str, ok), "--jobs", "2", "--build", str(tmp_path / "build3")]) == 0
    assert all((tmp_path / f"ok{i}.txt").exists() for i in range(3))
    assert all((tmp_path / "build3" / "notebooks" / f"ok{i}.ipynb").exists() for i in range(3))


def test_profile_typo_is_rejected(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["x.ipynb", "--profile", "quik"])
    assert "--profile must be one of smoke, quick, paper; got 'quik'" in capsys.readouterr().err


NOTEBOOKS = sorted((Path(__file__).resolve().parents[2] / "notebooks").glob("*.ipynb"))


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_papermill_reads_every_declared_parameter(notebook: Path, caplog) -> None:
    # papermill skips (with "Unable to parse line" and later "Passed unknown parameter" warnings) any
    # parameters-cell line with more than one '=', e.g. a ">=" in its comment
    import papermill

    found = set(papermill.inspect_notebook(str(notebook)))
    assert found == set(declared_parameters(notebook)), "papermill cannot parse some parameter lines"
    assert "Unable to parse" not in caplog.text


def test_resolve_parameters_seeds_the_global_generators() -> None:
    import random

    import numpy as np
    import torch

    from gftlib.experiments.profiles import resolve_parameters

    table = {p: {"k": 1} for p in ("smoke", "quick", "paper")}
    draws = []
    for _ in range(2):
        torch.seed()  # a random state in between, as at process start
        resolve_parameters(table, profile="smoke", seed=5, device="cpu")
        draws.append((torch.rand(3), np.random.rand(3), random.random()))
    assert torch.equal(draws[0][0], draws[1][0])
    assert np.array_equal(draws[0][1], draws[1][1]) and draws[0][2] == draws[1][2]
