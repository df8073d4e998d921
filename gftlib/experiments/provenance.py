"""Where every figure and number of a results JSON came from: notebook, cell and gftlib function.

The names are taken from the objects themselves, so they cannot drift from the code:
a plotting function decorated with :func:`plotter` stamps the figure it returns with its dotted
name, and :func:`dotted_name` reads ``__module__`` / ``__qualname__`` of the functions a notebook
declares as the source of its numbers. The cell is the IPython cell being executed: its source is
looked up in the notebook file (the kernel's working directory, where papermill runs it, or
``notebooks/``), which gives the cell's index in the notebook and its nbformat id; papermill's
injected parameters cell does not shift it. Outside IPython (a script, a unit test) the cell is
``None``.
"""

from __future__ import annotations

import functools
import inspect
import json
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

__all__ = ["repo_root", "plotter", "dotted_name", "names_of", "current_cell", "locate_cell",
           "figure_function", "provenance_gaps", "source_file", "figure_table"]

F = TypeVar("F", bound=Callable[..., Any])

#: Attribute a :func:`plotter` stamps on the figure it returns.
_STAMP = "_gft_plotter"

def dotted_name(fn: Any) -> str:
    """``module.qualname`` of an importable function, class or method (partials: their function).

    Raises ``TypeError`` for lambdas, functions defined inside other functions and objects without
    a module, since no reader could import them from the name.
    """
    while isinstance(fn, functools.partial):
        fn = fn.func
    fn = getattr(fn, "__func__", fn)  # bound / class methods
    fn = inspect.unwrap(fn) if callable(fn) else fn
    module, qualname = getattr(fn, "__module__", None), getattr(fn, "__qualname__", None)
    if not module or not qualname or "<" in qualname or module == "__main__":
        raise TypeError(f"by / source must be importable functions or classes (module-level, not lambdas or "
                        f"notebook functions), got {fn!r} (module {module!r}, qualname {qualname!r})")
    return f"{module}.{qualname}"


def plotter(fn: F) -> F:
    """Decorate a plotting function ``(...) -> Figure``: the figure remembers which function drew it."""
    name = dotted_name(fn)

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        fig = fn(*args, **kwargs)
        setattr(fig, _STAMP, name)
        return fig

    return wrapper  # type: ignore[return-value]


def figure_function(fig: Any) -> str | None:
    """The dotted name stamped on ``fig`` by :func:`plotter` (``None`` if it was drawn otherwise)."""
    return getattr(fig, _STAMP, None)


def current_cell() -> tuple[int, str] | None:
    """``(execution_count, raw source)`` of the IPython cell now running, or ``None`` outside IPython.

    IPython appends a cell's input to its history before running it, so the running cell is the
    last entry and its ``In [n]`` number the entry's index (``shell.execution_count`` is already
    advanced during the run in IPython 9, so it is not used).
    """
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover - IPython ships with the notebook stack
        return None
    shell = get_ipython()
    if shell is None:
        return None
    raw = shell.history_manager.input_hist_raw
    if len(raw) < 2:  # only the empty entry 0: no cell has run with history
        return None
    return len(raw) - 1, raw[-1]


def _cell_source(cell: dict[str, Any]) -> str:
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else str(src)


def locate_cell(notebook: Path | None, ref: tuple[int, str] | None) -> dict[str, Any]:
    """``{"cell": index, "cell_id": id}`` of the cell of ``notebook`` whose source is ``ref``'s.

    ``index`` counts every cell of the notebook file from 0 (markdown included), as nbformat does.
    A cell that cannot be found (no notebook file, or edited since it ran) gives ``cell: None`` and
    keeps the kernel's ``execution_count`` so the executed copy's ``In [n]`` still points at it.
    """
    if ref is None:
        return {"cell": None}
    count, source = ref
    if notebook is not None and notebook.is_file():
        cells = json.loads(notebook.read_text()).get("cells", [])
        want = source.strip()
        for i, cell in enumerate(cells):
            if cell.get("cell_type") == "code" and _cell_source(cell).strip() == want:
                return {"cell": i, "cell_id": cell.get("id")}
    return {"cell": None, "execution_count": count}


def provenance_gaps(doc: dict[str, Any], *, require_cell: bool = True) -> list[str]:
    """What a results JSON ``doc`` lacks: every figure and number key needs a provenance entry.

    A figure needs its plotting function, a number at least one source function; with
    ``require_cell`` both also need the notebook cell (true whenever the notebook ran in a kernel).
    """
    prov = doc.get("provenance", {})
    gaps = []
    for kind, names, field in (("figure", doc.get("figures", []), "function"),
                               ("number", list(doc.get("numbers", {})), "functions")):
        entries = prov.get(f"{kind}s", {})
        for name in names:
            entry = entries.get(name)
            if entry is None:
                gaps.append(f"{kind} {name!r} has no provenance entry")
                continue
            if not entry.get(field):
                gaps.append(f"{kind} {name!r} has no gftlib {field} (draw it with a @plotter function / "
                            f"declare report.source(...))")
            if require_cell and entry.get("cell") is None:
                gaps.append(f"{kind} {name!r} has no notebook cell")
    return gaps


def names_of(fns: Iterable[Any]) -> list[str]:
    """Sorted, de-duplicated dotted names of ``fns``."""
    return sorted({dotted_name(f) for f in fns})


def repo_root() -> Path:
    """The checkout that holds ``gftlib`` (figures/, results/ and notebooks/ live there)."""
    return Path(__file__).resolve().parents[2]


def source_file(dotted: str) -> str | None:
    """Repository-relative path of the module that defines ``dotted`` (``None`` if it is not in the repo)."""
    import importlib.util

    parts = dotted.split(".")
    for k in range(len(parts) - 1, 0, -1):
        try:
            spec = importlib.util.find_spec(".".join(parts[:k]))
        except (ImportError, ValueError):
            continue
        if spec is not None and spec.origin:
            try:
                return Path(spec.origin).resolve().relative_to(repo_root()).as_posix()
            except ValueError:
                return None
    return None


def figure_table(docs: Mapping[str, dict[str, Any]]) -> str:
    """Markdown table: every figure of the results ``docs`` ({stem: results JSON}) with links to its PNG,
    its notebook (and cell) and the plotting function that drew it."""
    lines = ["| figure | notebook, cell | plotting function |", "|---|---|---|"]
    for stem, doc in sorted(docs.items()):
        entries = doc.get("provenance", {}).get("figures", {})
        for fig in sorted(doc.get("figures", [])):
            e = entries.get(fig, {})
            nb = e.get("notebook", f"notebooks/{stem}.ipynb")
            cell = e.get("cell")
            fn = e.get("function")
            path = source_file(fn) if fn else None
            fn_text = "(not recorded)" if not fn else (f"[`{fn}`]({path})" if path else f"`{fn}`")
            lines.append(f"| [{fig}](figures/{fig}.png) | [{Path(nb).stem}]({nb}), cell "
                         f"{'?' if cell is None else cell} | {fn_text} |")
    return "\n".join(lines)
