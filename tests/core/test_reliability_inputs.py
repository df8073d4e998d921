"""Bad command-line input (the CLI part of the bad-input catalogue, tests/core/test_bad_inputs.py):
every value-taking argument of train_cli, run_notebooks, summary and benchmarks/run.py is rejected
before any work starts (exit code 2, nothing built or written) with a message naming the argument,
the value and what is allowed. A completeness test fails when a new argument has no entry."""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from gftlib.experiments import run_notebooks as RN
from gftlib.experiments import summary as S
from gftlib.experiments import train_cli as TC

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
from benchmarks import run as BR  # noqa: E402


@dataclass(frozen=True)
class Bad:
    flag: str          # the argument it exercises
    argv: tuple        # extra arguments; "{file}" / "{dir}" / "{missing}" are filled in per test
    value: str         # regex: the offending value in the message
    allowed: str       # regex: what is allowed


TRAIN_BASE = ("--task", "2d", "--steps", "3", "--device", "cpu", "--no-progress")
TRAIN = [
    Bad("--task", ("--task", "3d"), r"'3d'", r"'2d', 'images'"),
    Bad("--method", ("--method", "gft"), r"'gft'", r"'scratch'.*'gft-drift'"),
    Bad("--steps", ("--steps", "0"), r"\b0\b", r">= 1"),
    Bad("--steps", ("--steps", "ten"), r"'ten'", r"int"),
    Bad("--batch-size", ("--batch-size", "0"), r"\b0\b", r">= 1"),
    Bad("--seed", ("--seed", "-1"), r"-1", r">= 0"),
    Bad("--data-seed", ("--data-seed", "-2"), r"-2", r">= 0"),
    Bad("--dataset", ("--dataset", "moon"), r"'moon'", r"'moons'.*'checkerboard'"),
    Bad("--dataset", ("--task", "images", "--dataset", "moons"), r"'moons'", r"'natural', 'ihc'"),
    Bad("--n-data", ("--n-data", "0"), r"\b0\b", r">= 1"),
    Bad("--hidden", ("--hidden", "0"), r"\b0\b", r">= 1"),
    Bad("--depth", ("--depth", "0"), r"\b0\b", r">= 1"),
    Bad("--checkpoint-dir", ("--checkpoint-dir", "{file}"), r"a_file", r"must be a folder"),
    Bad("--checkpoint-every", ("--checkpoint-every", "0", "--checkpoint-dir", "{dir}"), r"\b0\b", r">= 1"),
    Bad("--checkpoint-every", ("--checkpoint-every", "5"), r"\b5\b", r"needs --checkpoint-dir"),
    Bad("--out", ("--out", "{dir}"), r"a_dir", r"must be a file path"),
    Bad("--history", ("--history", "{file}/h.json"), r"a_file/h\.json", r"under a folder"),
    Bad("--device", ("--device", "gpu"), r"'gpu'", r"'auto', 'cpu', 'cuda'"),
    Bad("--pretrained", ("--pretrained", "{missing}"), r"missing\.pt", r"existing weights file"),
    Bad("--beta0", ("--beta0", "-1"), r"-1", r">= 0"),
    Bad("--beta0", ("--beta0", "nan"), r"nan", r"finite number"),
    Bad("--schedule", ("--schedule", "cosin"), r"'cosin'", r"'cosine'"),
    Bad("--target-coupling", ("--target-coupling", "emd"), r"'emd'", r"'independent', 'ot', 'sinkhorn'"),
    Bad("--lr", ("--lr", "0"), r"\b0(\.0)?\b", r"> 0"),
    Bad("--ema-decay", ("--ema-decay", "1.0"), r"1\.0", r"< 1"),
    Bad("--grad-clip", ("--grad-clip", "inf"), r"inf", r"finite number"),
    Bad("--warmup-steps", ("--warmup-steps", "-1"), r"-1", r">= 0"),
    Bad("--log-every", ("--log-every", "0"), r"\b0\b", r">= 1"),
    Bad("--amp", ("--amp", "fp16"), r"'fp16'", r"'none', 'bf16'"),
]

RUN_NOTEBOOKS = [
    Bad("--profile", ("--profile", "quik"), r"'quik'", r"smoke, quick, paper"),
    Bad("--device", ("--device", "gpu"), r"'gpu'", r"'auto', 'cpu', 'cuda'"),
    Bad("--build", ("--build", "{file}"), r"a_file", r"must be a folder"),
    Bad("--figures", ("--figures", "{file}"), r"a_file", r"must be a folder"),
    Bad("--results", ("--results", "{file}"), r"a_file", r"must be a folder"),
    Bad("--jobs", ("--jobs", "0"), r"'0'", r"integer >= 1"),
]

SUMMARY = [
    Bad("--results", ("--results", "{missing}"), r"missing\.pt", r"existing folder"),
    Bad("--out", ("--out", "{dir}"), r"a_dir", r"must be a file path"),
    Bad("--readme", ("--readme", "{missing}"), r"missing\.pt", r"existing README file"),
]

BENCH = [
    Bad("--device", ("--device", "gpu"), r"'gpu'", r"'auto', 'cpu', 'cuda'"),
    Bad("--out-dir", ("--out-dir", "{file}"), r"a_file", r"must be a folder"),
    Bad("--machine", ("--machine", "///"), r"'///'", r"letter or digit"),
]


def _fill(argv: tuple, tmp: Path) -> list[str]:
    (tmp / "a_dir").mkdir(exist_ok=True)
    (tmp / "a_file").write_text("x")
    names = {"{file}": str(tmp / "a_file"), "{dir}": str(tmp / "a_dir"), "{missing}": str(tmp / "missing.pt")}
    out = []
    for a in argv:
        for key, value in names.items():
            a = a.replace(key, value)
        out.append(a)
    return out


def _rejected(main, argv: list[str], case: Bad, capsys) -> str:
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    checks = (("argument", re.escape(case.flag)), ("value", case.value), ("allowed", case.allowed))
    for what, pattern in checks:
        assert re.search(pattern, err), f"message lacks the {what} ({pattern!r}): {err!r}"
    return err


def _ids(cases: list[Bad]) -> list[str]:
    return [f"{c.flag}={c.argv[-1]}" if c.argv.count(c.flag) else c.flag for c in cases]


@pytest.mark.parametrize("case", TRAIN, ids=_ids(TRAIN))
def test_train_cli_rejects_before_any_work(case, tmp_path, monkeypatch, capsys):
    def no_work(*args, **kwargs):
        raise AssertionError("work started before the arguments were checked")

    monkeypatch.setattr(TC, "_data", no_work)
    monkeypatch.setattr(TC, "_model", no_work)
    monkeypatch.setattr(TC.D, "init_from_env", no_work)
    monkeypatch.chdir(tmp_path)
    argv = [*TRAIN_BASE, *_fill(case.argv, tmp_path)]
    _rejected(TC.main, argv, case, capsys)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_dir", "a_file"]  # nothing written
    assert not any((tmp_path / "a_dir").iterdir())


@pytest.mark.parametrize("case", RUN_NOTEBOOKS, ids=_ids(RUN_NOTEBOOKS))
def test_run_notebooks_rejects_before_any_kernel(case, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "papermill", None)  # importing papermill (a kernel) would fail
    nb = sorted((REPO / "notebooks").glob("*.ipynb"))[0]
    argv = [str(nb), "--build", str(tmp_path / "build"), *_fill(case.argv, tmp_path)]
    _rejected(RN.main, argv, case, capsys)
    assert not (tmp_path / "build").exists()


@pytest.mark.parametrize("case", SUMMARY, ids=_ids(SUMMARY))
def test_summary_rejects_before_writing(case, tmp_path, capsys):
    results = tmp_path / "results"
    results.mkdir()
    argv = ["--results", str(results), "--out", str(tmp_path / "s.md"), *_fill(case.argv, tmp_path)]
    _rejected(S.main, argv, case, capsys)
    assert not (tmp_path / "s.md").exists()


@pytest.mark.parametrize("case", BENCH, ids=_ids(BENCH))
def test_benchmarks_reject_before_running(case, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(BR, "run_benchmarks", lambda *a, **k: pytest.fail("benchmarks started"))
    _rejected(BR.main, ["--out-dir", str(tmp_path / "out"), *_fill(case.argv, tmp_path)], case, capsys)
    assert not (tmp_path / "out").exists()


def _value_options(parser) -> set[str]:
    """Long option strings of every argument that takes a value (flags like --compile take none)."""
    out = set()
    for action in parser._actions:
        if action.option_strings and action.nargs != 0 and action.dest != "help":
            out.add(max(action.option_strings, key=len))
    return out


def _parser_of(main, argv_ok: list[str] | None = None):
    import argparse

    seen = {}
    real = argparse.ArgumentParser.parse_args

    def capture(self, *args, **kwargs):
        seen["parser"] = self
        raise SystemExit(0)

    argparse.ArgumentParser.parse_args = capture
    try:
        with pytest.raises(SystemExit):
            main(argv_ok or [])
    finally:
        argparse.ArgumentParser.parse_args = real
    return seen["parser"]


def test_every_value_taking_argument_has_a_catalogue_entry():
    covered = {
        "train_cli": ({c.flag for c in TRAIN}, TC.build_parser()),
        "run_notebooks": ({c.flag for c in RUN_NOTEBOOKS} | {"--parameter"}, _parser_of(RN.main)),
        "summary": ({c.flag for c in SUMMARY}, _parser_of(S.main)),
        "benchmarks.run": ({c.flag for c in BENCH}, _parser_of(BR.main)),
    }
    # run_notebooks' --parameter (unknown names) and its positional notebooks (missing files) are in
    # tests/core/test_bad_inputs.py (test_cli_rejects_a_parameter_typo_..., ..._missing_notebook_...)
    for name, (flags, parser) in covered.items():
        missing = _value_options(parser) - flags
        assert not missing, f"{name}: no bad-input entry for {sorted(missing)}"
