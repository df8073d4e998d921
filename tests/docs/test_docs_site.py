"""Docs tooling: jupytext pairing of the notebooks, the pdoc API reference, the static site's links."""

from __future__ import annotations

import base64
import importlib.util
import io
import subprocess
import sys
from pathlib import Path

import jupytext
import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def _site_module():
    spec = importlib.util.spec_from_file_location("build_site", ROOT / "scripts" / "build_site.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["build_site"] = mod        # dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod


def _cells(nb: nbformat.NotebookNode) -> list[tuple[str, str, list[str]]]:
    return [(c.cell_type, c.source, c.get("metadata", {}).get("tags", [])) for c in nb.cells]


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_percent_script_round_trip(notebook: Path) -> None:
    # what `make nb2py` then `make py2nb` do: jupytext with the repo's jupytext.toml reproduces every
    # cell's type, source and tags (the papermill `parameters` tag), and the sources carry no outputs
    config = jupytext.config.load_jupytext_configuration_file(str(ROOT / "jupytext.toml"))
    original = nbformat.read(notebook, as_version=4)
    text = jupytext.writes(original, fmt="py:percent", config=config)
    assert "jupytext_version" not in text and "kernelspec" not in text  # notebook metadata filtered out
    rebuilt = jupytext.reads(text, fmt="py:percent")
    assert _cells(rebuilt) == _cells(original)
    assert all(not c.get("outputs") for c in original.cells if c.cell_type == "code")


def test_jupytext_config_pairs_notebooks_with_build_nbsrc() -> None:
    # the pairing `make sync` and JupyterLab use: notebooks/<stem>.ipynb <-> build/nbsrc/<stem>.py
    # (`python -m jupytext` exits 1 after printing the paths; the `jupytext` script exits 0)
    out = subprocess.run([sys.executable, "-m", "jupytext", "--paired-paths", "notebooks/t1_girsanov.ipynb"],
                         cwd=ROOT, capture_output=True, text=True).stdout
    assert out.split() == ["build/nbsrc/t1_girsanov.py"]
    assert "build/" in (ROOT / ".gitignore").read_text().splitlines()  # the twins are never committed


def _png() -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(1, 1))
    ax.plot([0, 1], [0, 1])
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def _executed_notebook(path: Path) -> None:
    """A tiny notebook as papermill leaves it: a heading, a parameters cell, a printed line and an
    inline image among the outputs."""
    params = new_code_cell("seed = 0", execution_count=1)
    params.metadata["tags"] = ["parameters"]
    out = new_code_cell("print('TV = 0.5')", execution_count=2,
                        outputs=[new_output("stream", name="stdout", text="TV = 0.5\n"),
                                 new_output("display_data",
                                            data={"image/png": _png(), "text/plain": "<Figure>"})])
    nb = new_notebook(cells=[new_markdown_cell("# T9 — a tiny check\n\nSee [the proof](#Proof)."), params, out,
                             new_markdown_cell("## Proof\n\nTrivial.")])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)


def test_site_renders_outputs_and_every_relative_link_resolves(tmp_path: Path) -> None:
    import pdoc
    import pdoc.render

    site_mod = _site_module()
    nbs, figs, site = tmp_path / "executed", tmp_path / "figures", tmp_path / "site"
    nbs.mkdir()
    figs.mkdir()
    _executed_notebook(nbs / "t9_tiny.ipynb")
    (figs / "t9_tiny_curve.png").write_bytes(base64.b64decode(_png()))
    (figs / "other_curve.png").write_bytes(base64.b64decode(_png()))   # another notebook's: not listed
    pdoc.render.configure(docformat="restructuredtext")
    pdoc.pdoc("gftlib.io", "gftlib.validation", output_directory=site / "api")

    pages = site_mod.build_site(nbs, figs, site)
    assert [(p.stem, p.title, p.figures) for p in pages] == [("t9_tiny", "T9 — a tiny check",
                                                            ("figures/t9_tiny_curve.png",))]
    page = (site / "notebooks" / "t9_tiny.html").read_text()
    assert "TV = 0.5" in page and "data:image/png;base64," in page           # outputs kept
    index = (site / "index.html").read_text()
    assert 'href="notebooks/t9_tiny.html"' in index and 'href="api/index.html"' in index
    report = site_mod.check_links(site)
    assert report.broken == [] and report.inherited == []
    assert report.pages >= 5 and report.checked >= 8   # index, notebook, pdoc pages; nav, figure, api links

    # the checker does catch what it is meant to: a missing page, a missing anchor, a link out of the site
    with open(site / "index.html", "a") as f:
        f.write('<a href="notebooks/missing.html">x</a><a href="notebooks/t9_tiny.html#no-such">y</a>'
                '<a href="../outside.html">z</a><a href="https://example.org/x">ok</a>'
                '<a href="notebooks/t9_tiny.html#Proof.member">w</a>')
    broken = site_mod.check_links(site).broken
    assert len(broken) == 3
    assert any("missing.html (no such file)" in b for b in broken)
    assert any("#no-such" in b and "no anchor" in b for b in broken)
    assert any("outside the site" in b for b in broken)
    # a member link of an anchored name (pdoc's inherited members) is reported apart, not as broken
    assert [x.split(": ")[1] for x in site_mod.check_links(site).inherited] == [
        "notebooks/t9_tiny.html#Proof.member (no anchor #Proof.member in notebooks/t9_tiny.html)"]


def test_site_needs_the_api_reference_first(tmp_path: Path) -> None:
    site_mod = _site_module()
    (tmp_path / "nbs").mkdir()
    with pytest.raises(FileNotFoundError, match="make docs"):
        site_mod.build_site(tmp_path / "nbs", tmp_path, tmp_path / "site")


@pytest.mark.slow
def test_full_api_reference_builds_with_resolving_links(tmp_path: Path) -> None:
    # `make docs` for the whole package: every module imports and documents, every cross-link resolves
    modules = sorted({".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
                      for p in (ROOT / "gftlib").rglob("*.py")})
    cmd = [sys.executable, "-m", "pdoc", "--docformat", "restructuredtext", "--output-directory",
           str(tmp_path / "api"), *modules]
    subprocess.run(cmd, check=True, cwd=ROOT, capture_output=True, timeout=900)
    for page in ("schedules.html", "theory/girsanov/log_ratio.html", "experiments/methods.html"):
        assert (tmp_path / "api" / "gftlib" / page).is_file(), page
    report = _site_module().check_links(tmp_path)
    assert report.broken == [], report.broken[:10]
