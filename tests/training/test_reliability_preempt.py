"""Preemption: SIGTERM / SIGUSR1 checkpoint the update in progress, stop with exit code 75, and the
same command resumes bit-exactly (in-process, CLI subprocess, torchrun with 2 gloo ranks; CPU).

No test waits on the clock: in-process the objective signals its own process inside update k; the
subprocess tests hold the child inside update k on a pipe (tests/preempt_cli.py), send the signal,
then release it."""

from __future__ import annotations

import json
import os
import re
import select
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch

from gftlib.training import checkpoint as C
from gftlib.training.preemption import EXIT_PREEMPTED, PREEMPT_SIGNALS, PreemptionWatch, TrainingPreempted
from gftlib.training.config import TrainConfig
from gftlib.training.loop import train

from test_reliability_train import _cli, _env, _equal_states, _free_port
from train_helpers import ToyObjective, toy_data
from train_helpers import seeded_tiny_mlp as _model

torch.set_num_threads(1)
TESTS = Path(__file__).resolve().parents[1]  # the helper scripts


def _cfg(**kw) -> TrainConfig:
    base = dict(steps=12, lr=1e-2, device="cpu", progress=False, log_every=4)
    base.update(kw)
    return TrainConfig(**base)


class SignalAt(ToyObjective):
    """Sends ``sig`` to this process inside update ``at`` (before the forward pass)."""

    def __init__(self, *args, at: int, sig: int, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.at, self.sig, self.n = at, sig, 0

    def loss(self, model, beta, generator):
        self.n += 1
        if self.n == self.at:
            os.kill(os.getpid(), self.sig)  # delivered to this (main) thread before kill returns
        return super().loss(model, beta, generator)


# ----------------------------------------------------------------------------------------- in process
@pytest.mark.parametrize("sig", PREEMPT_SIGNALS, ids=lambda s: s.name)
def test_signal_checkpoints_the_update_in_progress_and_resumes_exactly(tmp_path, sig):
    data = toy_data()
    ref = train(_model(), ToyObjective(data, 16), _cfg())
    cfg = _cfg(checkpoint_every=4, checkpoint_dir=tmp_path)
    before = {s: signal.getsignal(s) for s in PREEMPT_SIGNALS}
    expected = rf"{sig.name} after step 7: checkpoint .*ckpt_00000007"
    with pytest.raises(TrainingPreempted, match=expected) as info:
        train(_model(), SignalAt(data, 16, at=7, sig=sig), cfg)
    assert {s: signal.getsignal(s) for s in PREEMPT_SIGNALS} == before  # handlers restored
    assert info.value.step == 7 and info.value.signal_name == sig.name
    assert [p.name for p in C.list_checkpoints(tmp_path)] == ["ckpt_00000004.pt", "ckpt_00000007.pt"]
    res = train(_model(), ToyObjective(data, 16), cfg)
    assert res.resumed_from == 7
    assert _equal_states(res.model.state_dict(), ref.model.state_dict())
    assert _equal_states(res.ema_model.state_dict(), ref.ema_model.state_dict())
    assert res.history == ref.history  # the open log interval (steps 5..8) was carried over


def test_signal_without_checkpoint_dir_stops_and_says_nothing_was_saved():
    with pytest.raises(TrainingPreempted, match="nothing was saved") as info:
        train(_model(), SignalAt(toy_data(), 16, at=3, sig=signal.SIGTERM), _cfg())
    assert info.value.step == 3 and info.value.checkpoint is None


def test_signal_in_the_last_update_just_finishes(tmp_path):
    res = train(_model(), SignalAt(toy_data(), 16, at=12, sig=signal.SIGTERM),
                _cfg(checkpoint_dir=tmp_path))
    assert res.history[-1]["step"] == 12 and res.last_checkpoint.endswith("ckpt_00000012.pt")


def test_handlers_restored_after_a_normal_return_and_after_an_error():
    sentinel = lambda signum, frame: None  # noqa: E731
    old = signal.signal(signal.SIGUSR1, sentinel)
    try:
        train(_model(), ToyObjective(toy_data(), 16), _cfg(steps=3))
        assert signal.getsignal(signal.SIGUSR1) is sentinel
        with pytest.raises(RuntimeError, match="simulated"):
            train(_model(), ToyObjective(toy_data(), 16, fail_at=2), _cfg(steps=3))
        assert signal.getsignal(signal.SIGUSR1) is sentinel
    finally:
        signal.signal(signal.SIGUSR1, old)


def test_no_handlers_outside_the_main_thread():
    seen = {}

    def worker() -> None:
        with PreemptionWatch() as watch:
            seen["installed"] = watch.installed
            seen["handler"] = signal.getsignal(signal.SIGTERM)
        train(_model(), ToyObjective(toy_data(), 16), _cfg(steps=2))  # works, installs nothing
        seen["done"] = True

    before = signal.getsignal(signal.SIGTERM)
    thread = threading.Thread(target=worker)
    thread.start()
    thread.join()
    assert seen == {"installed": False, "handler": before, "done": True}


# ----------------------------------------------------------------------------------------- subprocesses
class Pipes:
    """The named pipes of tests/preempt_cli.py: one report pipe, one go pipe per rank (held open)."""

    def __init__(self, root: Path, ranks: int) -> None:
        root.mkdir()
        self.root, self.report = root, root / "report"
        os.mkfifo(self.report)
        self.report_fd = os.open(self.report, os.O_RDWR)  # never EOF, never blocks the writers
        self.go_fds = []
        for r in range(ranks):
            os.mkfifo(root / f"go.{r}")
            self.go_fds.append(os.open(root / f"go.{r}", os.O_RDWR))
        self._buffer = b""

    def blocked(self, n: int, procs: list[subprocess.Popen]) -> dict[int, tuple[int, int]]:
        """Wait for ``n`` ``BLOCKED`` lines: {rank: (step, pid)}. Returns early (incomplete) only if
        every process in ``procs`` has died (the pipe stays open, so check that with poll())."""
        found: dict[int, tuple[int, int]] = {}
        while len(found) < n:
            while b"\n" not in self._buffer:
                ready, _, _ = select.select([self.report_fd], [], [], 1.0)  # 1 s: how often to look
                if ready:
                    self._buffer += os.read(self.report_fd, 4096)
                elif all(p.poll() is not None for p in procs):
                    return found
            line, self._buffer = self._buffer.split(b"\n", 1)
            _, rank, step, pid = line.decode().split()
            found[int(rank)] = (int(step), int(pid))
        return found

    def go(self, rank: int, word: str) -> None:
        os.write(self.go_fds[rank], f"{word}\n".encode())

    def close(self) -> None:
        for fd in [self.report_fd, *self.go_fds]:
            os.close(fd)


COMMON = ["--task", "2d", "--method", "scratch", "--steps", "60", "--batch-size", "64", "--seed", "3",
          "--hidden", "32", "--device", "cpu", "--no-progress", "--log-every", "10", "--n-data", "512",
          "--warmup-steps", "5"]


@pytest.mark.slow
@pytest.mark.parametrize("sig", PREEMPT_SIGNALS, ids=lambda s: s.name)
def test_cli_exits_75_on_a_signal_and_the_same_command_resumes_bit_exactly(tmp_path, sig):
    stop_at = 37
    ref_out, out, ck = tmp_path / "ref.pt", tmp_path / "out.pt", tmp_path / "ck"
    resumable = [*COMMON, "--checkpoint-dir", str(ck), "--checkpoint-every", "25", "--out", str(out)]
    ref = subprocess.Popen(_cli(*COMMON, "--out", str(ref_out)), env=_env(), cwd=tmp_path,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    pipes = Pipes(tmp_path / "pipes", 1)
    victim = subprocess.Popen([sys.executable, str(TESTS / "preempt_cli.py"), str(stop_at), str(pipes.report),
                               str(pipes.root), "--", *resumable], env=_env(), cwd=tmp_path,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        blocked = pipes.blocked(1, [victim])
        assert list(blocked) == [0], victim.communicate()[1][-4000:]
        step, pid = blocked[0]
        assert step == stop_at and pid == victim.pid
        victim.send_signal(sig)
        pipes.go(0, "sig")
        stdout, stderr = victim.communicate(timeout=600)
    finally:
        pipes.close()
    assert victim.returncode == EXIT_PREEMPTED, stderr
    assert f"preempted by {sig.name} after step {stop_at}" in stderr
    assert json.loads(stdout.strip().splitlines()[-1]) == {
        "preempted": sig.name, "step": stop_at, "checkpoint": str(ck / f"ckpt_{stop_at:08d}.pt")}
    assert [p.name for p in C.list_checkpoints(ck)] == ["ckpt_00000025.pt", f"ckpt_{stop_at:08d}.pt"]
    assert not out.exists()  # a preempted run writes no final weights

    done = subprocess.run(_cli(*resumable), env=_env(), cwd=tmp_path, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1])["resumed_from"] == stop_at
    assert ref.wait(timeout=600) == 0, ref.stderr.read()
    a, b = torch.load(out, weights_only=True), torch.load(ref_out, weights_only=True)
    assert _equal_states(a["model"], b["model"]) and _equal_states(a["ema"], b["ema"])
    assert a["history"] == b["history"]


def _torchrun(*args: str) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port",
            str(_free_port()), *args]


@pytest.mark.slow
def test_torchrun_signal_to_one_rank_stops_every_rank_at_the_same_step(tmp_path):
    """SIGTERM reaches rank 1 only, inside update 23: both ranks agree (collective) to stop after
    update 23, rank 0 writes that checkpoint, every rank exits 75; torchrun resumes bit-exactly."""
    stop_at = 23
    args = [*COMMON[:5], "40", *COMMON[6:], "--checkpoint-every", "10", "--per-rank-out"]
    ref_ck, ck = tmp_path / "ref_ck", tmp_path / "ck"
    ref = subprocess.Popen(_torchrun("-m", "gftlib.experiments.train_cli", *args, "--checkpoint-dir",
                                     str(ref_ck), "--out", str(tmp_path / "ref.pt")),
                           env=_env(), cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           text=True)
    resumable = [*args, "--checkpoint-dir", str(ck), "--out", str(tmp_path / "w.pt")]
    pipes = Pipes(tmp_path / "pipes", 2)
    victim = subprocess.Popen(_torchrun(str(TESTS / "preempt_cli.py"), str(stop_at), str(pipes.report),
                                        str(pipes.root), "--", *resumable),
                              env=_env(), cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True)
    try:
        ranks = pipes.blocked(2, [victim])
        assert sorted(ranks) == [0, 1], victim.communicate()[1][-4000:]
        assert sorted(ranks) == [0, 1] and all(step == stop_at for step, _ in ranks.values())
        os.kill(ranks[1][1], signal.SIGTERM)
        pipes.go(1, "sig")
        pipes.go(0, "go")
        stdout, stderr = victim.communicate(timeout=600)
    finally:
        pipes.close()
    assert victim.returncode != 0 and re.search(r"exitcode\s*:\s*75\b", stderr), stderr[-4000:]
    assert [p.name for p in C.list_checkpoints(ck)] == ["ckpt_00000020.pt", f"ckpt_{stop_at:08d}.pt"]
    state = C.load_checkpoint(C.latest_checkpoint(ck))
    assert state["step"] == stop_at and state["world_size"] == 2 and len(state["rng"]) == 2
    assert not list(tmp_path.glob("w.rank*.pt"))

    done = subprocess.run(_torchrun("-m", "gftlib.experiments.train_cli", *resumable), env=_env(),
                          cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    assert json.loads(done.stdout.strip().splitlines()[-1])["resumed_from"] == stop_at
    assert ref.wait(timeout=600) == 0, ref.stderr.read()[-4000:]
    for r in (0, 1):
        a = torch.load(tmp_path / f"w.rank{r}.pt", weights_only=True)
        b = torch.load(tmp_path / f"ref.rank{r}.pt", weights_only=True)
        assert _equal_states(a["model"], b["model"]) and _equal_states(a["ema"], b["ema"]), r
        assert a["history"] == b["history"]
