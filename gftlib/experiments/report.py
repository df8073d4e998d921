"""What every notebook writes: figures (PNG + vector PDF) and one results JSON with its checks.

``results/<stem>.json`` holds the parameters actually used, the environment, the key numbers and a
list ``checks`` of ``{"name", "value", "threshold", "passed", ...}`` where each threshold comes from
the mathematics. Output folders default to the repository's ``figures/`` and ``results/``;
the environment variables ``GFT_FIGURES_DIR`` / ``GFT_RESULTS_DIR`` redirect them (tests, smoke runs),
and ``GFT_FIGURE_FORMATS`` (default ``png,pdf``) selects the figure files written (:func:`figure_formats`).

Byte identity. The JSON has no timestamps, so the same seed on the same machine gives an identical
file, **except** for wall times, which only E1 records (training speed in seconds,
:mod:`gftlib.experiments.walltime`). They depend on the machine and its load, and every wall-time
number sits in exactly two places:

- ``numbers["wall_time"]`` (:data:`MACHINE_DEPENDENT_KEY`): every wall time a notebook records;
- the claim rows flagged ``"machine_dependent": true`` in ``numbers["claims"]`` (a wall-time metric).

:func:`machine_independent` drops exactly these; what remains is byte-identical for the same seed on
the same machine. Runs are cached, so a second run that loads them writes the same wall times (those
of their first computation); only recomputed runs change them. Verdicts are not in the JSON: they come
from :mod:`gftlib.experiments.summary`, whose Holm family includes the machine-dependent rows, so
the corrected p-values of *other* rows in ``results/summary.md`` can move with them too.

``provenance`` says, for every figure and every number key, the notebook, the cell and the gftlib
function(s) behind it (:mod:`gftlib.experiments.provenance`): a figure names the :func:`plotter`
that drew it, a number the functions declared with ``report.source(...)`` (or ``record(..., by=)``)
in the cell that set it.
"""

from __future__ import annotations

import math
import os
import platform
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gftlib.experiments.provenance import (current_cell, dotted_name, figure_function, locate_cell, names_of,
                                          repo_root)
from gftlib.io import atomic_savefig, atomic_write_json

__all__ = ["Check", "Report", "ChecksFailed", "repo_root", "environment_info", "to_jsonable",
           "MACHINE_DEPENDENT_KEY", "machine_independent"]

#: The key of ``numbers`` that holds every wall time of a results JSON (see the module docstring).
MACHINE_DEPENDENT_KEY = "wall_time"

_OPS = {
    "<=": lambda v, t: v <= t,
    "<": lambda v, t: v < t,
    ">=": lambda v, t: v >= t,
    ">": lambda v, t: v > t,
}


class ChecksFailed(AssertionError):
    """Raised by :meth:`Report.finalize` when a mathematical check did not pass."""


def to_jsonable(obj: Any) -> Any:
    """Convert tensors, numpy values and tuples to plain JSON types (floats rounded to 10 digits)."""
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, torch.Tensor):
        return to_jsonable(obj.detach().cpu().tolist())
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if isinstance(obj, (np.floating, float)):
        x = float(obj)
        if not math.isfinite(x):
            return str(x)
        return float(f"{x:.10g}")
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.bool_,)):
        return bool(obj)
    return obj


def machine_independent(doc: dict[str, Any]) -> dict[str, Any]:
    """A copy of a results JSON document without its machine-dependent parts: ``numbers["wall_time"]``
    and the claim rows flagged ``machine_dependent`` (in ``numbers["claims"]`` or a top-level
    ``claims``). Everything else is byte-identical for the same seed on the same machine."""
    out = dict(doc)
    numbers = dict(out.get("numbers") or {})
    numbers.pop(MACHINE_DEPENDENT_KEY, None)
    if isinstance(numbers.get("claims"), list):
        numbers["claims"] = [r for r in numbers["claims"] if not r.get("machine_dependent")]
    if "numbers" in out:
        out["numbers"] = numbers
    if isinstance(out.get("claims"), list):
        out["claims"] = [r for r in out["claims"] if not r.get("machine_dependent")]
    return out


#: CPU flags that decide which vector kernels torch / numpy use (so which rounding a result gets).
_VECTOR_FLAGS = re.compile(r"^(sse4_2|avx|avx2|fma|f16c|avx_vnni|avx512\w*|amx\w*)$")


def environment_info(device: torch.device | str | None = None) -> dict[str, Any]:
    """Library versions, the compute device the numbers came from, and the CPU that ran them.

    ``cpu``: ``model`` (/proc/cpuinfo "model name"), ``vector_isa`` (its flags among SSE4.2, AVX,
    AVX2, FMA, F16C, AVX-VNNI, AVX-512*, AMX*, sorted), ``torch_capability`` (the kernel set torch
    dispatches to, :func:`torch.backends.cpu.get_cpu_capability`, e.g. "AVX2") and ``threads``
    (torch's intra-op threads). All fixed for one machine and setting, so the same run on the same
    machine still writes a byte-identical file; a CPU with another vector ISA may round differently.
    """
    dev = torch.device(device) if device is not None else torch.device("cpu")
    if dev.type == "cuda":
        name = torch.cuda.get_device_name(dev)
    else:
        name = _cpu_model()
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "device": str(dev),
        "device_name": name,
        "cpu": {"model": _cpu_model(), "vector_isa": _vector_isa(),
                "torch_capability": torch.backends.cpu.get_cpu_capability(),
                "threads": torch.get_num_threads()},
    }


def _vector_isa() -> list[str]:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("flags"):
                    return sorted({f for f in line.split(":", 1)[1].split() if _VECTOR_FLAGS.match(f)})
    except OSError:
        pass
    return []


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


@dataclass(frozen=True)
class Check:
    """One numerical check: ``value <op> threshold``; ``reason`` says where the threshold comes from."""

    name: str
    value: float
    threshold: float
    op: str
    reason: str

    @property
    def passed(self) -> bool:
        return bool(math.isfinite(self.value) and _OPS[self.op](self.value, self.threshold))

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "value": self.value, "threshold": self.threshold, "op": self.op,
                "reason": self.reason, "passed": self.passed}


def _cell_key(cell: tuple[int, str] | None) -> int | None:
    """The execution count that scopes a ``report.source`` statement (``None`` outside IPython)."""
    return None if cell is None else cell[0]


class _Numbers(dict):
    """The report's ``numbers``: a dict that tells its report which keys are set, in which cell."""

    def __init__(self, owner: "Report", *args: Any, **kwargs: Any) -> None:
        super().__init__()
        self._owner = owner
        self.update(*args, **kwargs)

    def __setitem__(self, key: str, value: Any) -> None:
        super().__setitem__(key, value)
        self._owner._note_number(key)

    def update(self, *args: Any, **kwargs: Any) -> None:
        for k, v in dict(*args, **kwargs).items():
            self[k] = v

    def setdefault(self, key: str, default: Any = None) -> Any:
        if key not in self:
            self[key] = default
        return self[key]


#: Figure file formats a notebook may write; ``make figures`` writes the default, PNG and vector PDF.
FIGURE_FORMATS = ("png", "pdf", "svg")
DEFAULT_FIGURE_FORMATS = ("png", "pdf")
#: No creation dates, so that the same figure gives the same file.
_REPRODUCIBLE_METADATA = {"pdf": {"CreationDate": None}, "svg": {"Date": None}}


def figure_formats(value: str | None = None, *, name: str = "GFT_FIGURE_FORMATS") -> tuple[str, ...]:
    """The formats in ``value`` (comma-separated; default: ``$GFT_FIGURE_FORMATS``, else ``png,pdf``);
    ``name`` is what an error message calls the setting.

    Tests that only need a notebook's numbers (the paper-profile dry runs, the determinism test) set
    ``png``: the PDF's font embedding costs about twice the PNG's rendering.
    """
    raw = os.environ.get("GFT_FIGURE_FORMATS") if value is None else value
    if raw is None:
        return DEFAULT_FIGURE_FORMATS
    formats = tuple(f.strip().lower() for f in raw.split(","))
    if any(f not in FIGURE_FORMATS for f in formats) or len(set(formats)) != len(formats):  # "" -> ("",)
        raise ValueError(f"{name} must be a comma-separated list of distinct formats from "
                         f"{', '.join(FIGURE_FORMATS)}, got {raw!r}")
    return formats


@dataclass
class Report:
    """Collects one notebook's parameters, numbers, checks and figures.

    Usage: ``report = Report("t3_convergence", params, device)``; ``report.check(...)``;
    ``report.source(kl_divergence_quadrature)`` (for the rest of the cell, or as a ``with`` block);
    ``report.numbers["kl"] = ...``; ``report.savefig(plots.t3_convergence.kl_tv(...), "kl_tv")``;
    last cell ``report.finalize()``.
    """

    stem: str
    parameters: dict[str, Any]
    device: torch.device | str | None = None
    numbers: dict[str, Any] = field(default_factory=dict)
    checks: list[Check] = field(default_factory=list)
    figures: list[str] = field(default_factory=list)
    _sources: list[tuple[Any, list[str]]] = field(default_factory=list, init=False, repr=False)
    _number_prov: dict[str, tuple[Any, list[str]]] = field(default_factory=dict, init=False, repr=False)
    _figure_prov: dict[str, tuple[Any, str | None]] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        self.numbers = _Numbers(self, self.numbers)
        figure_formats()  # a bad GFT_FIGURE_FORMATS fails here, before the notebook's work

    @contextmanager
    def _scope(self, frame: tuple[Any, list[str]]) -> Iterator[None]:
        try:
            yield
        finally:
            if frame in self._sources:
                self._sources.remove(frame)

    def source(self, *fns: Callable[..., Any]) -> Any:
        """Declare the gftlib functions that compute the numbers set next.

        As a statement it holds for the rest of the current notebook cell (outside IPython: until
        the report ends); as ``with report.source(f, g):`` for the block. Returns the context manager.
        """
        if not fns:
            raise ValueError("source needs at least one function")
        frame = (_cell_key(current_cell()), names_of(fns))
        self._sources.append(frame)
        return self._scope(frame)

    def record(self, key: str, value: Any, *, by: Callable[..., Any] | tuple[Callable[..., Any], ...]) -> Any:
        """``numbers[key] = value`` with ``by`` (a function or a tuple of them) as its source; returns value."""
        fns = by if isinstance(by, tuple) else (by,)
        with self.source(*fns):
            self.numbers[key] = value
        return value

    def _note_number(self, key: str) -> None:
        cell = current_cell()
        here = _cell_key(cell)
        fns = sorted({n for k, names in self._sources if k == here for n in names})
        old = self._number_prov.get(key)
        if old is not None and _cell_key(old[0]) == here:  # set again in the same cell: keep both sources
            fns = sorted(set(fns) | set(old[1]))
        self._number_prov[key] = (cell, fns)

    @property
    def figures_dir(self) -> Path:
        return Path(os.environ.get("GFT_FIGURES_DIR", repo_root() / "figures"))

    @property
    def results_path(self) -> Path:
        return Path(os.environ.get("GFT_RESULTS_DIR", repo_root() / "results")) / f"{self.stem}.json"

    def check(self, name: str, value: float, threshold: float, *, op: str = "<=", reason: str) -> Check:
        """Record ``value <op> threshold`` (``op`` in <=, <, >=, >) and return the check."""
        if op not in _OPS:
            raise ValueError(f"op must be one of {sorted(_OPS)}, got {op!r}")
        c = Check(name=name, value=float(value), threshold=float(threshold), op=op, reason=reason)
        self.checks.append(c)
        return c

    def savefig(self, fig: Any, name: str, *, by: Callable[..., Any] | None = None) -> list[Path]:
        """Write ``figures/<stem>_<name>.png`` and ``.pdf`` (:func:`figure_formats`) atomically.

        The provenance names the :func:`~gftlib.experiments.provenance.plotter` that drew ``fig``;
        ``by`` names it for a figure drawn otherwise and must agree with the stamp if both exist.
        """
        function = figure_function(fig)
        if by is not None:
            named = dotted_name(by)
            if function is not None and function != named:
                raise ValueError(f"savefig({name!r}): by={named} but the figure was drawn by {function}")
            function = named
        paths = []
        for ext in figure_formats():
            path = self.figures_dir / f"{self.stem}_{name}.{ext}"
            atomic_savefig(fig, path, metadata=_REPRODUCIBLE_METADATA.get(ext))
            paths.append(path)
        self.figures.append(f"{self.stem}_{name}")
        self._figure_prov[f"{self.stem}_{name}"] = (current_cell(), function)
        return paths

    def notebook_path(self) -> Path | None:
        """The notebook file this report's cells come from (the kernel's folder, else ``notebooks/``)."""
        for path in (Path.cwd() / f"{self.stem}.ipynb", repo_root() / "notebooks" / f"{self.stem}.ipynb"):
            if path.is_file():
                return path
        return None

    def provenance(self) -> dict[str, Any]:
        """``{"figures": {name: {notebook, cell, cell_id, function}}, "numbers": {key: {..., functions}}}``."""
        path = self.notebook_path()
        if path is None:
            notebook = f"{self.stem}.ipynb"
        else:
            try:
                notebook = path.resolve().relative_to(repo_root()).as_posix()
            except ValueError:
                notebook = path.name
        located: dict[Any, dict[str, Any]] = {}

        def where(cell: Any) -> dict[str, Any]:
            if cell not in located:
                located[cell] = locate_cell(path, cell)
            return {"notebook": notebook, **located[cell]}

        figures = {n: {**where(c), "function": f} for n, (c, f) in sorted(self._figure_prov.items())}
        numbers = {k: {**where(c), "functions": fns} for k, (c, fns) in sorted(self._number_prov.items())
                   if k in self.numbers}
        return {"figures": figures, "numbers": numbers}

    def as_dict(self) -> dict[str, Any]:
        return to_jsonable({
            "notebook": self.stem,
            "parameters": self.parameters,
            "environment": environment_info(self.device),
            "numbers": self.numbers,
            "checks": [c.as_dict() for c in self.checks],
            "all_checks_passed": all(c.passed for c in self.checks),
            "figures": sorted(set(self.figures)),
            "provenance": self.provenance(),
        })

    def summary_table(self) -> str:
        """Plain-text table of the checks (for the notebook's last cell)."""
        rows = [f"{'check':48s} {'value':>12s}    {'threshold':>12s}  ok"]
        for c in self.checks:
            rows.append(f"{c.name[:48]:48s} {c.value:12.5g} {c.op:>3s} {c.threshold:12.5g}  "
                        f"{'yes' if c.passed else 'NO'}")
        return "\n".join(rows)

    def finalize(self) -> Path:
        """Write the results JSON atomically, then raise :class:`ChecksFailed` if any check failed.

        In a dry run (``parameters["dry_run"]``: a profile's code path at tiny sizes) a failed check
        is recorded and printed but does not raise: its thresholds assume the profile's sizes."""
        path = atomic_write_json(self.results_path, self.as_dict())
        failed = [c for c in self.checks if not c.passed]
        if failed:
            lines = "; ".join(f"{c.name}: {c.value:.5g} {c.op} {c.threshold:.5g} is false" for c in failed)
            if self.parameters.get("dry_run") is True:
                print(f"dry run, not evidence: {len(failed)} of {len(self.checks)} check(s) failed at the "
                      f"dry-run sizes: {lines}")
                return path
            raise ChecksFailed(f"{self.stem}: {len(failed)} check(s) failed: {lines}")
        return path
