"""Tests of gftlib.gft.regularizer: the naive L2 baseline regresses on b_pre at the target points."""

from __future__ import annotations

import pytest
import torch

from gftlib.losses import DriftBatch
from gftlib.gft.objective import FlowMatchingObjective
from gftlib.gft.regularizer import TargetPathRegularizer

from gft_helpers import gaussian_path, velocity_of, Linear, gen, toy_target

torch.set_num_threads(1)


def test_target_path_regularizer_uses_target_points():
    field = velocity_of(gaussian_path())
    reg = TargetPathRegularizer(field)
    data = toy_target()
    obj = FlowMatchingObjective(data, batch_size=8, coupling="ot", pretrained=reg)
    batch = obj.sample_batch(2.0, gen(4))
    path, pre = batch.target, batch.pretrained
    assert isinstance(pre, DriftBatch)
    assert torch.equal(pre.x, path.xt) and torch.equal(pre.t, path.t)
    torch.testing.assert_close(pre.target, field(path.xt, path.t))
    model = Linear()
    obj2 = FlowMatchingObjective(data, batch_size=8, coupling="ot", pretrained=reg)
    terms = obj2.loss(model, 2.0, gen(4))  # the same draw as `batch`
    want_pre = ((model(path.xt, path.t) - field(path.xt, path.t)) ** 2).sum(1).mean()
    want_tgt = ((model(path.xt, path.t) - path.target) ** 2).sum(1).mean()
    torch.testing.assert_close(terms.pretrained, want_pre)
    torch.testing.assert_close(terms.total, (want_tgt + 2.0 * want_pre) / 3.0)
    with pytest.raises(TypeError, match="target_path"):
        reg.batch(8, gen())
    with pytest.raises(ValueError, match="batch_size must equal"):
        reg.batch(7, gen(), target_path=path)
