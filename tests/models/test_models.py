"""Tests of gftlib.models: shapes, reference equivalence with torchcfm's UNet, numerics, validation."""

from __future__ import annotations

import math

import pytest
import torch

from gftlib.models import (
    MLPVelocity,
    UNetVelocity,
    build_model,
    count_parameters,
    sinusoidal_embedding,
    to_fast_layout,
    unet_config,
)

torch.set_num_threads(1)


def _rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach().float(), b.detach().float()
    return float((a - b).norm() / b.norm())


def _tiny(**over) -> UNetVelocity:
    """Tiny UNet with random (non-zero) output layers, so outputs depend on every parameter."""
    return build_model("unet", seed=0, **{**unet_config("tiny"), "zero_init": False, **over}).eval()


def _images(n: int, size: int = 16, channels: int = 3, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, channels, size, size, generator=g), torch.rand(n, generator=g)


# --------------------------------------------------------------------------------------------- embedding


def test_sinusoidal_embedding_closed_form():
    t = torch.tensor([0.0, 0.25, 1.0])
    emb = sinusoidal_embedding(t, 7, scale=1000.0, max_period=10000.0)
    assert emb.shape == (3, 7)
    half = 3
    for i in range(half):
        w = 10000.0 ** (-i / half)
        torch.testing.assert_close(emb[:, i], torch.cos(1000.0 * t * w), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(emb[:, half + i], torch.sin(1000.0 * t * w), rtol=1e-5, atol=1e-5)
    assert torch.all(emb[:, -1] == 0)  # odd dim: zero padding column
    with pytest.raises(ValueError, match=r"t must have shape \(n,\)"):
        sinusoidal_embedding(torch.zeros(3, 1), 8)


# --------------------------------------------------------------------------------------------------- MLP


def test_mlp_shapes_dtype_and_time_dependence():
    torch.manual_seed(0)
    model = MLPVelocity(3, hidden=32, depth=2, time_features=16)
    x = torch.randn(5, 3)
    out = model(x, torch.full((5,), 0.2))
    assert out.shape == (5, 3) and out.dtype == torch.float32
    out2 = model(x, torch.full((5,), 0.8))
    assert _rel_err(out2, out) > 1e-2  # exactly 0 if t were ignored
    # float64 model, float64 input -> float64 output
    assert model.double()(x.double(), torch.rand(5, dtype=torch.float64)).dtype == torch.float64


def test_mlp_layers_and_gradients():
    model = build_model("mlp", seed=0, dim=2, hidden=16, depth=4, time_features=8, activation="gelu")
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert len(linears) == 5 and linears[0].in_features == 2 + 8
    model(torch.randn(4, 2), torch.rand(4)).square().sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


def test_mlp_rejects_bad_input():
    model = MLPVelocity(2, hidden=8, depth=1, time_features=4)
    with pytest.raises(ValueError, match=r"x must have shape \(n, dim\) with dim=2"):
        model(torch.randn(4, 3), torch.rand(4))
    with pytest.raises(ValueError, match=r"x must have shape \(n, dim\)"):
        model(torch.randn(4, 2, 1), torch.rand(4))
    with pytest.raises(ValueError, match=r"t must have shape \(n,\) = \(4,\)"):
        model(torch.randn(4, 2), torch.rand(4, 1))
    with pytest.raises(ValueError, match=r"t must have shape \(n,\) = \(4,\)"):
        model(torch.randn(4, 2), torch.rand(3))
    with pytest.raises(TypeError, match="t must be a torch.Tensor"):
        model(torch.randn(4, 2), 0.5)
    with pytest.raises(ValueError, match="activation must be one of"):
        MLPVelocity(2, activation="swish")
    with pytest.raises(ValueError, match="depth must be an integer >= 1, got 0"):
        MLPVelocity(2, depth=0)


# -------------------------------------------------------------------------------------------------- UNet


def test_unet_tiny_and_small_shapes():
    model = build_model("unet", seed=0, config="tiny")
    x, t = _images(8)
    out = model(x, t)
    assert out.shape == x.shape and out.dtype == x.dtype
    # ADM zero init: the untrained network is exactly the zero field
    assert torch.count_nonzero(out) == 0
    small = build_model("unet", seed=0, config="small", zero_init=False)
    xs, ts = _images(2, size=small.image_size)
    assert small(xs, ts).shape == xs.shape


def test_unet_other_channel_counts_and_float64():
    model = build_model("unet", seed=0, in_channels=1, image_size=8, base_channels=8, channel_mult=(1, 2, 2),
                        num_res_blocks=1, attention_resolutions=(4, 2), num_head_channels=4, zero_init=False)
    x, t = _images(3, size=8, channels=1)
    assert model(x, t).shape == (3, 1, 8, 8)
    assert model.double()(x.double(), t.double()).dtype == torch.float64


def _torchcfm_state_to_ours(ref: torch.nn.Module, ours: UNetVelocity) -> dict[str, torch.Tensor]:
    """Map torchcfm's UNetModel weights onto ours (same parameter order; qkv rows reordered).

    torchcfm's legacy attention orders the qkv rows as (head, q/k/v, head_dim); ours as
    (q/k/v, head, head_dim). Its 1x1 Conv1d weights are our Linear weights with a trailing 1.
    """
    rs, ms = ref.state_dict(), ours.state_dict()
    assert len(rs) == len(ms)
    new = {}
    for (rk, rv), (mk, mv) in zip(rs.items(), ms.items()):
        assert rv.numel() == mv.numel(), (rk, mk)
        if "qkv" in rk:
            heads = ours.get_submodule(mk.rsplit(".", 2)[0]).num_heads
            rv = rv.reshape(heads, 3, mv.shape[0] // (3 * heads), -1).permute(1, 0, 2, 3)
        new[mk] = rv.reshape(mv.shape)
    return new


@pytest.mark.parametrize("num_head_channels", [-1, 16])
def test_unet_matches_torchcfm_reference(num_head_channels):
    """Same function as torchcfm's ADM UNet given the same weights (its time input is 1000 * t)."""
    unet_mod = pytest.importorskip("torchcfm.models.unet.unet")
    torch.manual_seed(0)
    ref = unet_mod.UNetModelWrapper(dim=(3, 16, 16), num_channels=32, channel_mult=[1, 2], num_res_blocks=2,
                                    num_heads=2, num_head_channels=num_head_channels,
                                    attention_resolutions="8").eval()
    with torch.no_grad():
        for p in ref.parameters():  # torchcfm zero-initialises output layers: randomise everything
            p.normal_(0.0, 0.1)
    ours = build_model("unet", in_channels=3, image_size=16, base_channels=32, channel_mult=(1, 2),
                       num_res_blocks=2, attention_resolutions=(8,), num_heads=2,
                       num_head_channels=num_head_channels, min_group_channels=1).eval()
    assert count_parameters(ours) == count_parameters(ref)
    ours.load_state_dict(_torchcfm_state_to_ours(ref, ours))
    x, t = _images(4)
    with torch.no_grad():
        expected = ref(1000.0 * t, x)
        got = ours(x, t)
    assert expected.abs().max() > 0.1
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)


def test_cifar10_config_parameter_count():
    unet_mod = pytest.importorskip("torchcfm.models.unet.unet")
    ref = unet_mod.UNetModelWrapper(dim=(3, 32, 32), num_res_blocks=2, num_channels=128,
                                    channel_mult=[1, 2, 2, 2], num_heads=4, num_head_channels=64,
                                    attention_resolutions="16", dropout=0.1)
    expected = count_parameters(ref)
    ours = build_model("unet", config="cifar10")
    assert abs(count_parameters(ours) - expected) <= 0.01 * expected
    assert abs(count_parameters(ours) - 35.7e6) <= 0.01 * 35.7e6
    cfg = unet_config("cifar10")
    assert cfg["dropout"] == 0.1 and cfg["image_size"] == 32 and cfg["channel_mult"] == (1, 2, 2, 2)


def test_unet_time_conditioning_matters():
    model = _tiny()
    x, _ = _images(4)
    a = model(x, torch.full((4,), 0.1))
    b = model(x, torch.full((4,), 0.9))
    assert _rel_err(a, b) > 1e-2  # exactly 0 if t were ignored
    # each row only depends on its own time
    t = torch.tensor([0.1, 0.9, 0.1, 0.9])
    mixed = model(x, t)
    torch.testing.assert_close(mixed[0], a[0], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(mixed[1], b[1], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("scale_shift", [False, True])
def test_every_res_block_sees_the_time_embedding(scale_shift):
    """GroupNorm must not erase the time bias (it would with one channel per group)."""
    from gftlib.models.unet_blocks import ResBlock

    model = _tiny(use_scale_shift_norm=scale_shift)
    blocks = [m for m in model.modules() if isinstance(m, ResBlock)]
    assert len(blocks) == 2 * 1 + 2 + 2 * 2  # encoder, middle, decoder: 2 levels, 1 res block each
    g = torch.Generator().manual_seed(0)
    for block in blocks:
        x = torch.randn(2, block.conv1.in_channels, 8, 8, generator=g)
        e1, e2 = torch.randn(2, 2, block.emb_proj.in_features, generator=g)
        assert _rel_err(block(x, e1), block(x, e2)) > 1e-2


def test_unet_scale_shift_conditioning():
    model = _tiny(use_scale_shift_norm=True)
    assert count_parameters(model) > count_parameters(_tiny())  # emb projections are twice as wide
    x, _ = _images(2)
    assert _rel_err(model(x, torch.zeros(2)), model(x, torch.ones(2))) > 1e-2


def test_unet_bf16_autocast_close_to_fp32():
    model = _tiny()
    x, t = _images(4)
    with torch.no_grad():
        ref = model(x, t)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = model(x, t)
    assert low.dtype == torch.float32  # returned in x.dtype
    assert torch.isfinite(low).all()
    assert 0 < _rel_err(low, ref) < 5e-2  # > 0: bf16 was actually used


def test_unet_channels_last_matches_contiguous():
    model = _tiny()
    x, t = _images(4)
    with torch.no_grad():
        ref = model(x, t)
        x_cl = x.contiguous(memory_format=torch.channels_last)
        assert not x_cl.is_contiguous()
        out_cl = model(x_cl, t)
        fast = to_fast_layout(model)
        assert fast is model
        assert model.input_conv.weight.is_contiguous(memory_format=torch.channels_last)
        out_fast = model(x_cl, t)
    torch.testing.assert_close(out_cl, ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out_fast, ref, rtol=1e-5, atol=1e-5)


def test_unet_deterministic_given_seed():
    x, t = _images(2)
    state = torch.get_rng_state()
    a, b = _tiny(), _tiny()
    assert torch.equal(torch.get_rng_state(), state)  # seed= does not touch the global RNG
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert ka == kb and torch.equal(va, vb)
    torch.manual_seed(3)
    c = UNetVelocity(**{**unet_config("tiny"), "dropout": 0.5, "zero_init": False})
    torch.manual_seed(3)
    d = UNetVelocity(**{**unet_config("tiny"), "dropout": 0.5, "zero_init": False})
    torch.manual_seed(7)
    out_c = c(x, t)  # train mode: dropout active
    torch.manual_seed(7)
    out_d = d(x, t)
    assert torch.equal(out_c, out_d)
    assert torch.equal(a(x, t), b(x, t))
    assert not torch.equal(c.eval()(x, t), out_c)  # dropout was active in train mode


@pytest.mark.parametrize("zero_init", [False, True])
def test_unet_gradients_reach_every_parameter(zero_init):
    model = _tiny(zero_init=zero_init, use_scale_shift_norm=zero_init).train()
    x, t = _images(4)
    (model(x, t) - x).square().sum().backward()  # output is 0 under zero_init: compare with x
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing  # DDP: no unused parameters
    if not zero_init:
        dead = [n for n, p in model.named_parameters() if p.grad.abs().sum() == 0]
        assert not dead


def test_config_round_trip_and_overrides():
    model = build_model("unet", seed=0, config="tiny", dropout=0.2, num_heads=4)
    assert model.config["dropout"] == 0.2 and model.config["num_heads"] == 4
    clone = build_model("unet", **model.config)
    clone.load_state_dict(model.state_dict())
    mlp = build_model("mlp", dim=2, hidden=8)
    assert build_model("mlp", **mlp.config).config == mlp.config
    assert unet_config("tiny") is not unet_config("tiny")  # fresh dicts


def test_mlp_time_scale_is_part_of_the_model():
    # emb(time_scale * t): a model with time_scale s at time t equals one with scale 1 at time s * t
    slow = build_model("mlp", dim=2, hidden=8, time_scale=1.0, seed=0)
    fast = build_model("mlp", dim=2, hidden=8, time_scale=250.0, seed=0)
    assert fast.config["time_scale"] == 250.0 and slow.time_embed.scale == 1.0
    rebuilt = build_model("mlp", **fast.config)
    rebuilt.load_state_dict(fast.state_dict())
    x, t = torch.randn(5, 2), torch.rand(5) * 1e-3
    torch.testing.assert_close(rebuilt(x, t), fast(x, t))
    torch.testing.assert_close(fast(x, t), slow(x, 250.0 * t))
    with pytest.raises(ValueError, match="time_scale"):
        build_model("mlp", dim=2, time_scale=0.0)


# ------------------------------------------------------------------------------------------ validation


def test_unet_rejects_bad_configs():
    msg = r"image size 18 .* the UNet with channel_mult=\(1, 2, 2\) .*needs a multiple of 4"
    with pytest.raises(ValueError, match=msg):
        UNetVelocity(image_size=18, base_channels=8, channel_mult=(1, 2, 2), attention_resolutions=())
    with pytest.raises(ValueError, match="attention_resolutions contains 5"):
        UNetVelocity(image_size=16, base_channels=8, channel_mult=(1, 2), attention_resolutions=(5,))
    with pytest.raises(ValueError, match="num_heads=3 must divide the 16 channels"):
        UNetVelocity(image_size=16, base_channels=8, channel_mult=(1, 2), attention_resolutions=(8,),
                     num_heads=3)
    with pytest.raises(ValueError, match="num_head_channels=5 must divide"):
        UNetVelocity(image_size=16, base_channels=8, channel_mult=(1, 2), num_head_channels=5)
    with pytest.raises(ValueError, match="num_head_channels must be -1 or a positive integer"):
        UNetVelocity(image_size=16, base_channels=8, channel_mult=(1, 2), num_head_channels=0)
    with pytest.raises(ValueError, match="dropout must be a finite number >= 0"):
        UNetVelocity(image_size=16, base_channels=8, channel_mult=(1, 2), dropout=1.0)
    with pytest.raises(ValueError, match=r"channel_mult must be a non-empty tuple"):
        UNetVelocity(image_size=16, base_channels=8, channel_mult=())
    with pytest.raises(TypeError, match=r"channel_mult must be a tuple of positive integers"):
        UNetVelocity(image_size=16, base_channels=8, channel_mult="12")
    with pytest.raises(ValueError, match=r"channel_mult\[1\] must be an integer >= 1, got 0"):
        UNetVelocity(image_size=16, base_channels=8, channel_mult=(1, 0))


def test_unet_rejects_bad_inputs():
    model = build_model("unet", seed=0, config="tiny")
    x, t = _images(2)
    with pytest.raises(ValueError, match=r"x must have 3 channels \(in_channels\), got 1"):
        model(x[:, :1], t)
    with pytest.raises(ValueError, match=r"x must have 4 dimensions \(n, C, H, W\)"):
        model(x[0], t)
    with pytest.raises(ValueError, match=r"x must be 16x16 \(image_size\), got 8x8"):
        model(x[:, :, :8, :8], t)
    with pytest.raises(ValueError, match=r"t must have shape \(n,\) = \(2,\)"):
        model(x, t[:1])
    with pytest.raises(ValueError, match=r"t must have shape \(n,\)"):
        model(x, torch.tensor(0.5))
    with pytest.raises(TypeError, match="t must be a floating-point tensor"):
        model(x, torch.tensor([0, 1]))


def test_build_model_rejects_unknown_names():
    with pytest.raises(ValueError, match="unknown UNet config name 'huge'"):
        unet_config("huge")
    with pytest.raises(ValueError, match="unknown UNet config name 'huge'"):
        build_model("unet", config="huge")
    with pytest.raises(ValueError, match="kind must be one of 'mlp', 'unet', 'torchcfm'; got 'transformer'"):
        build_model("transformer", dim=2)
    with pytest.raises(TypeError, match=r"unknown unet model argument\(s\) \['widht'\]"):
        build_model("unet", config="tiny", widht=3)
    with pytest.raises(TypeError, match="seed must be an integer or None"):
        build_model("mlp", dim=2, seed=1.5)


def test_count_parameters_trainable_only():
    model = build_model("mlp", dim=2, hidden=4, depth=1, time_features=2)
    total = (2 + 2) * 4 + 4 + 4 * 2 + 2
    assert count_parameters(model) == total
    model.net[0].weight.requires_grad_(False)
    assert count_parameters(model, trainable_only=True) == total - 16
    assert math.isclose(count_parameters(model), total)
