"""Reliability of files: corrupt or partial checkpoints fall back to the previous good one, failed
writes (ENOSPC mid-write) keep the previous file and leave no temporary, and two runs on one
directory are refused (an OS lock the kernel releases when its holder dies)."""

from __future__ import annotations

import errno
import warnings
from pathlib import Path

import pytest
import torch

from gftlib import checkpoint as C
from gftlib.train import TrainConfig, train

from train_helpers import TinyMLP, ToyObjective, toy_data

torch.set_num_threads(1)


def _model() -> TinyMLP:
    torch.manual_seed(0)
    return TinyMLP()


def _cfg(**kw) -> TrainConfig:
    base = dict(steps=12, lr=1e-2, device="cpu", progress=False, log_every=4)
    base.update(kw)
    return TrainConfig(**base)


def _equal_states(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


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
