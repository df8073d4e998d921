"""Fakes and tiny sizes shared by the image-task tests: small CIFAR-10 / Camelyon17 / Inception
files built in tmp_path (the real-data path runs on them), and a tiny task and budget."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import skimage.io
import torch
from torch import Tensor, nn

from gftlib.experiments.profiles import resolve_parameters
from gftlib.experiments.tasks import images as TI


def fake_cifar(root: Path, *, n_per_batch: int = 8, n_test: int = 8, seed: int = 0) -> Path:
    """root/cifar-10-batches-py with 5 training batches and a test batch of random uint8 images."""
    rng = np.random.default_rng(seed)
    d = root / "cifar-10-batches-py"
    d.mkdir(parents=True)
    for name, n in [(f"data_batch_{i}", n_per_batch) for i in range(1, 6)] + [("test_batch", n_test)]:
        data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
        with open(d / name, "wb") as fh:
            pickle.dump({b"data": data, b"labels": rng.integers(0, 10, size=n).tolist()}, fh)
    return root


def fake_camelyon(root: Path, n: int) -> Path:
    """root/camelyon17_v1.0 with n single-colour 12x12 patches (colour i identifies image i), all
    in the official 'train' split (split 0, centres 0/3/4)."""
    d = root / "camelyon17_v1.0"
    lines = [",patient,node,x_coord,y_coord,tumor,slide,center,split"]
    for i in range(n):
        p, nd, x, y = f"{i:03d}", "1", str(32 * i), "64"
        lines.append(f"{i},{p},{nd},{x},{y},{i % 2},{i},{(0, 3, 4)[i % 3]},0")
        folder = d / "patches" / f"patient_{p}_node_{nd}"
        folder.mkdir(parents=True, exist_ok=True)
        colour = np.array([i % 256, (7 * i) % 256, 255 - i % 256], dtype=np.uint8)
        img = np.broadcast_to(colour, (12, 12, 3)).copy()
        skimage.io.imsave(folder / f"patch_patient_{p}_node_{nd}_x_{x}_y_{y}.png", img, check_contrast=False)
    (d / "metadata.csv").write_text("\n".join(lines) + "\n")
    return root


class FakeInception(nn.Module):
    """model(uint8 NCHW, return_features=True) -> (n, 6) like NVlabs' Inception (6 features, cheap)."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("proj", torch.linspace(-1, 1, 3 * 6).reshape(3, 6))

    def forward(self, x: Tensor, return_features: bool = False) -> Tensor:
        if x.dtype != torch.uint8 or not return_features:
            raise RuntimeError("expected uint8 images and return_features=True")
        return x.float().mean(dim=(2, 3)) @ self.proj


TINY = dict(image_size=8, n_target=8, n_source=16, n_heldout=6, n_eval=6, n_null=2, n_loss=4, n_grid=4,
            pretrain_steps=2, pretrain_batch=4, nfe=2, feature_width=4, feature_depth=2, n_projections=16,
            model_config=(), eval_chunk=4)


def tiny_config(**kw) -> TI.ImageFinetuneConfig:
    base = dict(steps=2, batch_size=4, lr=1e-3, beta0=1.0, cache_size=4, n_trajectories=2, n_evals=1,
                time_grid=2, solver_steps=2, n_curve=3)
    base.update(kw)
    return TI.ImageFinetuneConfig(**base)


def smoke_params(**over) -> dict:
    return resolve_parameters(TI.PROFILE_TABLE, profile="smoke", seed=0, device="cpu", **over)
