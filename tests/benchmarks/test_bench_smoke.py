"""Smoke run of ``python -m benchmarks.run --quick`` (tiny sizes, CPU): every section is written and
every number is finite; the timing-derived numbers are positive. No timing thresholds."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _numbers(obj, path=""):
    if isinstance(obj, bool):
        return
    if isinstance(obj, (int, float)):
        yield path, obj
    elif isinstance(obj, dict):
        for k, v in obj.items():
            yield from _numbers(v, f"{path}.{k}")
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _numbers(v, f"{path}[{i}]")


@pytest.mark.slow
def test_quick_bench_writes_every_section(tmp_path):
    cmd = [sys.executable, "-m", "benchmarks.run", "--device", "cpu", "--quick", "--out-dir", str(tmp_path),
               "--machine", "smoke test box"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=240,
                          env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin", "MPLBACKEND": "Agg"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    data = json.loads((tmp_path / "results-smoke-test-box.json").read_text())
    md = (tmp_path / "results-smoke-test-box.md").read_text()

    sections = ("machine", "config", "peer", "cfm", "gft", "ot", "sampling", "ratios", "targets")
    assert set(sections) <= set(data)
    assert set(data["cfm"]) >= {"fp32", "fast", "fast_independent"}
    assert set(data["gft"]) == {"coupling", "drift"}
    assert {"batch128_step_shape", "batch128_cifar_shape", "step_batch"} <= set(data["ot"])
    assert {"nfe_8", "nfe_32"} <= set(data["sampling"])
    for entry in (data["peer"], *(data["cfm"][k] for k in ("fp32", "fast", "fast_independent")),
                  data["gft"]["coupling"], data["gft"]["drift"]):
        assert entry["median_s"] > 0 and entry["per_sample_s"] > 0 and entry["samples_per_s"] > 0
        assert entry["peak_memory_mb"] >= 0 and len(entry["times_s"]) == entry["repeats"] > 0
    for nfe in ("nfe_8", "nfe_32"):
        for run in data["sampling"][nfe].values():
            assert run["images_per_s"] > 0 and run["seconds"] > 0
    # OT shares may be exactly 0 (nothing left on the critical path); every other ratio is > 0
    for key, value in data["ratios"].items():
        assert value >= 0 if key.startswith("ot_share") else value > 0, key
    for key in ("gft_coupling_per_sample", "gft_drift_per_sample"):
        assert data["targets"][key]["value"] == data["ratios"][f"{key}_vs_cfm"]
        assert data["targets"][key]["met"] == (data["targets"][key]["value"] <= data["targets"][key]["limit"])
    bad = [(p, v) for p, v in _numbers(data) if not math.isfinite(v)]
    assert bad == []
    assert data["machine"]["slug"] == "smoke-test-box" and data["machine"]["cpu"] in md
    assert "| (1) torchcfm OT-CFM step, fp32 |" in md and "coupling form:" in md
