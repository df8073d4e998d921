"""Tests of gftlib.eval.features: the fixed random conv features and the TorchScript Inception loader."""

from __future__ import annotations

import math
import re

import pytest
import torch
from torch import Tensor, nn

from gftlib.data.datasets import image_patches
from gftlib.eval.features import (
    RandomConvFeatures,
    extract_features,
    frechet_feature_distance,
    load_inception_features,
)
from gftlib.eval.metrics import frechet_distance

torch.set_num_threads(1)


def test_weights_fixed_by_seed_not_global_rng():
    torch.manual_seed(123)
    a = RandomConvFeatures(seed=0, width=8)
    torch.manual_seed(456)
    b = RandomConvFeatures(seed=0, width=8)
    c = RandomConvFeatures(seed=1, width=8)
    for (na, wa), (nb, wb), (_, wc) in zip(a.named_buffers(), b.named_buffers(), c.named_buffers()):
        assert na == nb and wa.dtype == torch.float32
        assert torch.equal(wa, wb) and not torch.equal(wa, wc)
    # the first weight is the generator's first draw, scaled by the He factor sqrt(2 / fan_in)
    g = torch.Generator().manual_seed(0)
    first = torch.randn(8, 3, 3, 3, generator=g) * math.sqrt(2.0 / 27)
    assert torch.equal(a.weight_0_0, first)
    assert sum(1 for p in a.parameters()) == 0  # nothing trainable


def test_weight_scale_is_he():
    net = RandomConvFeatures(seed=3, width=32)
    for name, w in net.named_buffers():
        fan_in = w.shape[1] * 9
        target = math.sqrt(2.0 / fan_in)
        se = target / math.sqrt(2 * w.numel())  # standard error of a Gaussian sample std
        assert abs(float(w.std()) - target) < 5 * se, name


def test_output_shape_and_batch_independence():
    net = RandomConvFeatures(seed=0, width=8, depth=3)
    x = torch.rand(5, 3, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1
    f = net(x)
    assert f.shape == (5, net.feature_dim) == (5, 8 * 7)
    assert torch.isfinite(f).all() and (f >= 0).all()  # means of ReLU outputs
    torch.testing.assert_close(net(x[2:3]), f[2:3])
    f64 = net(x.double())
    assert f64.dtype == torch.float64
    torch.testing.assert_close(f64.float(), f, rtol=1e-4, atol=1e-5)


def test_features_separate_image_sources():
    net = RandomConvFeatures(seed=0, width=8)  # F = 56 < n
    nat_a = image_patches("natural", size=16, n=300, split="train", seed=0)
    nat_b = image_patches("natural", size=16, n=300, split="train", seed=1)
    ihc = image_patches("ihc", size=16, n=300, split="train", seed=0)
    same = frechet_feature_distance(nat_a, nat_b, net, batch_size=128)
    other = frechet_feature_distance(nat_a, ihc, net, batch_size=128)
    assert other > 3 * same
    assert frechet_feature_distance(nat_a, nat_a, net) == pytest.approx(0.0, abs=1e-6)
    fa = extract_features(nat_a, net, batch_size=64)
    fb = extract_features(ihc, net, batch_size=1000)
    assert fa.dtype == torch.float64
    assert frechet_distance(fa, fb) == pytest.approx(other, rel=1e-6)


def test_random_features_reject_bad_input():
    net = RandomConvFeatures(seed=0, width=4, depth=3)
    with pytest.raises(ValueError, match="3 channels"):
        net(torch.zeros(2, 1, 8, 8))
    with pytest.raises(ValueError, match="at least 4x4"):
        net(torch.zeros(2, 3, 2, 2))
    with pytest.raises(ValueError, match="width must be an integer >= 1"):
        RandomConvFeatures(width=0)
    with pytest.raises(TypeError, match="seed must be an integer"):
        RandomConvFeatures(seed=0.5)


class FakeInception(nn.Module):
    """Same call signature as NVlabs' inception-2015-12-05.pt: model(uint8 NCHW, return_features=True).

    It returns 16 features instead of 2048 so that the Fréchet distance in the test stays cheap.
    """

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("proj", torch.linspace(-1, 1, 3 * 16).reshape(3, 16))

    def forward(self, x: Tensor, return_features: bool = False) -> Tensor:
        if x.dtype != torch.uint8:
            raise RuntimeError("expected uint8 images")
        if not return_features:
            raise RuntimeError("expected return_features=True")
        return x.float().mean(dim=(2, 3)) @ self.proj


@pytest.mark.filterwarnings("ignore:.*torch.jit.script.*is deprecated:DeprecationWarning")
def test_inception_loader_with_fake_torchscript(tmp_path):
    path = tmp_path / "inception-2015-12-05.pt"
    torch.jit.script(FakeInception()).save(str(path))
    ext = load_inception_features(path)
    x = torch.rand(20, 3, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1
    feats = ext(x)
    u8 = ((x + 1) * 127.5).round().clamp(0, 255)
    assert feats.shape == (20, 16)
    torch.testing.assert_close(feats, u8.mean(dim=(2, 3)) @ FakeInception().proj)
    assert frechet_feature_distance(x, x, ext, batch_size=7) == pytest.approx(0.0, abs=1e-6)
    assert frechet_feature_distance(x, -x, ext, batch_size=7, method="eigh") > 0
    with pytest.raises(ValueError, match="3-channel"):
        ext(torch.zeros(2, 1, 8, 8))


def test_inception_missing_path(tmp_path):
    missing = tmp_path / "no" / "inception-2015-12-05.pt"
    with pytest.raises(FileNotFoundError, match=re.escape(str(missing))):
        load_inception_features(missing)
    with pytest.raises(FileNotFoundError, match="never downloads"):
        load_inception_features(missing)
