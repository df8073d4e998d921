"""torchcfm checkpoints (load / save) and adapters for flow_matching and generic modules."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from gftlib.models import (TORCHCFM_CIFAR10, TorchCFMVelocity, VelocityAdapter, build_model, count_parameters,
                           flow_matching_velocity, load_torchcfm, save_torchcfm)

UNetModelWrapper = pytest.importorskip("torchcfm.models.unet.unet").UNetModelWrapper

SMALL = {"dim": (1, 16, 16), "num_channels": 32, "num_res_blocks": 1, "channel_mult": [1, 2],
         "attention_resolutions": "8", "num_heads": 2, "num_head_channels": 16, "dropout": 0.1}


def _randomise(net: nn.Module, seed: int) -> dict[str, torch.Tensor]:
    """Give every parameter random values (torchcfm zero-initialises output layers, which would make
    any two networks agree trivially) and return a copy of the state dict."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    return {k: v.clone() for k, v in net.state_dict().items()}


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def _check_release_roundtrip(tmp_path, config: dict, batch: int) -> None:
    torch.manual_seed(0)
    ref = UNetModelWrapper(**config).eval()
    net_sd = _randomise(ref, 1)
    ema_sd = _randomise(ref, 2)
    release = {"net_model": {f"module.{k}": v for k, v in net_sd.items()},  # DataParallel prefix
               "ema_model": {f"module.{k}": v for k, v in ema_sd.items()}, "step": 400000}
    path = tmp_path / "otcfm_weights.pt"
    torch.save(release, path)
    c, h, w = config["dim"]
    g = torch.Generator().manual_seed(3)
    x = torch.randn(batch, c, h, w, generator=g)
    t = torch.rand(batch, generator=g)
    with torch.no_grad():
        for ema, sd in ((True, ema_sd), (False, net_sd)):
            ref.load_state_dict(sd)
            expected = ref(t, x)
            model = load_torchcfm(path, ema=ema, **({} if config is TORCHCFM_CIFAR10 else config))
            assert not model.training
            if config is TORCHCFM_CIFAR10:
                assert count_parameters(model) == 35_746_307
            got = model(x, t)
            assert expected.abs().max() > 0
            assert _rel(got, expected) <= 1e-5
        # save_torchcfm -> torchcfm's own loading code (compute_fid.py: load_state_dict(ckpt["ema_model"]))
        out = tmp_path / "finetuned.pt"
        save_torchcfm(model, out, step=7)
        ckpt = torch.load(out, weights_only=True)
        assert set(ckpt) == {"net_model", "ema_model", "step"} and ckpt["step"] == 7
        fresh = UNetModelWrapper(**config).eval()
        fresh.load_state_dict(ckpt["ema_model"])
        assert _rel(fresh(t, x), model(x, t)) <= 1e-5
        again = load_torchcfm(out, **({} if config is TORCHCFM_CIFAR10 else config))
        assert torch.equal(again(x, t), model(x, t))


def test_torchcfm_cifar10_release_format(tmp_path, single_thread):
    _check_release_roundtrip(tmp_path, TORCHCFM_CIFAR10, batch=2)


def test_torchcfm_small_config_and_state_dict_input(tmp_path, single_thread):
    _check_release_roundtrip(tmp_path, SMALL, batch=3)
    torch.manual_seed(0)
    ref = UNetModelWrapper(**SMALL).eval()
    sd = _randomise(ref, 5)
    model = load_torchcfm(sd, **SMALL)  # a bare state dict works too
    x, t = torch.randn(2, 1, 16, 16), torch.tensor([0.0, 1.0])
    with torch.no_grad():
        assert _rel(model(x, t), ref(t, x)) <= 1e-5
        assert torch.equal(model(x, torch.tensor(0.5)), model(x, torch.full((2,), 0.5)))


def test_build_model_torchcfm_kind():
    a = build_model("torchcfm", seed=3, **SMALL)
    b = build_model("torchcfm", seed=3, **a.config)  # model.config rebuilds it
    assert isinstance(a, TorchCFMVelocity) and a.config["dim"] == (1, 16, 16)
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))
    with pytest.raises(TypeError, match="unknown torchcfm model argument"):
        build_model("torchcfm", image_size=32)


class _Opaque:
    """An arbitrary pickled object, as old checkpoints with absl FLAGS may contain."""


def test_torchcfm_bad_inputs(tmp_path):
    torch.manual_seed(0)
    sd = UNetModelWrapper(**SMALL).state_dict()
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        load_torchcfm(tmp_path / "nope.pt")
    with pytest.raises(ValueError, match="does not match torchcfm UNetModelWrapper.*missing"):
        load_torchcfm({"ema_model": sd}, **{**SMALL, "num_res_blocks": 2})
    with pytest.raises(KeyError, match="ema_model"):
        load_torchcfm({"net_model": sd}, ema=True, **SMALL)
    with pytest.raises(ValueError, match="release format"):
        load_torchcfm({"weights": 3})
    torch.save({"ema_model": sd, "flags": _Opaque()}, tmp_path / "pickled.pt")
    with pytest.raises(ValueError, match="weights_only=False"):
        load_torchcfm(tmp_path / "pickled.pt", **SMALL)
    trusted = torch.load(tmp_path / "pickled.pt", weights_only=False)
    assert isinstance(load_torchcfm(trusted, **SMALL), TorchCFMVelocity)
    with pytest.raises(TypeError, match="unknown torchcfm UNetModelWrapper argument.*num_chanels"):
        TorchCFMVelocity(num_chanels=64)
    with pytest.raises(ValueError, match="learn_sigma"):
        TorchCFMVelocity(**SMALL, learn_sigma=True)
    with pytest.raises(TypeError, match="TorchCFMVelocity or a torchcfm UNetModelWrapper"):
        save_torchcfm(nn.Linear(2, 2), tmp_path / "x.pt")
    assert not (tmp_path / "x.pt").exists()


class _KeywordNet(nn.Module):
    """Stands in for a flow_matching network: ``forward(x, t, label)`` with t of shape (n,)."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Parameter(torch.tensor(2.0))

    def forward(self, x: torch.Tensor, t: torch.Tensor, label: int = 0) -> torch.Tensor:
        assert t.shape == (x.shape[0],)
        return self.a * x * t.view(-1, *([1] * (x.ndim - 1))) + label


def test_flow_matching_adapter():
    fm = pytest.importorskip("flow_matching.utils")

    class Wrapped(fm.ModelWrapper):  # the documented flow_matching pattern
        pass

    model = flow_matching_velocity(Wrapped(_KeywordNet()), label=3)
    x, t = torch.randn(4, 2), torch.tensor([0.0, 0.25, 0.5, 1.0])
    assert torch.allclose(model(x, t), 2.0 * x * t[:, None] + 3)
    assert sum(p.numel() for p in model.parameters()) == 1  # parameters are visible for fine-tuning


def test_generic_adapter_signatures():
    x, t = torch.randn(3, 2, 4, 4), torch.tensor([0.1, 0.2, 0.7])

    class TX(nn.Module):
        def forward(self, tt, xx):
            return xx * tt.view(-1, 1, 1, 1)

    class Column(nn.Module):
        def forward(self, xx, tt):
            assert tt.shape == (xx.shape[0], 1)
            return xx * tt.view(-1, 1, 1, 1)

    class Scalar(nn.Module):
        def forward(self, xx, tt):
            assert tt.ndim == 0
            return xx * tt

    expected = x * t.view(-1, 1, 1, 1)
    assert torch.allclose(VelocityAdapter(TX(), signature="t,x")(x, t), expected)
    assert torch.allclose(VelocityAdapter(Column(), time="column")(x, t), expected)
    same = torch.full((3,), 0.4)
    assert torch.allclose(VelocityAdapter(Scalar(), time="scalar")(x, same), x * 0.4)
    with pytest.raises(ValueError, match="rows of t differ"):
        VelocityAdapter(Scalar(), time="scalar")(x, t)
    # A flow from data (s = 0) to noise (s = 1): v(x, t) = -u(x, 1 - t).
    rev = VelocityAdapter(TX(), signature="t,x", data_at=0)
    assert torch.allclose(rev(x, t), -(x * (1 - t).view(-1, 1, 1, 1)))
    with pytest.raises(ValueError, match="signature"):
        VelocityAdapter(TX(), signature="x t")
    with pytest.raises(ValueError, match="data_at"):
        VelocityAdapter(TX(), data_at=0.5)
    with pytest.raises(ValueError, match=r"t must have shape \(3,\)"):
        VelocityAdapter(TX(), signature="t,x")(x, torch.zeros(2))
    class Flat(nn.Module):
        def forward(self, xx, tt):
            return xx.flatten(1)

    with pytest.raises(ValueError, match="input's shape"):
        VelocityAdapter(Flat())(x, t)
