"""Write a notebook as the percent-format script ``scripts/py2nb.py`` builds it from (the inverse).

Use it to edit a notebook as text from a fresh clone, then convert back:

    python scripts/nb2py.py notebooks/t1_girsanov.ipynb build/nbsrc/t1_girsanov.py
    python scripts/py2nb.py build/nbsrc/t1_girsanov.py notebooks/t1_girsanov.ipynb

Markdown lines are commented (``# text``; an empty line becomes ``#``); the parameters cell keeps
its tag; outputs are dropped. The round trip reproduces every cell's type, source and tags.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import nbformat


def to_percent(nb: nbformat.NotebookNode) -> str:
    parts = []
    for cell in nb.cells:
        src = cell.source if isinstance(cell.source, str) else "".join(cell.source)
        if cell.cell_type == "markdown":
            body = "\n".join("#" if not ln else f"# {ln}" for ln in src.split("\n"))
            parts.append(f"# %% [markdown]\n{body}")
        elif cell.cell_type == "code":
            tags = cell.get("metadata", {}).get("tags", [])
            header = f"# %% tags={json.dumps(tags)}" if tags else "# %%"
            parts.append(f"{header}\n{src}")
        else:
            raise ValueError(f"cannot write a {cell.cell_type!r} cell as a percent script")
    return "\n\n".join(parts) + "\n"


def main() -> None:
    src, dst = Path(sys.argv[1]), Path(sys.argv[2])
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_text(to_percent(nbformat.read(src, as_version=4)))


if __name__ == "__main__":
    main()
