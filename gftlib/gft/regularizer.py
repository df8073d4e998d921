"""The naive "L2-to-pretrained" baseline: the pretrained term evaluated on the target path."""

from __future__ import annotations

from typing import Any

import torch

from gftlib.gft.checks import check_field
from gftlib.gft.tensors import field_device
from gftlib.losses import DriftBatch
from gftlib.paths.interpolants import PathSample
from gftlib.types import VelocityField
from gftlib.validation import check_positive_int

__all__ = ["TargetPathRegularizer"]


class TargetPathRegularizer:
    """Naive "L2-to-pretrained" baseline: the pretrained term on the *target* path.

    :meth:`batch` needs the current target batch (``target_path``) and returns
    DriftBatch(x = target_path.xt, t = target_path.t, target = b_pre(xt, t)) with the frozen
    field evaluated under ``torch.no_grad()``; ``batch_size`` must equal the target batch's size.
    Its pointwise optimum (b_tgt + beta b_pre) / (1 + beta) has no terminal-law guarantee (THEORY).
    Stateless (empty state).
    """

    def __init__(self, pretrained_field: VelocityField) -> None:
        self.field = check_field("pretrained_field", pretrained_field)

    def batch(self, batch_size: int, generator: torch.Generator, *,
              target_path: PathSample | None = None) -> DriftBatch:
        batch_size = check_positive_int("batch_size", batch_size)
        if not isinstance(target_path, PathSample):
            raise TypeError(
                "TargetPathRegularizer.batch needs target_path=PathSample (the current target batch), "
                f"got {type(target_path).__name__}"
            )
        if target_path.xt.shape[0] != batch_size:
            raise ValueError(
                f"batch_size must equal the target batch size {target_path.xt.shape[0]}, got {batch_size}"
            )
        x, t = target_path.xt, target_path.t
        dev = field_device(self.field)
        with torch.no_grad():
            if dev is None or dev == x.device:
                target = self.field(x, t)
            else:  # the frozen network lives elsewhere: evaluate there, bring the result back
                target = self.field(x.to(dev), t.to(dev)).to(x.device)
        return DriftBatch(x=x, t=t, target=target.detach())

    def state_dict(self) -> dict[str, Any]:
        return {"kind": "target-path"}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("kind") != "target-path":
            raise ValueError(f"cannot load {state.get('kind')!r} state into a TargetPathRegularizer")
