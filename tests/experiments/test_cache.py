"""Tests of gftlib.experiments.cache: keys follow parameters and source code, entries are reused."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from gftlib.experiments import cache as C


@pytest.fixture
def fake_repo(tmp_path, monkeypatch):
    """A tree with gftlib/a.py, gftlib/sub/b.py and gftlib/c.py, used as the repository root."""
    pkg = tmp_path / "gftlib"
    (pkg / "sub").mkdir(parents=True)
    for rel in ("a.py", "sub/b.py", "c.py"):
        (pkg / rel).write_text(f"# {rel}\n")
    monkeypatch.setattr(C, "repo_root", lambda: tmp_path)
    return pkg


def test_key_follows_parameters(fake_repo):
    assert C.cache_key({"x": 1}, ["a.py"]) == C.cache_key({"x": 1}, ["a.py"])
    assert C.cache_key({"x": 1}, ["a.py"]) != C.cache_key({"x": 2}, ["a.py"])


def test_key_follows_the_named_modules_only(fake_repo: Path):
    named = C.cache_key({}, ["a.py", "sub"])
    (fake_repo / "c.py").write_text("# edited\n")
    assert C.cache_key({}, ["a.py", "sub"]) == named  # c.py is not named
    (fake_repo / "sub" / "b.py").write_text("# edited\n")
    assert C.cache_key({}, ["a.py", "sub"]) != named  # a folder covers its files


def test_all_modules_cover_every_file(fake_repo: Path):
    before = C.cache_key({}, C.ALL_MODULES)
    (fake_repo / "c.py").write_text("# edited\n")
    assert C.cache_key({}, C.ALL_MODULES) != before


def test_cached_torch_builds_once_and_reuses(fake_repo: Path, tmp_path: Path):
    calls = []

    def build():
        calls.append(1)
        return {"w": torch.arange(3.0)}

    first = C.cached_torch("thing", {"p": 1}, build, cache_dir=tmp_path / "cache")
    again = C.cached_torch("thing", {"p": 1}, build, cache_dir=tmp_path / "cache")
    assert len(calls) == 1 and torch.equal(first["w"], again["w"])
    (fake_repo / "a.py").write_text("# edited\n")  # any source edit invalidates (ALL_MODULES default)
    C.cached_torch("thing", {"p": 1}, build, cache_dir=tmp_path / "cache")
    assert len(calls) == 2
