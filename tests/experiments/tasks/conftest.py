"""Fixtures of the task tests: every test gets its own cache folder; an Inception-like TorchScript file."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch

from image_fakes import FakeInception


@pytest.fixture
def inception_file(tmp_path: Path) -> Path:
    """A TorchScript file with the NVlabs calling convention (torch.jit.script is deprecated, not gone)."""
    path = tmp_path / "inception-2015-12-05.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.script(FakeInception()).save(str(path))
    return path


@pytest.fixture(autouse=True)
def _cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GFT_CACHE_DIR", str(tmp_path / "cache"))
