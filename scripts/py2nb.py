"""Build a clean ``.ipynb`` from a percent-format script (the way notebooks here are authored).

Cells start with ``# %%`` (code), ``# %% [markdown]`` (markdown; lines are un-commented) or
``# %% tags=["parameters"]`` (the papermill parameters cell). Outputs are empty, so the notebook
sources stay free of outputs.

    python scripts/py2nb.py build/src/t1_girsanov.py notebooks/t1_girsanov.ipynb
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

_HEADER = re.compile(r"^# %%(?P<md> \[markdown\])?(?: tags=(?P<tags>\[.*\]))?\s*$")


def convert(text: str) -> nbformat.NotebookNode:
    cells = []
    kind, tags, buf = None, [], []

    def flush() -> None:
        if kind is None:
            return
        body = "\n".join(buf).strip("\n")
        if kind == "markdown":
            lines = [ln[2:] if ln.startswith("# ") else ln.lstrip("#") for ln in body.splitlines()]
            cells.append(new_markdown_cell("\n".join(lines)))
        else:
            cell = new_code_cell(body)
            if tags:
                cell.metadata["tags"] = tags
            cells.append(cell)

    for line in text.splitlines():
        m = _HEADER.match(line)
        if m:
            flush()
            kind = "markdown" if m.group("md") else "code"
            tags = json.loads(m.group("tags")) if m.group("tags") else []
            buf = []
        else:
            buf.append(line)
    flush()
    nb = new_notebook(cells=cells)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    return nb


def main() -> None:
    src, dst = Path(sys.argv[1]), Path(sys.argv[2])
    nb = convert(src.read_text())
    nbformat.validate(nb)
    dst.write_text(nbformat.writes(nb) + "\n")


if __name__ == "__main__":
    main()
