"""Provenance of a results JSON: every figure and number names its notebook cell and gftlib function."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import nbformat  # noqa: E402
import pytest  # noqa: E402
from IPython.core.interactiveshell import InteractiveShell  # noqa: E402

from gftlib.eval.metrics import wasserstein2  # noqa: E402
from gftlib.experiments.provenance import (dotted_name, figure_table, locate_cell, plotter,  # noqa: E402
                                           provenance_gaps)
from gftlib.experiments.report import Report  # noqa: E402


@plotter
def demo_plot(y: list[float]) -> plt.Figure:
    fig, ax = plt.subplots()
    ax.plot(y)
    return fig


def undecorated_plot() -> plt.Figure:
    return plt.figure()


def test_dotted_name_reads_the_object() -> None:
    assert dotted_name(wasserstein2) == "gftlib.eval.metrics.wasserstein2"
    assert dotted_name(demo_plot) == f"{__name__}.demo_plot"  # the wrapped function, not the wrapper
    assert dotted_name(functools.partial(wasserstein2, p=2)) == "gftlib.eval.metrics.wasserstein2"
    assert dotted_name(Report.check) == "gftlib.experiments.report.Report.check"
    with pytest.raises(TypeError, match="importable functions"):
        dotted_name(lambda x: x)


def test_outside_ipython_sources_and_figures(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("GFT_RESULTS_DIR", str(tmp_path))
    monkeypatch.setenv("GFT_FIGURES_DIR", str(tmp_path / "fig"))
    monkeypatch.chdir(tmp_path)
    r = Report("t0_demo", {"seed": 0})
    r.record("w2", 0.5, by=wasserstein2)
    with r.source(wasserstein2, plotter):
        r.numbers["both"] = 1.0
    r.numbers["bare"] = 2.0  # the with block has ended: no source
    fig = demo_plot([1.0, 2.0])
    r.savefig(fig, "demo")
    r.savefig(undecorated_plot(), "other", by=undecorated_plot)
    with pytest.raises(ValueError, match="drawn by"):
        r.savefig(fig, "wrong", by=undecorated_plot)
    plt.close("all")
    doc = json.loads(r.finalize().read_text())
    prov = doc["provenance"]
    assert prov["numbers"]["w2"]["functions"] == ["gftlib.eval.metrics.wasserstein2"]
    assert prov["numbers"]["both"]["functions"] == ["gftlib.eval.metrics.wasserstein2",
                                                    "gftlib.experiments.provenance.plotter"]
    assert prov["numbers"]["bare"]["functions"] == []
    assert prov["figures"]["t0_demo_demo"]["function"] == f"{__name__}.demo_plot"
    assert prov["figures"]["t0_demo_other"]["function"] == f"{__name__}.undecorated_plot"
    assert prov["numbers"]["w2"]["cell"] is None  # no kernel
    assert provenance_gaps(doc, require_cell=False) == ["number 'bare' has no gftlib functions (draw it with a "
                                                        "@plotter function / declare report.source(...))"]
    doc["numbers"]["new"] = 3.0
    doc["figures"].append("t0_demo_new")
    gaps = provenance_gaps(doc, require_cell=False)
    assert "number 'new' has no provenance entry" in gaps and "figure 't0_demo_new' has no provenance entry" in gaps


CELLS = [
    "from gftlib.experiments.report import Report\nreport = Report('t0_demo', {'seed': 0})",
    "from gftlib.eval.metrics import wasserstein2\nreport.source(wasserstein2)\nreport.numbers['w2'] = 0.5",
    "report.numbers['later'] = 1.0",
    "from test_provenance import demo_plot\nreport.savefig(demo_plot([1.0]), 'demo')",
    "path = report.finalize()",
]


@pytest.fixture
def shell():
    sh = InteractiveShell.instance()
    yield sh
    InteractiveShell.clear_instance()
    plt.close("all")


def test_in_a_kernel_cells_are_located_in_the_notebook(tmp_path: Path, monkeypatch, shell) -> None:
    """A statement ``report.source(...)`` holds for its cell only; cells are found by their source in
    the notebook file even though a kernel (like papermill's, with its injected cell) counts differently."""
    monkeypatch.setenv("GFT_RESULTS_DIR", str(tmp_path))
    monkeypatch.setenv("GFT_FIGURES_DIR", str(tmp_path / "fig"))
    monkeypatch.syspath_prepend(str(Path(__file__).parent))
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell("# demo")] + [nbformat.v4.new_code_cell(c) for c in CELLS]
    nbformat.write(nb, tmp_path / "t0_demo.ipynb")
    monkeypatch.chdir(tmp_path)
    shell.run_cell("injected = 'a cell the notebook file does not have'", store_history=True)
    for code in CELLS:
        res = shell.run_cell(code, store_history=True)
        assert res.success, res.error_in_exec
    doc = json.loads(Path(shell.user_ns["path"]).read_text())
    prov = doc["provenance"]
    ids = [c.id for c in nb.cells]
    assert prov["numbers"]["w2"] == {"notebook": "t0_demo.ipynb", "cell": 2, "cell_id": ids[2],
                                     "functions": ["gftlib.eval.metrics.wasserstein2"]}
    assert prov["numbers"]["later"]["functions"] == [] and prov["numbers"]["later"]["cell"] == 3
    assert prov["figures"]["t0_demo_demo"] == {"notebook": "t0_demo.ipynb", "cell": 4, "cell_id": ids[4],
                                               "function": "test_provenance.demo_plot"}
    assert provenance_gaps(doc) == ["number 'later' has no gftlib functions (draw it with a @plotter function / "
                                    "declare report.source(...))"]


def test_locate_cell_falls_back_to_the_execution_count(tmp_path: Path) -> None:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("x = 1")]
    nbformat.write(nb, tmp_path / "a.ipynb")
    assert locate_cell(tmp_path / "a.ipynb", (5, "x = 1\n"))["cell"] == 0
    assert locate_cell(tmp_path / "a.ipynb", (5, "x = 2")) == {"cell": None, "execution_count": 5}
    assert locate_cell(None, (5, "x = 1")) == {"cell": None, "execution_count": 5}
    assert locate_cell(tmp_path / "a.ipynb", None) == {"cell": None}


def test_figure_table_links_figure_notebook_and_function(tmp_path: Path) -> None:
    from gftlib.experiments.summary import FIGURES_END, FIGURES_START, update_readme

    fn = "gftlib.experiments.plots.t5_paths.trajectories"
    entry = {"notebook": "notebooks/t5_paths.ipynb", "cell": 11, "cell_id": "x", "function": fn}
    docs = {"t5_paths": {"figures": ["t5_paths_trajectories", "t5_paths_other"],
                         "provenance": {"figures": {"t5_paths_trajectories": entry}}}}
    table = figure_table(docs)
    assert ("| [t5_paths_trajectories](figures/t5_paths_trajectories.png) | [t5_paths](notebooks/t5_paths.ipynb), "
            f"cell 11 | [`{fn}`](gftlib/experiments/plots/t5_paths.py) |") in table
    assert "| [t5_paths_other](figures/t5_paths_other.png) | [t5_paths](notebooks/t5_paths.ipynb), cell ? | " \
           "(not recorded) |" in table
    readme = f"intro\n{FIGURES_START}\nold\n{FIGURES_END}\nrest\n"
    new = update_readme(readme, table, start_marker=FIGURES_START, end_marker=FIGURES_END)
    assert "old" not in new and table in new and new.endswith(f"{FIGURES_END}\nrest\n")
