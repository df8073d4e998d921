"""Notebook kernels talk over local IPC sockets: no "Kernel is running over TCP without encryption"."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook

from gftlib.experiments.run_notebooks import run_notebook


@pytest.mark.slow
def test_kernel_runs_over_ipc_without_the_tcp_warning(tmp_path: Path, capfd) -> None:
    params = new_code_cell("seed = 0")
    params.metadata["tags"] = ["parameters"]
    body = ("from ipykernel.kernelapp import IPKernelApp\n"
            "open('transport.txt', 'w').write(IPKernelApp.instance().transport)")
    nb = new_notebook(cells=[params, new_code_cell(body)])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    path = tmp_path / "ipc.ipynb"
    path.write_text(nbformat.writes(nb))
    run_notebook(path, parameters={"seed": 1}, build_dir=tmp_path / "build")
    assert (tmp_path / "transport.txt").read_text() == "ipc"
    err = capfd.readouterr().err
    assert "without encryption" not in err, err[-2000:]
