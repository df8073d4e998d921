"""Run the training command, but hold every rank inside update STEP until the parent says go.

Usage: ``python tests/preempt_cli.py STEP REPORT_FIFO GO_DIR -- ARGS...`` (also as a torchrun script).

Inside update STEP (in the objective's ``loss``, before the forward pass) the rank writes
``BLOCKED <rank> <STEP> <pid>`` to the named pipe REPORT_FIFO and reads ``GO_DIR/go.<rank>``, a named
pipe the parent holds. The parent sends its signal(s) and then writes ``go`` (carry on) or ``sig``
(carry on once this rank's preemption handler has recorded the signal the parent sent it: Python
runs handlers at the next bytecode boundary of the main thread, and the kernel may hand the signal
to another thread first, so the rank waits for the record rather than for any amount of time). So the
signal lands in update STEP on any machine, however fast or slow; no test that uses this waits on
the clock. EOF on the go pipe means the parent died: the rank stops.
"""

from __future__ import annotations

import os
import sys
import time

import gftlib.training.loop as train_module
from gftlib.training import preemption
from gftlib.experiments import train_cli


def _hold(step: int, report: str, go_dir: str) -> None:
    rank = int(os.environ.get("RANK", "0"))
    fd = os.open(report, os.O_WRONLY)  # the parent keeps it open for reading: this never blocks
    os.write(fd, f"BLOCKED {rank} {step} {os.getpid()}\n".encode())
    os.close(fd)
    go = os.open(os.path.join(go_dir, f"go.{rank}"), os.O_RDONLY)
    word = b""
    while not word.endswith(b"\n"):
        chunk = os.read(go, 1)
        if not chunk:
            raise SystemExit(f"preempt_cli: the parent closed the go pipe of rank {rank}")
        word += chunk
    os.close(go)
    if word.strip() == b"sig":
        while preemption.active_request() is None:  # the signal was sent; wait for its handler
            time.sleep(0.001)


def main() -> int:
    step, report, go_dir = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    if sys.argv[4] != "--":
        raise SystemExit("usage: preempt_cli.py STEP REPORT_FIFO GO_DIR -- ARGS...")
    real_train = train_module.train

    def train(model, objective, config, **kwargs):
        real_loss = objective.loss
        calls = {"n": 0}

        def loss(*args, **kw):
            calls["n"] += 1  # a fresh run: call n is update n
            if calls["n"] == step:
                _hold(step, report, go_dir)
            return real_loss(*args, **kw)

        objective.loss = loss
        return real_train(model, objective, config, **kwargs)

    train_cli.train = train
    return train_cli.main(sys.argv[5:])


if __name__ == "__main__":
    sys.exit(main())
