"""FID you can trust: the Fréchet distance against pytorch-fid's algorithm, the preprocessing
convention with a stand-in for NVlabs' TorchScript Inception, and reference statistics files."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gftlib.eval.features import (feature_statistics, load_fid_statistics, load_inception_features, quantize_uint8,
                             save_fid_statistics)
from gftlib.eval.metrics import frechet_distance, frechet_distance_from_moments


def reference_frechet(act1: np.ndarray, act2: np.ndarray, eps: float = 1e-6) -> float:
    """pytorch-fid 0.3.0's calculate_activation_statistics + calculate_frechet_distance, written out
    independently (pytorch-fid itself needs torchvision, which the pinned torch has no build of here)."""
    mu1, sigma1 = np.mean(act1, axis=0), np.cov(act1, rowvar=False)
    mu2, sigma2 = np.mean(act2, axis=0), np.cov(act2, rowvar=False)
    diff = mu1 - mu2
    covmean = scipy.linalg.sqrtm(sigma1.dot(sigma2))
    if not np.isfinite(covmean).all():
        offset = np.eye(sigma1.shape[0]) * eps
        covmean = scipy.linalg.sqrtm((sigma1 + offset).dot(sigma2 + offset))
    if np.iscomplexobj(covmean):
        assert np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3)
        covmean = covmean.real
    return float(diff.dot(diff) + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))


def _features(n: int, f: int, seed: int, shift: float) -> np.ndarray:
    rng = np.random.default_rng(seed)
    mix = rng.normal(size=(f, f)) / np.sqrt(f)  # correlated, non-isotropic features
    return rng.normal(size=(n, f)) @ mix + shift * rng.normal(size=f)


@pytest.mark.parametrize("f,n,m", [(16, 200, 150), (256, 600, 500)])
def test_frechet_equals_pytorch_fid_reference(f, n, m):
    a, b = _features(n, f, 0, 0.0), _features(m, f, 1, 0.3)
    ref = reference_frechet(a, b)
    assert ref > 0
    for method in ("sqrtm", "eigh"):
        assert frechet_distance(a, b, method=method) == pytest.approx(ref, rel=1e-6)
    same = _features(n, f, 0, 0.0)
    assert frechet_distance(a, same) == pytest.approx(reference_frechet(a, same), abs=1e-8)


def test_frechet_from_moments_and_statistics_files(tmp_path):
    a, b = _features(300, 32, 2, 0.0), _features(250, 32, 3, 0.5)
    mu_a, s_a = feature_statistics(torch.from_numpy(a))
    mu_b, s_b = feature_statistics(torch.from_numpy(b))
    path = save_fid_statistics(tmp_path / "ref_stats.npz", mu_b, s_b)
    mu_r, s_r = load_fid_statistics(path)
    assert np.array_equal(mu_r, mu_b) and np.array_equal(s_r, s_b)
    ref = reference_frechet(a, b)
    assert frechet_distance_from_moments(mu_a, s_a, mu_r, s_r) == pytest.approx(ref, rel=1e-6)
    np.savez(tmp_path / "bad.npz", m=mu_b)
    with pytest.raises(ValueError, match=r"expected arrays 'mu' and 'sigma', found \['m'\]"):
        load_fid_statistics(tmp_path / "bad.npz")
    with pytest.raises(FileNotFoundError, match="missing.npz"):
        load_fid_statistics(tmp_path / "missing.npz")
    with pytest.raises(ValueError, match="feature dimensions differ"):
        frechet_distance_from_moments(mu_a, s_a, mu_b[:3], s_b[:3, :3])


def test_quantisation_matches_torchcfm_convention():
    """torchcfm's compute_fid.py feeds clean-fid ``(x * 127.5 + 128).clip(0, 255).to(uint8)``: the
    same uint8 values as round((x + 1) * 127.5), except possibly at exact .5 ties (off by one)."""
    x = torch.rand(200_000, generator=torch.Generator().manual_seed(0)) * 2.4 - 1.2
    ours = quantize_uint8(x).int()
    theirs = (x * 127.5 + 128).clip(0, 255).to(torch.uint8).int()
    differ = ours != theirs
    frac = ((x.double() + 1) * 127.5) % 1.0
    assert bool(((ours - theirs).abs() <= 1).all())
    assert bool((frac[differ] - 0.5).abs().max() < 1e-4) if differ.any() else True
    assert int(differ.sum()) <= 200_000 * 1e-3
    assert quantize_uint8(torch.tensor([-1.0, 1.0, -2.0, 2.0])).tolist() == [0, 255, 0, 255]


class FakeNVlabsInception(nn.Module):
    """Stands in for inception-2015-12-05.pt with its documented input handling: uint8 NCHW of any
    size, resized inside to 299x299 (bilinear, align_corners=False), then (v - 128) / 128. Features:
    per-channel mean and max of the normalised input and the side of the input it was given."""

    def forward(self, x: Tensor, return_features: bool = False) -> Tensor:
        if x.dtype != torch.uint8:
            raise RuntimeError("expected uint8 images")
        if not return_features:
            raise RuntimeError("expected return_features=True")
        side = float(x.shape[2])
        y = F.interpolate(x.float(), size=(299, 299), mode="bilinear", align_corners=False)
        y = (y - 128.0) / 128.0
        n = x.shape[0]
        return torch.cat([y.mean(dim=(2, 3)), y.amax(dim=(2, 3)), torch.full((n, 1), side)], dim=1)


@pytest.mark.filterwarnings("ignore:.*torch.jit.script.*is deprecated:DeprecationWarning")
def test_inception_preprocessing_convention(tmp_path):
    path = tmp_path / "inception-2015-12-05.pt"
    torch.jit.script(FakeNVlabsInception()).save(str(path))
    ext = load_inception_features(path)
    x = torch.rand(5, 3, 32, 32, generator=torch.Generator().manual_seed(1)) * 2 - 1
    feats = ext(x)
    assert feats.shape == (5, 7)
    assert bool((feats[:, 6] == 32).all())  # gftlib hands over the image at its own size
    u8 = ((x + 1) * 127.5).round().clamp(0, 255)
    y = (F.interpolate(u8, size=(299, 299), mode="bilinear", align_corners=False) - 128) / 128
    torch.testing.assert_close(feats[:, :3], y.mean(dim=(2, 3)))
    assert float(feats[:, 3:6].max()) <= 127 / 128  # the network's inputs lie in [-1, 127/128]
    state = tmp_path / "pt_inception-2015-12-05-6726825d.pth"
    torch.save({"conv.weight": torch.zeros(1)}, state)
    with pytest.raises(ValueError, match="not a TorchScript file.*inception-2015-12-05.pt"):
        load_inception_features(state)
