"""The ``paper`` profile of every notebook runs to the end at dry-run sizes (``dry_run=True``).

A dry run keeps the profile's code path (methods, pairs, schedules, data source, model kind, E2's
start from a torchcfm checkpoint) and replaces its sizes by the ``DRY_RUN`` table each notebook
declares next to its profile table (gftlib.experiments.profiles.profile_values). The notebooks run
through gftlib.experiments.run_notebooks.run_notebook (papermill), in this process, with the
kernel's outbound sockets blocked (tests/nonet) and every output in a temporary folder.

What is asserted, per kind of output:

- every cell ran, ``report.finalize()`` included (papermill raises otherwise), and the results JSON
  records ``profile == "paper"`` and ``dry_run == True``;
- every figure the notebook registered exists as a non-empty PNG (and only the PNG: a dry run writes
  no PDF, whose font embedding would double the figure time; the smoke test writes and checks both);
- checks: each record is well formed (a threshold that is a number, not NaN; an operator; a reason)
  and its ``passed`` flag is exactly ``value <op> threshold`` (finite value); their number may be 0
  (a notebook reports rather than asserts a check without power at its sizes, e.g. E4 at these
  sizes); whether a check passes is NOT
  asserted: thresholds (null bounds, standard errors, tolerances) assume the profile's sizes, and at
  dry-run sizes a statistical check may fail legitimately. Their passing is what the smoke test
  (tests/test_notebooks_smoke.py, all checks must pass) and ``make figures`` assert. In a dry run
  ``Report.finalize`` records failed checks without raising.

E2 starts from a fake torchcfm checkpoint written here in torchcfm's release format (random
weights of a small ``UNetModelWrapper`` made by torchcfm itself, with DataParallel's ``module.``
prefix) and a fake CIFAR-10 folder as its source.
"""

from __future__ import annotations

import json
import math
import operator
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from gftlib.experiments.run_notebooks import run_notebook

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
NONET = ROOT / "tests" / "nonet"
OPS = {"<=": operator.le, "<": operator.lt, ">=": operator.ge, ">": operator.gt}

#: torchcfm UNetModelWrapper arguments of E2's fake checkpoint (8 x 8 images: TI.DRY_RUN_SIZES;
#: attention at 4 x 4, as torchcfm's CIFAR-10 network has it one level down).
SMALL_TORCHCFM = {"num_channels": 32, "num_res_blocks": 1, "channel_mult": [1, 2],
                  "attention_resolutions": "4", "num_heads": 2, "num_head_channels": 16, "dropout": 0.1}

pytestmark = pytest.mark.slow


def fake_torchcfm_release(path: Path, image_size: int) -> Path:
    """torchcfm's release format: {"net_model", "ema_model", "step"}, keys with ``module.``."""
    unet = pytest.importorskip("torchcfm.models.unet.unet")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(11)
        net = unet.UNetModelWrapper(dim=(3, image_size, image_size), **SMALL_TORCHCFM)
        for p in net.parameters():  # torchcfm zero-initialises its output layer
            p.data.normal_(0.0, 0.05)
    state = {f"module.{k}": v for k, v in net.state_dict().items()}
    torch.save({"net_model": state, "ema_model": state, "step": 400_000}, path)
    return path


def fake_cifar10(root: Path, n: int = 16) -> Path:
    """root/cifar-10-batches-py with five training batches and a test batch of random images."""
    d = root / "cifar-10-batches-py"
    d.mkdir(parents=True)
    rng = np.random.default_rng(5)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
        with open(d / name, "wb") as fh:
            pickle.dump({b"data": data, b"labels": [i % 10 for i in range(n)]}, fh)
    return root


def extra_parameters(notebook: Path, tmp_path: Path) -> dict:
    if notebook.stem != "e2_image_shift":
        return {}
    from gftlib.experiments.tasks.images import DRY_RUN_SIZES

    size = DRY_RUN_SIZES["image_size"]
    return {"pretrained_checkpoint": str(fake_torchcfm_release(tmp_path / "otcfm.pt", size)),
            "pretrain_root": str(fake_cifar10(tmp_path / "cifar")),
            "model_config": {"config": "torchcfm", **SMALL_TORCHCFM}}


def check_record_is_consistent(check: dict) -> None:
    assert set(check) >= {"name", "value", "threshold", "op", "reason", "passed"}, check
    assert check["op"] in OPS and check["reason"], check
    value, threshold = check["value"], check["threshold"]
    assert isinstance(threshold, (int, float)) and not math.isnan(threshold), check
    expected = isinstance(value, (int, float)) and math.isfinite(value) and OPS[check["op"]](value, threshold)
    assert check["passed"] is bool(expected), check


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_paper_profile_runs_to_the_end_at_dry_run_sizes(notebook: Path, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(NONET), str(ROOT)]))  # the kernel's
    monkeypatch.setenv("GFT_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    params = {"profile": "paper", "device": "cpu", "dry_run": True, **extra_parameters(notebook, tmp_path)}
    run_notebook(notebook, parameters=params, build_dir=tmp_path / "build", figures_dir=tmp_path / "figures",
                 results_dir=tmp_path / "results", figure_formats=["png"])
    result = json.loads((tmp_path / "results" / f"{notebook.stem}.json").read_text())
    assert result["parameters"]["profile"] == "paper"
    assert result["parameters"]["dry_run"] is True
    assert result["figures"], "no figure was registered"
    for fig in result["figures"]:
        assert (tmp_path / "figures" / f"{fig}.png").stat().st_size > 0
        assert not (tmp_path / "figures" / f"{fig}.pdf").exists()
    for check in result["checks"]:
        check_record_is_consistent(check)
    assert result["all_checks_passed"] is all(c["passed"] for c in result["checks"])
