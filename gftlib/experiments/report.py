"""What every notebook writes: figures (PNG + vector PDF) and one results JSON with its checks.

``results/<stem>.json`` holds the parameters actually used, the environment, the key numbers and a
list ``checks`` of ``{"name", "value", "threshold", "passed", ...}`` where each threshold comes from
the mathematics. The JSON has no timestamps or wall times, so the same seed on the same machine
gives an identical file. Output folders default to the repository's ``figures/`` and ``results/``;
the environment variables ``GFT_FIGURES_DIR`` / ``GFT_RESULTS_DIR`` redirect them (tests, smoke runs).
"""

from __future__ import annotations

import math
import os
import platform
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gftlib.io import atomic_savefig, atomic_write_json

__all__ = ["Check", "Report", "ChecksFailed", "repo_root", "environment_info", "to_jsonable"]

_OPS = {
    "<=": lambda v, t: v <= t,
    "<": lambda v, t: v < t,
    ">=": lambda v, t: v >= t,
    ">": lambda v, t: v > t,
}


class ChecksFailed(AssertionError):
    """Raised by :meth:`Report.finalize` when a mathematical check did not pass."""


def repo_root() -> Path:
    """The checkout that holds ``gftlib`` (figures/ and results/ live there)."""
    return Path(__file__).resolve().parents[2]


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


@dataclass
class Report:
    """Collects one notebook's parameters, numbers, checks and figures.

    Usage: ``report = Report("t3_convergence", params, device)``; ``report.check(...)``;
    ``report.savefig(fig, "kl")``; ``report.numbers["kl"] = ...``; last cell ``report.finalize()``.
    """

    stem: str
    parameters: dict[str, Any]
    device: torch.device | str | None = None
    numbers: dict[str, Any] = field(default_factory=dict)
    checks: list[Check] = field(default_factory=list)
    figures: list[str] = field(default_factory=list)

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

    def savefig(self, fig: Any, name: str) -> list[Path]:
        """Write ``figures/<stem>_<name>.png`` and ``.pdf`` atomically."""
        paths = []
        for ext in ("png", "pdf"):
            path = self.figures_dir / f"{self.stem}_{name}.{ext}"
            atomic_savefig(fig, path, metadata={"CreationDate": None} if ext == "pdf" else None)
            paths.append(path)
        self.figures.append(f"{self.stem}_{name}")
        return paths

    def as_dict(self) -> dict[str, Any]:
        return to_jsonable({
            "notebook": self.stem,
            "parameters": self.parameters,
            "environment": environment_info(self.device),
            "numbers": self.numbers,
            "checks": [c.as_dict() for c in self.checks],
            "all_checks_passed": all(c.passed for c in self.checks),
            "figures": sorted(set(self.figures)),
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
