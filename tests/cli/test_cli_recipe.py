"""The README's image recipe (scripts/recipe_camelyon17.sh) end to end at dry-run size on the CPU:
torchcfm's 35.7 M-parameter CIFAR-10 network with random weights in torchcfm's release format, a
fake WILDS Camelyon17 root in the published layout, 2 steps at batch 2: finetune -> sample -> eval."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]


def fake_camelyon17(root: Path, n_train: int = 5, n_val: int = 3) -> Path:
    """``root/camelyon17_v1.0/{metadata.csv, patches/...}``: 96 x 96 random patches of hospital 0,
    WILDS split 0 (train) and 1 (id_val)."""
    import skimage.io

    d = root / "camelyon17_v1.0"
    lines = [",patient,node,x_coord,y_coord,tumor,slide,center,split"]
    rng = np.random.default_rng(0)
    for i in range(n_train + n_val):
        p, x = f"{i:03d}", 32 * i
        lines.append(f"{i},{p},0,{x},64,{i % 2},{i},0,{0 if i < n_train else 1}")
        folder = d / "patches" / f"patient_{p}_node_0"
        folder.mkdir(parents=True, exist_ok=True)
        skimage.io.imsave(folder / f"patch_patient_{p}_node_0_x_{x}_y_64.png",
                          rng.integers(0, 256, (96, 96, 3), dtype=np.uint8), check_contrast=False)
    (d / "metadata.csv").write_text("\n".join(lines) + "\n")
    return root


@pytest.mark.slow
def test_recipe_at_dry_run_size(tmp_path):
    from gftlib.models import count_parameters, load_torchcfm
    from gftlib.models.torchcfm import TorchCFMVelocity, save_torchcfm

    torch.manual_seed(0)
    net = TorchCFMVelocity()  # torchcfm's CIFAR-10 architecture, random weights
    assert count_parameters(net) == 35_746_307
    ckpt = tmp_path / "otcfm_cifar10_random.pt"
    save_torchcfm(net, ckpt, ema_model=net, step=0)
    wilds = fake_camelyon17(tmp_path / "wilds")
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", MPLBACKEND="Agg",
               CKPT=str(ckpt), WILDS_ROOT=str(wilds), OUT=str(tmp_path / "runs"), SIZES="32",
               METHODS="gft-coupling", STEPS="2", BATCH="2", N_DATA="4", N_EVAL="3", NFE="2", N_GRID="4", CACHE="2",
               TRAJ="2", TIME_GRID="2", SOLVER_STEPS="2", CKPT_EVERY="2", GFT=f"{sys.executable} -m gftlib",
               EXTRA="--no-progress --device cpu")
    run = subprocess.run(["bash", str(ROOT / "scripts" / "recipe_camelyon17.sh")], env=env, cwd=tmp_path,
                         capture_output=True, text=True, timeout=1500)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-4000:]
    assert "Warning" not in run.stderr, run.stderr[-3000:]
    r = tmp_path / "runs" / "32" / "gft-coupling"
    w = torch.load(r / "weights.pt", weights_only=True)
    assert w["model_spec"]["kind"] == "torchcfm" and w["loss_reduction"] == "mean"
    assert [h["step"] for h in w["history"]][-1] == 2
    # the torchcfm export and the gftlib file hold the same fine-tuned EMA network
    exported = load_torchcfm(r / "torchcfm.pt")
    again = load_torchcfm(r / "weights.pt")  # a gftlib weights file of a torchcfm net is torchcfm-readable too
    x, t = torch.randn(2, 3, 32, 32), torch.tensor([0.3, 0.7])
    with torch.no_grad():
        torch.testing.assert_close(exported(x, t), again(x, t), rtol=0, atol=0)
        assert not torch.equal(exported(x, t), net.eval()(x, t))  # it did train
    with np.load(r / "samples.npz") as z:
        assert z["x"].shape == (4, 3, 32, 32) and z["images"].shape == (4, 32, 32, 3)
        assert z["images"].dtype == np.uint8 and np.isfinite(z["x"]).all()
    assert (r / "samples.png").read_bytes()[:4] == b"\x89PNG"
    for report in (r / "eval.json", tmp_path / "runs" / "32" / "pretrained" / "eval.json"):
        e = json.loads(report.read_text())
        assert e["split"] == "id_val" and e["n"] == 3 and e["n_ref"] == 3
        assert set(e["metrics"]) == {"fd", "sliced_w2", "path_length", "straightness", "nfe"}
        assert all(np.isfinite(v) for v in e["metrics"].values()) and e["metrics"]["nfe"] == 2


@pytest.mark.slow
def test_torchcfm_checkpoint_runs_at_96_pixels_with_its_attention(tmp_path):
    """The 32-px checkpoint loads at 96 px with every tensor used (attention stays at factor 2)."""
    from gftlib.cli import main
    from gftlib.cli.weights import torchcfm_size_config
    from gftlib.models.torchcfm import TorchCFMVelocity, save_torchcfm

    small = dict(num_channels=32, num_res_blocks=1, num_head_channels=16)
    net32 = TorchCFMVelocity(**small)
    net96 = TorchCFMVelocity(**small, **torchcfm_size_config(96))
    assert list(net96.state_dict()) == list(net32.state_dict())
    assert any("attn" in type(m).__name__.lower() or "attention" in type(m).__name__.lower()
               for m in net96.modules())
    assert torchcfm_size_config(32)["attention_resolutions"] == "16"  # torchcfm's own CIFAR-10 setting
    torch.manual_seed(0)
    ckpt = tmp_path / "c.pt"
    full = TorchCFMVelocity()
    save_torchcfm(full, ckpt)
    out = tmp_path / "s.npz"
    assert main(["sample", "--weights", f"torchcfm:{ckpt}", "--image-size", "96", "--num-samples", "1",
                 "--nfe", "1", "--out", str(out), "--no-progress"]) == 0
    with np.load(out) as z:
        assert z["images"].shape == (1, 96, 96, 3)
