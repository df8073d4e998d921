"""Stress-run the tests that use subprocesses, signals, threads or timing: ``make stress``.

Each test (a pytest node id) runs ``--runs`` times in a row on an otherwise idle machine, then
``--loaded-runs`` times while ``--burners`` CPU-burning processes (default: one per core) load every
core. Every run is a fresh ``python -m pytest -q -p no:xdist NODE`` process. Prints one line per
test (runs / passes, idle and loaded) and writes the counts as JSON to ``--out``; exits 1 if any run
failed (the failing runs' output is kept under ``--log-dir``). Not part of CI: it takes long.

    python scripts/stress.py --runs 30 --loaded-runs 10
    python scripts/stress.py --runs 3 --loaded-runs 1 tests/test_fastpath.py::test_prefetch_records_the_wait_for_each_solve
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: The audited tests: every test that starts subprocesses, sends signals, uses threads, locks or the
#: clock (``grep -rn "sleep|monotonic|deadline|Thread|Popen|subprocess|perf_counter" tests``).
DEFAULT_TESTS: tuple[str, ...] = (
    "tests/test_reliability_train.py::test_cli_resumes_bit_exactly_after_sigkill",
    "tests/test_reliability_train.py::test_torchrun_cli_ranks_end_identical",
    "tests/test_reliability_train.py::test_ddp_matches_single_process_and_resumes",
    "tests/test_reliability_preempt.py",
    "tests/test_reliability_files.py",
    "tests/test_fastpath.py",  # the prefetch thread (wait record, bit-identical batches, resume)
    "tests/test_bad_inputs.py::test_unknown_notebook_parameter_fails_before_the_kernel_starts",
    "tests/test_bad_inputs.py::test_cli_rejects_a_parameter_typo_for_a_real_notebook",
    "tests/test_models.py::test_tiny_forward_backward_is_fast",
    "tests/test_notebooks_smoke.py::test_network_is_blocked_in_subprocesses",
    "tests/test_bench_smoke.py",
)


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(PYTHONPATH=os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]),
               OMP_NUM_THREADS=env.get("OMP_NUM_THREADS", "1"), MPLBACKEND="Agg", PYTHONHASHSEED="0")
    return env


@contextmanager
def burning(count: int) -> Iterator[None]:
    """``count`` processes spinning a core each (terminated, by their own ids, on exit)."""
    procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(count)]
    try:
        yield
    finally:
        for p in procs:
            p.kill()
        for p in procs:
            p.wait()


def run_once(node: str, log_dir: Path, tag: str) -> bool:
    """One fresh pytest process for ``node``; its output is kept in ``log_dir`` if it fails."""
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:xdist", "-p", "no:cacheprovider", node]
    done = subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True)
    if done.returncode != 0:
        log_dir.mkdir(parents=True, exist_ok=True)
        name = node.replace("/", "_").replace(":", "_")
        (log_dir / f"{name}.{tag}.log").write_text(done.stdout + "\n" + done.stderr)
    return done.returncode == 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("tests", nargs="*", default=list(DEFAULT_TESTS), help="pytest node ids")
    parser.add_argument("--runs", type=int, default=30, help="runs per test on an idle machine")
    parser.add_argument("--loaded-runs", type=int, default=10, help="runs per test under CPU load")
    parser.add_argument("--burners", type=int, default=os.cpu_count() or 2,
                        help="CPU-burning processes during the loaded runs (default: one per core)")
    parser.add_argument("--out", default="build/stress.json", help="counts as JSON")
    parser.add_argument("--log-dir", default="build/stress-logs", help="output of failing runs")
    args = parser.parse_args(argv)
    for name in ("runs", "loaded_runs", "burners"):
        if getattr(args, name) < 0:
            parser.error(f"--{name.replace('_', '-')} must be an integer >= 0, got {getattr(args, name)}")
    log_dir = Path(args.log_dir)
    counts: dict[str, dict[str, int]] = {}
    for phase, runs, burners in (("idle", args.runs, 0), ("loaded", args.loaded_runs, args.burners)):
        with burning(burners):
            for node in args.tests:
                passed = sum(run_once(node, log_dir, f"{phase}{i}") for i in range(runs))
                entry = counts.setdefault(node, {})
                entry[f"{phase}_runs"], entry[f"{phase}_passes"] = runs, passed
                print(f"[stress] {phase:6s} {passed:3d}/{runs:<3d} {node}", flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(counts, indent=2, sort_keys=True) + "\n")
    failed = [n for n, c in counts.items() if c["idle_passes"] < c["idle_runs"]
              or c["loaded_passes"] < c["loaded_runs"]]
    print(f"[stress] {len(failed)} test(s) failed at least once" + (f": {failed}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
