"""pytest plugin for scripts/stress.py: ``-p stress_repeat`` with ``GFT_STRESS_REPEAT=N`` runs every
collected test N times in a row (an extra parametrisation ``stressK``, K = 0 .. N-1)."""

from __future__ import annotations

import os

import pytest


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    count = int(os.environ.get("GFT_STRESS_REPEAT", "1"))
    if count > 1:
        metafunc.fixturenames.append("_stress_run")
        metafunc.parametrize("_stress_run", range(count), ids=[f"stress{k}" for k in range(count)])
