"""Stress-run the tests that use subprocesses, signals, threads or timing: ``make stress``.

Each test (a pytest node id; a file or a parametrised name stands for all its tests) runs ``--runs``
times in a row on the machine as it is, then ``--loaded-runs`` times while ``--burners`` CPU-burning
processes (default: one per core) load every core. By default the repeats run in one
``python -m pytest -p no:xdist`` process per node (plugin scripts/stress_repeat.py; every
subprocess a test starts is fresh anyway); ``--fresh`` starts a new pytest process per run. Prints
one line per test (runs / passes, idle and loaded) and writes the counts as JSON to ``--out``; exits
1 if any run failed (the failing runs' output is kept under ``--log-dir``). Not part of CI.

    python scripts/stress.py --runs 30 --loaded-runs 10
    python scripts/stress.py --runs 3 --loaded-runs 1 tests/training/test_fastpath.py::test_prefetch_solves_in_a_background_thread
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: The audited tests: every test that starts subprocesses, sends signals, uses threads, locks or the
#: clock (``grep -rn "sleep|monotonic|deadline|Thread|Popen|subprocess|perf_counter" tests``).
DEFAULT_TESTS: tuple[str, ...] = (
    "tests/training/test_reliability_train.py::test_cli_resumes_bit_exactly_after_sigkill",
    "tests/training/test_reliability_train.py::test_torchrun_cli_ranks_end_identical",
    "tests/training/test_reliability_train.py::test_ddp_matches_single_process_and_resumes",
    "tests/training/test_reliability_preempt.py",
    "tests/core/test_reliability_files.py",
    "tests/training/test_fastpath.py::test_prefetch_records_the_wait_for_each_solve",
    "tests/training/test_fastpath.py::test_prefetch_solves_in_a_background_thread",
    "tests/training/test_fastpath.py::test_prefetch_training_equals_plain_and_resumes_exactly",
    "tests/core/test_bad_inputs.py::test_unknown_notebook_parameter_fails_before_the_kernel_starts",
    "tests/core/test_bad_inputs.py::test_cli_rejects_a_parameter_typo_for_a_real_notebook",
    # the subprocess tests of these files (the others run in-process, without threads or the clock)
    "tests/cli/test_cli.py::test_console_script_and_module_entry",
    "tests/cli/test_cli.py::test_normal_run_prints_no_warnings",
    "tests/cli/test_cli.py::test_torchrun_finetune_and_rank0_sampling",
    "tests/cli/test_cli.py::test_finetune_every_method_then_sample_and_eval[gft-coupling]",
    "tests/core/test_front_door.py",
    "tests/docs/test_docs_site.py::test_jupytext_config_pairs_notebooks_with_build_nbsrc",
    "tests/docs/test_docs_site.py::test_full_api_reference_builds_with_resolving_links",
    "tests/notebooks/test_notebooks_smoke.py::test_network_is_blocked_in_subprocesses",
    "tests/benchmarks/test_bench_smoke.py",
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


def _selection(node: str) -> list[str]:
    """pytest arguments selecting ``node``. A parametrised id ``f.py::t[p]`` becomes ``f.py::t -k p``:
    the repeat plugin renames it ``t[stressK-p]``, which the bracketed id would no longer find."""
    if node.endswith("]") and "[" in node:
        base, param = node[:-1].split("[", 1)
        return [base, "-k", param]
    return [node]


def _pytest(nodes: list[str], repeat: int) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "pytest", "-q", "-rA", "-p", "no:xdist", "-p", "no:cacheprovider",
           "-p", "stress_repeat", *[arg for node in nodes for arg in _selection(node)]]
    env = _env()
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "scripts"), env["PYTHONPATH"]])
    env["GFT_STRESS_REPEAT"] = str(repeat)
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)


_OUTCOME = re.compile(r"^(PASSED|FAILED|ERROR) (\S+?)(?: - .*)?$")


def _without_repeat(test_id: str) -> str:
    """``a.py::t[stress3-SIGTERM]`` -> ``a.py::t[SIGTERM]``; ``a.py::t[stress3]`` -> ``a.py::t``."""
    if not test_id.endswith("]") or "[" not in test_id:
        return test_id
    name, params = test_id[:-1].split("[", 1)
    kept = [part for part in params.split("-") if not re.fullmatch(r"stress\d+", part)]
    return f"{name}[{'-'.join(kept)}]" if kept else name


def run_node(node: str, runs: int, fresh: bool, log_dir: Path, tag: str) -> dict[str, list[int]]:
    """{test id: [runs, passes]} for every test under ``node``, each run ``runs`` times."""
    counts: dict[str, list[int]] = {}
    batches = [(1, f"{tag}{i}") for i in range(runs)] if fresh else [(runs, tag)]
    for repeat, name in batches:
        if repeat == 0:
            continue
        done = _pytest([node], repeat)
        for line in done.stdout.splitlines():
            match = _OUTCOME.match(line.strip())
            if not match:
                continue
            test = _without_repeat(match.group(2))
            entry = counts.setdefault(test, [0, 0])
            entry[0] += 1
            entry[1] += match.group(1) == "PASSED"
        if done.returncode != 0:
            log_dir.mkdir(parents=True, exist_ok=True)
            safe = re.sub(r"[^A-Za-z0-9_.-]", "_", node)
            (log_dir / f"{safe}.{name}.log").write_text(done.stdout + "\n" + done.stderr)
            if not counts:  # collection error: count the whole batch as failed
                counts[node] = [repeat, 0]
    return counts


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("tests", nargs="*", default=list(DEFAULT_TESTS), help="pytest node ids")
    parser.add_argument("--runs", type=int, default=30, help="runs per test on an idle machine")
    parser.add_argument("--loaded-runs", type=int, default=10, help="runs per test under CPU load")
    parser.add_argument("--burners", type=int, default=os.cpu_count() or 2,
                        help="CPU-burning processes during the loaded runs (default: one per core)")
    parser.add_argument("--fresh", action="store_true", help="a new pytest process for every run")
    parser.add_argument("--out", default="build/stress.json", help="counts as JSON")
    parser.add_argument("--log-dir", default="build/stress-logs", help="output of failing runs")
    args = parser.parse_args(argv)
    for name in ("runs", "loaded_runs", "burners"):
        if getattr(args, name) < 0:
            parser.error(f"--{name.replace('_', '-')} must be an integer >= 0, got {getattr(args, name)}")
    # SIGTERM (e.g. `kill PID`) unwinds like Ctrl-C: the running pytest and the burners are stopped too
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    log_dir = Path(args.log_dir)
    counts: dict[str, dict[str, int]] = {}
    for phase, runs, burners in (("idle", args.runs, 0), ("loaded", args.loaded_runs, args.burners)):
        with burning(burners):
            for node in args.tests:
                for test, (n, passed) in run_node(node, runs, args.fresh, log_dir, phase).items():
                    entry = counts.setdefault(test, {})
                    entry[f"{phase}_runs"], entry[f"{phase}_passes"] = n, passed
                    print(f"[stress] {phase:6s} {passed:3d}/{n:<3d} {test}", flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(counts, indent=2, sort_keys=True) + "\n")
    failed = [t for t, c in counts.items()
              if any(c.get(f"{p}_passes", 0) < c.get(f"{p}_runs", 0) for p in ("idle", "loaded"))]
    shown = f": {failed}" if failed else ""
    print(f"[stress] {len(counts)} tests, {len(failed)} failed at least once{shown}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
