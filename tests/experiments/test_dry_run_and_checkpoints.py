"""Dry-run sizes (gftlib.experiments.profiles) and E2's start from a torchcfm checkpoint."""

from __future__ import annotations

import pickle
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from gftlib.experiments import image_checkpoints as IC
from gftlib.experiments.tasks import images as TI
from gftlib.experiments.profiles import profile_values, resolve_parameters
from gftlib.experiments.report import ChecksFailed, Report
from gftlib.models import TORCHCFM_RECIPE, TorchCFMVelocity

TABLE = {"smoke": {"steps": 3, "kind": "a"}, "quick": {"steps": 30, "kind": "b"}, "paper": {"steps": 3000, "kind": "c"}}
SIZE = TI.DRY_RUN_SIZES["image_size"]
SMALL = {"num_channels": 32, "num_res_blocks": 1, "channel_mult": [1, 2], "attention_resolutions": "4",
         "num_heads": 2, "num_head_channels": 16, "dropout": 0.0}


def test_profile_values_dry_run_replaces_sizes_only():
    assert profile_values(TABLE, "paper") == {"steps": 3000, "kind": "c"}
    assert profile_values(TABLE, "paper", dry_run=True, dry_run_sizes={"steps": 2}) == {"steps": 2, "kind": "c"}
    with pytest.raises(ValueError, match=r"dry_run_sizes names \['stepz'\], which profile 'paper' does not"):
        profile_values(TABLE, "paper", dry_run=True, dry_run_sizes={"stepz": 2})
    with pytest.raises(ValueError, match="dry_run=True needs dry_run_sizes"):
        profile_values(TABLE, "paper", dry_run=True)
    with pytest.raises(TypeError, match="dry_run must be True or False, got 'yes'"):
        profile_values(TABLE, "paper", dry_run="yes", dry_run_sizes={})


def test_resolve_parameters_records_dry_run_and_explicit_values_win():
    p = resolve_parameters(TABLE, profile="paper", seed=0, device="cpu", dry_run=True,
                           dry_run_sizes={"steps": 2}, steps=None, kind=None)
    assert p == {"seed": 0, "profile": "paper", "device": "cpu", "dry_run": True, "steps": 2, "kind": "c"}
    p = resolve_parameters(TABLE, profile="paper", seed=0, device="cpu", dry_run=True,
                           dry_run_sizes={"steps": 2}, steps=7)
    assert p["steps"] == 7
    assert resolve_parameters(TABLE, profile="quick", seed=0, device="cpu")["dry_run"] is False


def test_dry_run_tables_name_only_existing_knobs():
    from gftlib.experiments import scenario_setup as SC
    from gftlib.experiments.tasks import toy2d as T2

    for table, settings, sizes, dry in ((T2.PROFILE_TABLE, T2.PROFILE_SETTINGS, T2.DRY_RUN_SIZES, T2.DRY_RUN_SETTINGS),
                                        (SC.PROFILE_TABLE, SC.PROFILE_SETTINGS, SC.DRY_RUN_SIZES, SC.DRY_RUN_SETTINGS),
                                        (TI.PROFILE_TABLE, TI.PROFILE_SETTINGS, TI.DRY_RUN_SIZES, TI.DRY_RUN_SETTINGS)):
        for profile in ("smoke", "quick", "paper"):
            profile_values(table, profile, dry_run=True, dry_run_sizes=sizes)
            profile_values(settings, profile, dry_run=True, dry_run_sizes=dry)


def test_failed_checks_raise_except_in_a_dry_run(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("GFT_RESULTS_DIR", str(tmp_path))
    for dry in (False, True):
        report = Report("x", {"profile": "paper", "dry_run": dry})
        report.check("one", 2.0, 1.0, reason="test")
        if dry:
            assert report.finalize().is_file()
            assert "dry run, not evidence: 1 of 1 check(s) failed" in capsys.readouterr().out
        else:
            with pytest.raises(ChecksFailed):
                report.finalize()
            assert (tmp_path / "x.json").is_file()


# ------------------------------------------------------------------------------------ E2 checkpoint
def _release(path: Path, size: int = SIZE, seed: int = 3) -> tuple[Path, torch.nn.Module]:
    from torchcfm.models.unet.unet import UNetModelWrapper

    torch.manual_seed(seed)
    net = UNetModelWrapper(dim=(3, size, size), **SMALL)
    for p in net.parameters():
        p.data.normal_(0.0, 0.05)
    ema = {f"module.{k}": v for k, v in net.state_dict().items()}
    raw = {f"module.{k}": torch.zeros_like(v) for k, v in net.state_dict().items()}  # net_model != ema_model
    torch.save({"net_model": raw, "ema_model": ema, "step": 10}, path)
    return path, net.eval()


def _cifar(root: Path, n: int = 16) -> Path:
    d = root / "cifar-10-batches-py"
    d.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        with open(d / name, "wb") as fh:
            pickle.dump({b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), b"labels": [0] * n}, fh)
    return root


def _params(**over):
    p = resolve_parameters(TI.PROFILE_TABLE, profile="paper", seed=0, device="cpu", dry_run=True,
                           dry_run_sizes=TI.DRY_RUN_SIZES)
    p.update(model_config={"config": "torchcfm", **SMALL}, n_seeds=1)
    p.update(over)
    return p


def test_pretrained_checkpoint_values_fail_fast_naming_the_parameter(tmp_path):
    assert IC.check_pretrained_checkpoint("pretrain") is None
    with pytest.raises(ValueError, match="pretrained_checkpoint is required by this profile.*"
                                         + re.escape(IC.TORCHCFM_RELEASE)):
        TI.resolve_setup(_params())  # the paper profile's value
    missing = tmp_path / "nope.pt"
    with pytest.raises(FileNotFoundError, match="pretrained_checkpoint must be 'pretrain' or an existing.*no such file: " + re.escape(str(missing))):
        TI.resolve_setup(_params(pretrained_checkpoint=str(missing)))
    with pytest.raises(TypeError, match="pretrained_checkpoint must be 'pretrain' or a local"):
        IC.check_pretrained_checkpoint(3)
    ckpt, _ = _release(tmp_path / "c.pt")
    with pytest.raises(ValueError, match="pretrained_checkpoint needs pretrain_root"):
        TI.resolve_setup(_params(pretrained_checkpoint=str(ckpt)))
    with pytest.raises(ValueError, match="model_config must be 'torchcfm'"):
        TI.resolve_setup(_params(pretrained_checkpoint=str(ckpt), pretrain_root=str(_cifar(tmp_path / "c")),
                                 model_config="tiny"))


def test_e2_starts_from_the_checkpoints_ema_weights_with_torchcfms_recipe(tmp_path, monkeypatch):
    monkeypatch.setenv("GFT_CACHE_DIR", str(tmp_path / "cache"))
    ckpt, net = _release(tmp_path / "c.pt")
    setup = TI.resolve_setup(_params(pretrained_checkpoint=str(ckpt), pretrain_root=str(_cifar(tmp_path / "cifar"))))
    task, config = setup.task, setup.config
    assert task.model_kind == "torchcfm" and isinstance(task.build_model(), TorchCFMVelocity)
    assert (config.lr, config.ema_decay, config.loss_reduction) == (
        TORCHCFM_RECIPE["lr"], TORCHCFM_RECIPE["ema_decay"], TORCHCFM_RECIPE["loss_reduction"])
    pre = TI.pretrain(task)  # loaded, not trained: torchcfm's own network gives the same velocity
    x, t = torch.randn(3, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1)), torch.tensor([0.1, 0.5, 0.9])
    with torch.no_grad():
        torch.testing.assert_close(pre(x, t), net(t, x), rtol=1e-5, atol=1e-6)
    key = task.as_dict()["pretrained_checkpoint_sha256"]
    _release(ckpt, seed=4)  # another file at the same path: another cache key
    assert TI.ImageTask(**{**task.__dict__}).as_dict()["pretrained_checkpoint_sha256"] != key
    _release(ckpt, seed=3)
    run = TI.finetune(task, "ft", task.seed, config)
    # torchcfm's mean over elements: the CFM loss of a unit-scale model is O(1), not O(D = 3 SIZE^2)
    assert 0 < float(run.loss_total[0]) < 20, run.loss_total
