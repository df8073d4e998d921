"""scripts/gpu_check.sh (issue 12, item 7) stays runnable while no GPU is there to run it: valid bash,
and every test file and helper it names exists (a moved test would otherwise break it silently)."""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "gpu_check.sh"


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_gpu_check_is_valid_bash() -> None:
    res = subprocess.run(["bash", "-n", str(SCRIPT)], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr


def test_gpu_check_names_existing_tests_and_helpers() -> None:
    text = SCRIPT.read_text()
    named = sorted(set(re.findall(r"tests/[\w/]+\.py", text)))
    assert named, "gpu_check.sh names no test file"
    missing = [p for p in named if not (ROOT / p).is_file()]
    assert not missing, f"gpu_check.sh names missing files {missing}"
    folders = re.findall(r"sys\.path\.insert\(0, '([\w/]+)'\)", text)
    for module, name in re.findall(r"from (test_\w+) import (\w+)", text):
        found = [ROOT / d / f"{module}.py" for d in folders if (ROOT / d / f"{module}.py").is_file()]
        assert found, f"gpu_check.sh imports {module}, which is in none of its sys.path folders {folders}"
        tree = ast.parse(found[0].read_text())
        defined = {n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
        assert name in defined, f"gpu_check.sh imports {name} from tests/{module}.py, which defines no such name"
    for target in re.findall(r"make -o \S+ (\w+)", text):
        assert re.search(rf"^{target}:", (ROOT / "Makefile").read_text(), re.M), target
