"""Execute notebooks headlessly with papermill (what ``make figures`` and the smoke tests call).

Each notebook runs with the given ``profile`` and ``device`` (and any ``-p name value`` overrides)
into ``<build>/notebooks/<stem>.ipynb``; the source under ``notebooks/`` stays free of outputs.
Parameters that the notebook's ``parameters`` cell does not declare are rejected before anything
runs. The first failing notebook stops the run with its name and the failing cell; its executed
copy is kept for inspection. While it runs, the command holds its build, figures and results folders
(:mod:`gftlib.locking`): a second run on any of them is refused at once (exit code 1, naming the
folder and the holder's pid); a killed run leaves no stale lock.

``--jobs N`` runs up to N notebooks at once, each in a worker process with its own kernel, taking
them in the order given (``make figures`` lists the longest first and runs two on the 2-core machine). Every
kernel has its own seeds and thread count, so the results do not depend on N; after a failure no
further notebook starts, the running ones finish, and the first failure is reported.

    python -m gftlib.experiments.run_notebooks --profile quick notebooks/t1_girsanov.ipynb
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import json
import os
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from gftlib.experiments.profiles import PROFILES
from gftlib.io import atomic_write_json, check_output_path
from gftlib.locking import DirectoryBusy, hold_directories
from gftlib.validation import resolve_device

__all__ = ["NotebookFailed", "check_parameters", "declared_parameters", "run_notebook", "output_directories",
           "main"]


class NotebookFailed(RuntimeError):
    """A notebook raised; the message names the notebook, the cell and the error."""


def declared_parameters(notebook: str | os.PathLike[str]) -> dict[str, str]:
    """Names (and default source text) assigned in the cell tagged ``parameters``."""
    nb = json.loads(Path(notebook).read_text())
    for cell in nb.get("cells", []):
        if cell.get("cell_type") == "code" and "parameters" in cell.get("metadata", {}).get("tags", []):
            src = "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
            names: dict[str, str] = {}
            for node in ast.parse(src).body:
                if isinstance(node, (ast.Assign, ast.AnnAssign)):
                    targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                    for tgt in targets:
                        if isinstance(tgt, ast.Name):
                            names[tgt.id] = ast.get_source_segment(src, node.value) or ""
            return names
    raise ValueError(f"{notebook}: no code cell is tagged 'parameters'")


def check_parameters(notebook: str | os.PathLike[str], parameters: Mapping[str, Any]) -> None:
    """Raise ``ValueError`` if ``notebook`` is missing or does not declare every name in ``parameters``."""
    notebook = Path(notebook)
    if not notebook.is_file():
        raise ValueError(f"notebook not found: {notebook}")
    declared = declared_parameters(notebook)
    unknown = sorted(set(parameters) - set(declared))
    if unknown:
        raise ValueError(
            f"{notebook.name}: unknown parameter(s) {unknown}; the parameters cell declares {sorted(declared)}"
        )


def _failing_cell(executed: Path) -> str:
    """Describe the first cell whose output is an error in an executed notebook."""
    try:
        nb = json.loads(executed.read_text())
    except (OSError, ValueError):
        return "unknown cell"
    code_index = 0
    for cell in nb.get("cells", []):
        if cell.get("cell_type") != "code":
            continue
        code_index += 1
        for out in cell.get("outputs", []):
            if out.get("output_type") == "error":
                src = "".join(cell.get("source", "")).strip().splitlines()
                first = src[0] if src else ""
                return f"code cell {code_index} ({first[:60]!r}): {out.get('ename')}: {out.get('evalue')}"
    return "unknown cell"


def run_notebook(
    notebook: str | os.PathLike[str],
    *,
    parameters: Mapping[str, Any],
    build_dir: str | os.PathLike[str] = "build",
    figures_dir: str | os.PathLike[str] | None = None,
    results_dir: str | os.PathLike[str] | None = None,
    kernel_name: str = "python3",
    timeout: int | None = None,
    figure_formats: Sequence[str] | None = None,
) -> Path:
    """Execute one notebook with papermill; return the executed copy's path or raise NotebookFailed.

    ``figure_formats``: the figure files written (default ``$GFT_FIGURE_FORMATS``, else PNG and PDF;
    :func:`gftlib.experiments.report.figure_formats`)."""
    notebook = Path(notebook)
    check_parameters(notebook, parameters)
    formats = None
    if figure_formats is not None:
        from gftlib.experiments.report import figure_formats as checked_formats  # torch: import on use

        formats = ",".join(checked_formats(",".join(figure_formats), name="figure_formats"))
    import papermill as pm  # imported only once the parameters are known to be valid (slow import)

    out = Path(build_dir) / "notebooks" / notebook.name
    out.parent.mkdir(parents=True, exist_ok=True)
    env_backup = {k: os.environ.get(k)
                  for k in ("GFT_FIGURES_DIR", "GFT_RESULTS_DIR", "GFT_FIGURE_FORMATS", "MPLBACKEND")}
    if formats is not None:
        os.environ["GFT_FIGURE_FORMATS"] = formats
    if figures_dir is not None:
        os.environ["GFT_FIGURES_DIR"] = str(Path(figures_dir).resolve())
    if results_dir is not None:
        os.environ["GFT_RESULTS_DIR"] = str(Path(results_dir).resolve())
    os.environ["MPLBACKEND"] = "Agg"
    try:
        with tempfile.TemporaryDirectory(prefix="gftk-") as sockets:
            pm.execute_notebook(
                str(notebook), str(out), parameters=dict(parameters), kernel_name=kernel_name,
                cwd=str(notebook.parent), progress_bar=False, log_output=False,
                execution_timeout=timeout, config=_ipc_kernel_config(sockets),
            )
    except pm.PapermillExecutionError as err:
        raise NotebookFailed(
            f"notebook {notebook.name} failed in {_failing_cell(out)} "
            f"(executed copy kept at {out})"
        ) from err
    finally:
        for k, v in env_backup.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return out


def _ipc_kernel_config(directory: str) -> Any:
    """Kernel sockets as IPC files in ``directory`` (owner-only, local) instead of TCP ports: every TCP
    kernel logs "Kernel is running over TCP without encryption" (ipykernel.kernelapp)."""
    from traitlets.config import Config

    return Config({"KernelManager": {"transport": "ipc", "ip": os.path.join(directory, "kernel")}})


def _parse_value(text: str) -> Any:
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="+", help="notebook files to execute, in order")
    parser.add_argument("--profile", default="quick", help=f"one of {', '.join(PROFILES)}")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    parser.add_argument("--build", default="build", help="folder for executed notebooks")
    parser.add_argument("--figures", default=None, help="figure folder (default: figures/)")
    parser.add_argument("--results", default=None, help="results folder (default: results/)")
    parser.add_argument("--jobs", default="1", help="how many notebooks run at once (an integer >= 1)")
    parser.add_argument("-p", "--parameter", nargs=2, action="append", default=[],
                        metavar=("NAME", "VALUE"), help="override a notebook parameter (Python literal)")
    args = parser.parse_args(argv)
    if args.profile not in PROFILES:
        parser.error(f"--profile must be one of {', '.join(PROFILES)}; got {args.profile!r}")
    if not (args.jobs.isdigit() and int(args.jobs) >= 1):
        parser.error(f"--jobs must be an integer >= 1, got {args.jobs!r}")
    args.jobs = int(args.jobs)
    try:  # "auto" and "cpu" always resolve; a GPU request is checked against the machine (imports torch)
        if args.device not in ("auto", "cpu"):
            resolve_device(args.device)
    except ValueError as err:
        parser.error(f"--device: {err}")
    for flag in ("build", "figures", "results"):
        if getattr(args, flag) is not None:
            try:
                check_output_path(f"--{flag}", getattr(args, flag), directory=True)
            except ValueError as err:
                parser.error(str(err))
    overrides = {name: _parse_value(value) for name, value in args.parameter}
    params = {"profile": args.profile, "device": args.device, **overrides}
    try:  # every notebook is checked before the first one runs
        for nb in args.notebooks:
            check_parameters(nb, params)
    except ValueError as err:
        print(f"[run_notebooks] FAILED: {err}", file=sys.stderr, flush=True)
        return 1
    with contextlib.ExitStack() as stack:
        try:  # one run per output folder (a second `make figures` on the same folders is refused)
            stack.enter_context(hold_directories(output_directories(args.build, args.figures, args.results),
                                                 what="output folder"))
        except DirectoryBusy as err:
            print(f"[run_notebooks] REFUSED: {err}", file=sys.stderr, flush=True)
            return 1
        return _run_all(args, params)


def output_directories(build: str | os.PathLike[str], figures: str | os.PathLike[str] | None,
                       results: str | os.PathLike[str] | None) -> list[Path]:
    """The folders a run writes: build, and the figures/results folders the notebooks will use
    (the given ones, else ``GFT_FIGURES_DIR`` / ``GFT_RESULTS_DIR``, else the repository's)."""
    root = Path(__file__).resolve().parents[2]
    fig = figures or os.environ.get("GFT_FIGURES_DIR") or root / "figures"
    res = results or os.environ.get("GFT_RESULTS_DIR") or root / "results"
    return [Path(build), Path(fig), Path(res)]


def _run_one(nb: str, args: argparse.Namespace, params: dict[str, Any]) -> float:
    """Run one notebook; return its wall time in seconds (raises NotebookFailed / ValueError)."""
    start = time.perf_counter()
    print(f"[run_notebooks] {nb} (profile={args.profile}, device={args.device})", flush=True)
    run_notebook(nb, parameters=params, build_dir=args.build, figures_dir=args.figures,
                 results_dir=args.results)
    seconds = round(time.perf_counter() - start, 1)
    print(f"[run_notebooks] done {nb} in {seconds:.1f} s", flush=True)
    return seconds


def _run_all(args: argparse.Namespace, params: dict[str, Any]) -> int:
    import multiprocessing
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    timings: dict[str, float] = {}
    queue, running, failure = list(args.notebooks), {}, None
    if args.jobs == 1:  # in this process, one after the other
        for nb in queue:
            try:
                timings[Path(nb).stem] = _run_one(nb, args, params)
            except (NotebookFailed, ValueError) as err:
                failure = err
                break
        queue = []
    # worker processes, not threads: papermill changes the working directory of its process
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=args.jobs, mp_context=context) as pool:  # each sets its own env
        while queue or running:
            while queue and failure is None and len(running) < args.jobs:
                nb = queue.pop(0)
                running[pool.submit(_run_one, nb, args, params)] = nb
            if not running:
                break
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                nb = running.pop(future)
                try:
                    timings[Path(nb).stem] = future.result()
                except (NotebookFailed, ValueError) as err:
                    failure = failure or err
                    queue.clear()  # no further notebook starts; the running ones finish
    if failure is not None:
        print(f"[run_notebooks] FAILED: {failure}", file=sys.stderr, flush=True)
        return 1
    timing_file = Path(args.build) / f"timings-{args.profile}.json"
    previous = json.loads(timing_file.read_text()) if timing_file.exists() else {}
    atomic_write_json(timing_file, {**previous, **timings})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
