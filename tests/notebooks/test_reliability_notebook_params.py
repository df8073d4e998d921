"""Bad notebook parameters (the notebook part of the bad-input catalogue, tests/core/test_bad_inputs.py):
every parameter that a notebook's ``parameters`` cell declares, given a bad value, is rejected by
the notebook's setup cell (the first code cell after the parameters, where the notebooks resolve
and validate their knobs, before any data, model or training) with a message naming the parameter
and the value and saying what is allowed. Unknown parameter *names* are refused by run_notebooks
before a kernel starts (tests/core/test_bad_inputs.py).

The setup cell runs in this process, on the smoke profile, in a sandbox (cwd, output folders,
matplotlib settings and global RNG states restored afterwards). The bad value is the string
"<bad>" (never a valid number, name, path, mixture or list); a parameter that takes a list and
iterated the string (the message shows '<') is tried again with ["<bad>"]. Known gaps are strict xfails whose
reason quotes today's message: a fix makes them XPASS and the mark must go.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from gftlib.experiments.run_notebooks import declared_parameters

REPO = Path(__file__).resolve().parents[2]
NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))
BAD = "<bad>"
ALLOWED = re.compile(r"must|one of|expected|allowed|only|needs")  # the message says what is allowed

#: (notebook stem, parameter) -> today's message, for parameters whose setup cell does not yet
#: name the parameter and the value (or does not reject the value before the work starts).
GAPS: dict[tuple[str, str], str] = {}


def _cells(notebook: Path) -> tuple[str, str]:
    """Source of the ``parameters`` cell and of the first code cell after it."""
    cells = [c for c in json.loads(notebook.read_text())["cells"] if c["cell_type"] == "code"]
    for i, cell in enumerate(cells):
        if "parameters" in cell.get("metadata", {}).get("tags", []):
            src = ["".join(c["source"]) if isinstance(c["source"], list) else c["source"]
                   for c in cells[i:i + 2]]
            return src[0], src[1]
    raise AssertionError(f"{notebook.name}: no parameters cell")


@contextlib.contextmanager
def _sandbox(tmp: Path, cwd: Path):
    import matplotlib

    states = (random.getstate(), np.random.get_state(), torch.get_rng_state())
    env = {k: os.environ.get(k) for k in ("GFT_FIGURES_DIR", "GFT_RESULTS_DIR", "GFT_CACHE_DIR")}
    os.environ.update(GFT_FIGURES_DIR=str(tmp / "fig"), GFT_RESULTS_DIR=str(tmp / "res"),
                      GFT_CACHE_DIR=str(tmp / "cache"))
    old_cwd = Path.cwd()
    os.chdir(cwd)
    try:
        with matplotlib.rc_context():
            yield
    finally:
        os.chdir(old_cwd)
        for k, v in env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        random.setstate(states[0])
        np.random.set_state(states[1])
        torch.set_rng_state(states[2])


def _message(notebook: Path, name: str, value, tmp: Path) -> str | None:
    """The setup cell's error message with ``name = value`` (None: the cell accepted it)."""
    params, setup = _cells(notebook)
    ns: dict = {}
    with _sandbox(tmp, notebook.parent):
        exec(params, ns)  # noqa: S102 - our own notebook
        ns.update(profile="smoke", device="cpu")
        ns[name] = value
        try:
            exec(setup, ns)  # noqa: S102
        except Exception as err:  # noqa: BLE001 - any rejection counts; the message is checked
            return f"{type(err).__name__}: {err}"
    return None


def _cases():
    for nb in NOTEBOOKS:
        for name in declared_parameters(nb):
            gap = GAPS.get((nb.stem, name))
            marks = [pytest.mark.xfail(strict=True, reason=gap)] if gap else []
            yield pytest.param(nb, name, id=f"{nb.stem}:{name}", marks=marks)


@pytest.mark.parametrize("notebook, name", list(_cases()))
def test_bad_notebook_parameter_is_rejected_by_the_setup_cell(notebook, name, tmp_path):
    tried = []
    for value in (BAD, [BAD]):
        message = _message(notebook, name, value, tmp_path)
        tried.append(message)
        if message is not None and name in message and BAD in message and ALLOWED.search(message):
            return
        if message is None or "'<'" not in message:  # retry as a list only if the string was iterated
            break
    pytest.fail(f"{notebook.stem}: {name}={BAD!r} not rejected with a message naming it and the value; "
                f"got {tried}")


def test_every_gap_is_a_declared_parameter():
    declared = {(nb.stem, n) for nb in NOTEBOOKS for n in declared_parameters(nb)}
    assert set(GAPS) <= declared, sorted(set(GAPS) - declared)
