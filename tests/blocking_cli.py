"""Run the training command, but stop dead at a chosen checkpoint until the parent kills it.

Usage: ``python tests/blocking_cli.py STEP WHEN -- ARGS...`` where ``WHEN`` is

- ``after``: the checkpoint of ``STEP`` is written completely, then the process blocks;
- ``during``: the checkpoint of ``STEP`` is half written (a partial temporary file exists, the
  final name does not), then the process blocks.

When it blocks, the process prints ``BLOCKED <STEP>`` on stdout and reads its stdin, a pipe the
parent holds open and never writes to: the run can make no further progress, so a parent that kills
it after reading that line kills it at exactly that point, however fast or slow the machine is. No
test that uses this helper waits on the clock.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

import gftlib.training.checkpoint as checkpoint_module
import gftlib.training.state as state_module
from gftlib.experiments import train_cli


def _block(step: int) -> None:
    print(f"BLOCKED {step}", flush=True)
    sys.stdin.read()  # the parent never writes and kills us; EOF means the parent died: stop too
    raise SystemExit(f"blocking_cli: parent closed stdin while blocked at step {step}")


def main() -> int:
    step, when = int(sys.argv[1]), sys.argv[2]
    if when not in ("after", "during") or sys.argv[3] != "--":
        raise SystemExit("usage: blocking_cli.py STEP {after,during} -- ARGS...")
    real_save = state_module.save_checkpoint

    def save_checkpoint(state, directory, k, **kwargs):
        if k != step:
            return real_save(state, directory, k, **kwargs)
        if when == "after":
            path = real_save(state, directory, k, **kwargs)
            _block(step)
            return path
        real_torch_save = torch.save

        def half_save(obj, f, *args, **kw):  # write a partial file under the temporary name
            real_torch_save(obj, f, *args, **kw)
            data = Path(f).read_bytes()
            Path(f).write_bytes(data[: len(data) // 2])
            _block(step)

        torch.save = half_save
        try:
            return real_save(state, directory, k, **kwargs)
        finally:
            torch.save = real_torch_save

    state_module.save_checkpoint = save_checkpoint
    assert checkpoint_module.save_checkpoint is real_save
    return train_cli.main(sys.argv[4:])


if __name__ == "__main__":
    sys.exit(main())
