"""The front door: ``import gftlib`` is cheap, every name in ``gftlib.__all__`` resolves to the object
its submodule defines, and the layering holds (no core module imports gftlib.experiments)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import gftlib

ROOT = Path(__file__).resolve().parents[2]
# The `gft` command (gftlib/cli, gftlib/__main__.py) sits on top, beside the notebooks: it may use
# gftlib.experiments (methods), the core may not.
TOP = ("experiments", "cli", "__main__.py")
CORE = sorted(p for p in (ROOT / "gftlib").rglob("*.py") if not set(TOP) & set(p.relative_to(ROOT).parts))


def _run(code: str) -> str:
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, capture_output=True,
                          text=True).stdout.strip()


def test_every_name_in_all_resolves_to_its_definition() -> None:
    assert 15 <= len(gftlib.__all__) <= 30 and len(set(gftlib.__all__)) == len(gftlib.__all__)
    for name in gftlib.__all__:
        obj = getattr(gftlib, name)
        module = __import__(gftlib._EXPORTS[name], fromlist=[name])
        assert obj is getattr(module, name), name
        assert name in getattr(module, "__all__", [name]), f"{name} is not public in {module.__name__}"
    assert set(gftlib.__all__) <= set(dir(gftlib))
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        gftlib.nope  # noqa: B018


def test_star_import_and_submodules_still_work() -> None:
    out = _run("from gftlib import *; from gftlib.training import loop as T; import gftlib; "
               "print(callable(T.train), gftlib.training.loop is T, Interpolant.__module__)")
    assert out == "True True gftlib.paths.interpolants"


def test_import_gftlib_is_lazy() -> None:
    # `import gftlib` must not pull in torch (3 s on a loaded machine); the first front-door name does
    out = _run("import sys, gftlib; a = 'torch' in sys.modules; gftlib.Interpolant; "
               "print(a, 'torch' in sys.modules, 'gftlib.experiments' in sys.modules)")
    assert out == "False True False"


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names |= {f"{node.module}.{a.name}" for a in node.names}
    return names


def test_core_never_imports_experiments() -> None:
    assert len(CORE) >= 15
    offenders = {str(p.relative_to(ROOT)): sorted(n for n in _imports(p)
                                                   if n.startswith("gftlib.experiments")) for p in CORE}
    assert {k: v for k, v in offenders.items() if v} == {}
    assert all(not m.startswith("gftlib.experiments") for m in gftlib._EXPORTS.values())
