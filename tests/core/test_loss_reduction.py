"""losses.ElementMean: torchcfm's reduction (mean over all elements) = gftlib's sum over dims / D."""

from __future__ import annotations

import pytest
import torch

from gftlib.paths.interpolants import Interpolant
from gftlib.losses import ElementMean, cfm_loss, gft_loss
from gftlib.models import build_model


def _grads(model, loss):
    model.zero_grad()
    loss.backward()
    return [p.grad.clone() for p in model.parameters()]


def test_element_mean_equals_torchcfm_loss_and_scales_gradients_by_one_over_d():
    torch.manual_seed(0)
    model = build_model("unet", seed=0, config="tiny", image_size=8).double()
    x1 = torch.randn(6, 3, 8, 8, dtype=torch.float64)
    x0 = torch.randn_like(x1)
    t = torch.rand(6, dtype=torch.float64)
    path = Interpolant().sample(x0, x1, t=t)
    d = 3 * 8 * 8
    summed = cfm_loss(model, path)
    mean = cfm_loss(model, path, ElementMean((3, 8, 8)))
    torchcfm = torch.mean((model(path.xt, path.t) - path.target) ** 2)  # torchcfm's train_cifar10 loss
    torch.testing.assert_close(mean, torchcfm, rtol=1e-12, atol=0)
    torch.testing.assert_close(mean, summed / d, rtol=1e-12, atol=0)
    for gs, gm in zip(_grads(model, summed), _grads(model, cfm_loss(model, path, ElementMean((3, 8, 8))))):
        torch.testing.assert_close(gm, gs / d, rtol=1e-10, atol=1e-300)
    # both GFT terms are weighted alike, so the normalised total scales by 1 / D as well
    total_sum = gft_loss(model, path, 2.0, path).total
    total_mean = gft_loss(model, path, 2.0, path, weight=ElementMean((3, 8, 8))).total
    torch.testing.assert_close(total_mean, total_sum / d, rtol=1e-12, atol=0)


def test_element_mean_rejects_bad_shapes():
    with pytest.raises(ValueError, match="shape must be a non-empty tuple of positive sizes"):
        ElementMean(())
    with pytest.raises(ValueError, match="shape must be a non-empty tuple of positive sizes"):
        ElementMean((3, 0))
