"""Reliability of files: corrupt or partial checkpoints fall back to the previous good one, failed
writes (ENOSPC mid-write) keep the previous file and leave no temporary, and two runs on one
directory are refused (an OS lock the kernel releases when its holder dies)."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

from gftlib.training import checkpoint as C
from gftlib.locking import LOCK_NAME, DirectoryBusy, DirectoryLock
from gftlib.training.config import TrainConfig
from gftlib.training.loop import train

from train_helpers import ToyObjective, toy_data
from train_helpers import equal_states as _equal_states, seeded_tiny_mlp as _model

torch.set_num_threads(1)
REPO = Path(__file__).resolve().parents[2]


def _cfg(**kw) -> TrainConfig:
    base = dict(steps=12, lr=1e-2, device="cpu", progress=False, log_every=4)
    base.update(kw)
    return TrainConfig(**base)


# ----------------------------------------------------------------------------------------- corrupt files
def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _garbage_with_matching_checksum(path: Path) -> None:
    """Garbage whose checksum file agrees: only the failed load can catch it."""
    path.write_bytes(b"\x00garbage" * 100)
    C._sum_path(path).write_text(C._sha256(path) + "\n")


def _flip_a_weight_byte(path: Path) -> None:
    """One flipped byte in the tensor data: torch.load still succeeds; only the checksum catches it."""
    data = bytearray(path.read_bytes())
    tensor = data.find(b"data/0")  # the zip member of the first tensor storage
    assert tensor > 0
    data[tensor + 200] ^= 0xFF
    path.write_bytes(bytes(data))
    torch.load(path, weights_only=False)  # still loads


def _legacy_truncated(path: Path) -> None:
    """A checkpoint without a checksum file (older gftlib), truncated: the failed load catches it."""
    C._sum_path(path).unlink()
    _truncate(path)


@pytest.mark.parametrize("damage", [_truncate, _garbage_with_matching_checksum, _flip_a_weight_byte,
                                    _legacy_truncated], ids=["truncated", "garbage", "bit-flip", "no-sum"])
def test_corrupt_newest_checkpoint_is_reported_and_resume_falls_back(tmp_path, damage):
    data = toy_data()
    ref = train(_model(), ToyObjective(data, 16), _cfg())
    cfg = _cfg(checkpoint_every=4, checkpoint_dir=tmp_path)
    with pytest.raises(RuntimeError, match="simulated"):
        train(_model(), ToyObjective(data, 16, fail_at=11), cfg)
    newest = tmp_path / "ckpt_00000008.pt"
    assert C.latest_checkpoint(tmp_path) == newest
    damage(newest)
    with pytest.warns(C.CorruptCheckpointWarning, match=rf"skipping checkpoint '{newest}'"):
        res = train(_model(), ToyObjective(data, 16), cfg)
    assert res.resumed_from == 4
    assert _equal_states(res.model.state_dict(), ref.model.state_dict())
    assert _equal_states(res.ema_model.state_dict(), ref.ema_model.state_dict())
    assert res.history == ref.history
    assert (tmp_path / "ckpt_00000008.pt.corrupt").exists()  # kept for inspection, out of the rotation
    assert [p.name for p in C.list_checkpoints(tmp_path)] == ["ckpt_00000008.pt", "ckpt_00000012.pt"]


def test_checksum_names_the_file_and_every_bad_one_is_reported(tmp_path, capsys):
    for step in (1, 2, 3):
        C.save_checkpoint({"v": step}, tmp_path, step, keep=3)
    _truncate(tmp_path / "ckpt_00000003.pt")
    second = tmp_path / "ckpt_00000002.pt"
    second.write_bytes(second.read_bytes()[:-1] + b"?")
    with pytest.raises(ValueError, match=r"checkpoint '.*ckpt_00000002\.pt' is corrupt: its SHA-256"):
        C.verify_checkpoint(tmp_path / "ckpt_00000002.pt")
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        path, state, bad = C.latest_good_checkpoint(tmp_path)
    assert path == tmp_path / "ckpt_00000001.pt" and state["v"] == 1
    assert bad == [tmp_path / "ckpt_00000003.pt", tmp_path / "ckpt_00000002.pt"]
    assert len(seen) == 2 and all(issubclass(w.category, C.CorruptCheckpointWarning) for w in seen)
    err = capsys.readouterr().err
    assert str(tmp_path / "ckpt_00000003.pt") in err and str(tmp_path / "ckpt_00000002.pt") in err
    for p in bad:
        C.quarantine(p)
    assert [p.name for p in C.list_checkpoints(tmp_path)] == ["ckpt_00000001.pt"]
    assert C.latest_good_checkpoint(tmp_path / "missing") == (None, None, [])


def test_training_needs_at_least_two_checkpoints_kept():
    with pytest.raises(ValueError, match=r"keep_checkpoints must be an integer >= 2, got 1"):
        _cfg(keep_checkpoints=1)


# ----------------------------------------------------------------------------------------- full disk
class FullDisk:
    """Patch ``open`` so that writes to files under ``root`` fail with ENOSPC once ``budget`` bytes
    are written in all (the write that crosses the budget writes its allowed part first: a partial
    file, as on a real full disk). Files outside ``root`` are untouched."""

    def __init__(self, monkeypatch, root: Path, budget: int) -> None:
        import builtins

        self.root, self.left, self.failures = str(root), budget, 0
        real_open = builtins.open
        disk = self

        class Quota:
            def __init__(self, fh) -> None:
                self._fh = fh

            def write(self, data):
                if len(data) <= disk.left:
                    disk.left -= len(data)
                    return self._fh.write(data)
                self._fh.write(data[: disk.left])
                disk.left = 0
                disk.failures += 1
                raise OSError(errno.ENOSPC, "No space left on device")

            def __enter__(self):
                return self

            def __exit__(self, *exc):
                self._fh.close()

            def __iter__(self):
                return iter(self._fh)

            def __getattr__(self, name):
                return getattr(self._fh, name)

        def fake_open(file, mode="r", *args, **kwargs):
            fh = real_open(file, mode, *args, **kwargs)
            writing = any(c in mode for c in "wax+")
            if writing and isinstance(file, (str, Path)) and str(file).startswith(disk.root):
                return Quota(fh)
            return fh

        monkeypatch.setattr(builtins, "open", fake_open)


def _listing(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


def _half_then_enospc(monkeypatch) -> None:
    """torch.save writes half of the real serialisation to the (temporary) file, then ENOSPC."""
    import io as _io

    real = torch.save

    def save(obj, f, *args, **kwargs):
        buffer = _io.BytesIO()
        real(obj, buffer, *args, **kwargs)
        Path(f).write_bytes(buffer.getvalue()[: buffer.tell() // 2])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", save)


def test_full_disk_while_writing_a_checkpoint(tmp_path, monkeypatch):
    C.save_checkpoint({"v": 1}, tmp_path, 1)
    before = _listing(tmp_path)
    _half_then_enospc(monkeypatch)
    for step in (2, 1):  # a new step, and overwriting the existing one
        target = tmp_path / f"ckpt_{step:08d}.pt"
        with pytest.raises(OSError, match=rf"could not write {target} \(No space left on device\)") as info:
            C.save_checkpoint({"v": 2}, tmp_path, step)
        assert info.value.errno == errno.ENOSPC and info.value.filename == str(target)
    monkeypatch.undo()
    assert _listing(tmp_path) == before  # previous checkpoint intact, no temporary or checksum file
    assert C.load_checkpoint(tmp_path / "ckpt_00000001.pt")["v"] == 1


def test_full_disk_during_training_names_the_checkpoint(tmp_path, monkeypatch):
    cfg = _cfg(steps=8, checkpoint_every=4, checkpoint_dir=tmp_path)
    real = torch.save
    calls = {"n": 0}

    def save(obj, f, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            real(obj, f, *args, **kwargs)
            Path(f).write_bytes(Path(f).read_bytes()[:100])
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save)
    with pytest.raises(OSError, match=rf"could not write {tmp_path / 'ckpt_00000008.pt'}"):
        train(_model(), ToyObjective(toy_data(), 16), cfg)
    monkeypatch.undo()
    names = sorted(p.name for p in tmp_path.iterdir() if p.name != ".gftlib.lock")
    assert names == ["ckpt_00000004.pt", "ckpt_00000004.pt.sha256"]
    C.verify_checkpoint(tmp_path / "ckpt_00000004.pt")


def _figure():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(2, 2))
    ax.plot([0, 1], [0, 1])
    ax.set_xlabel("x")
    ax.set_ylabel("y")
    return fig


@pytest.mark.parametrize("budget", [0, 100], ids=["at-once", "mid-write"])
def test_full_disk_while_saving_a_figure(tmp_path, monkeypatch, budget):
    from gftlib.experiments.report import Report

    monkeypatch.setenv("GFT_FIGURES_DIR", str(tmp_path))
    report = Report("t0_demo", {"seed": 0})
    fig = _figure()
    report.savefig(fig, "plot")
    before = _listing(tmp_path)
    assert sorted(before) == ["t0_demo_plot.pdf", "t0_demo_plot.png"]
    disk = FullDisk(monkeypatch, tmp_path, budget)
    with pytest.raises(OSError, match=rf"could not write {tmp_path / 't0_demo_plot.png'}") as info:
        report.savefig(_figure(), "plot")
    assert info.value.errno == errno.ENOSPC and disk.failures == 1
    monkeypatch.undo()
    assert _listing(tmp_path) == before


@pytest.mark.parametrize("budget", [0, 50], ids=["at-once", "mid-write"])
def test_full_disk_while_writing_the_results_json(tmp_path, monkeypatch, budget):
    from gftlib.experiments.report import Report

    monkeypatch.setenv("GFT_RESULTS_DIR", str(tmp_path))
    monkeypatch.setenv("GFT_FIGURES_DIR", str(tmp_path / "fig"))
    first = Report("t0_demo", {"seed": 0})
    first.numbers["x"] = 1.0
    first.finalize()
    before = _listing(tmp_path)
    second = Report("t0_demo", {"seed": 1})
    second.numbers["x"] = 2.0
    disk = FullDisk(monkeypatch, tmp_path, budget)
    with pytest.raises(OSError, match=rf"could not write {tmp_path / 't0_demo.json'}") as info:
        second.finalize()
    assert info.value.errno == errno.ENOSPC and disk.failures == 1
    monkeypatch.undo()
    assert _listing(tmp_path) == before


# ----------------------------------------------------------------------------------------- one run per dir
def _holder(directory: Path) -> subprocess.Popen:
    """A child that holds ``directory``'s lock and blocks on a stdin pipe we hold (never written)."""
    code = ("import sys\nfrom gftlib.locking import DirectoryLock\n"
            f"lock = DirectoryLock({str(directory)!r}).acquire()\n"
            "print('HELD', flush=True)\nsys.stdin.read()\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    child = subprocess.Popen([sys.executable, "-c", code], env=env, stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = child.stdout.readline()  # returns once the lock is held (or the child died: empty)
    assert line.strip() == "HELD", child.stderr.read()
    return child


def _kill(child: subprocess.Popen) -> None:
    child.send_signal(signal.SIGKILL)
    child.wait()
    child.stdin.close()


def test_second_training_run_on_a_held_directory_is_refused(tmp_path):
    ck = tmp_path / "ck"
    obj = ToyObjective(toy_data(), 16)
    with DirectoryLock(ck):
        with pytest.raises(DirectoryBusy, match=rf"checkpoint_dir '{ck}' is in use by another run "
                                                rf"\(pid {os.getpid()}: .*\)"):
            train(_model(), obj, _cfg(checkpoint_dir=ck))
    assert obj.calls == 0 and C.list_checkpoints(ck) == []
    res = train(_model(), obj, _cfg(checkpoint_dir=ck))  # released: runs
    assert res.history[-1]["step"] == 12


def test_a_killed_holder_leaves_no_stale_lock(tmp_path):
    ck = tmp_path / "ck"
    child = _holder(ck)
    try:
        with pytest.raises(DirectoryBusy, match=rf"pid {child.pid}\b"):
            train(_model(), ToyObjective(toy_data(), 16), _cfg(checkpoint_dir=ck))
    finally:
        _kill(child)  # SIGKILL: no cleanup code runs in the child; the kernel drops its flock
    assert (ck / LOCK_NAME).exists()
    res = train(_model(), ToyObjective(toy_data(), 16), _cfg(checkpoint_dir=ck))
    assert res.history[-1]["step"] == 12


def test_train_cli_is_refused_while_another_run_holds_the_directory(tmp_path):
    ck = tmp_path / "ck"
    child = _holder(ck)
    try:
        from gftlib.experiments import train_cli

        args = ["--task", "2d", "--steps", "3", "--batch-size", "16", "--n-data", "64", "--hidden", "8",
                "--device", "cpu", "--no-progress", "--checkpoint-dir", str(ck)]
        done = subprocess.run([sys.executable, "-m", "gftlib.experiments.train_cli", *args],
                              env=dict(os.environ, PYTHONPATH=str(REPO)), capture_output=True, text=True)
        assert done.returncode == 1
        assert f"REFUSED: checkpoint_dir '{ck}' is in use by another run (pid {child.pid}" in done.stderr
        assert C.list_checkpoints(ck) == []
    finally:
        _kill(child)
    assert train_cli.main(args) == 0 and [p.name for p in C.list_checkpoints(ck)] == ["ckpt_00000003.pt"]


def test_second_run_notebooks_on_the_same_folders_is_refused(tmp_path, monkeypatch, capsys):
    import types

    from gftlib.experiments import run_notebooks as RN

    executed: list[str] = []
    fake = types.ModuleType("papermill")
    fake.PapermillExecutionError = RuntimeError
    fake.execute_notebook = lambda src, out, **kw: executed.append(Path(src).name)
    monkeypatch.setitem(sys.modules, "papermill", fake)
    nb = sorted((REPO / "notebooks").glob("*.ipynb"))[0]
    folders = {"--build": tmp_path / "build", "--figures": tmp_path / "fig", "--results": tmp_path / "res"}
    argv = [str(nb), "--profile", "smoke", "--device", "cpu",
            *[x for flag, path in folders.items() for x in (flag, str(path))]]
    for held in folders.values():
        child = _holder(held)
        try:
            assert RN.main(argv) == 1
            err = capsys.readouterr().err
            assert f"REFUSED: output folder '{held}' is in use by another run (pid {child.pid}" in err
            assert executed == []
        finally:
            _kill(child)
    assert RN.main(argv) == 0 and executed == [nb.name]  # every holder was killed: no stale lock
    monkeypatch.delenv("GFT_FIGURES_DIR", raising=False)
    monkeypatch.delenv("GFT_RESULTS_DIR", raising=False)
    assert RN.output_directories("b", None, None) == [Path("b"), REPO / "figures", REPO / "results"]
    monkeypatch.setenv("GFT_RESULTS_DIR", str(tmp_path / "elsewhere"))
    assert RN.output_directories("b", None, None)[2] == tmp_path / "elsewhere"
