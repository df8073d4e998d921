"""Regression losses: conditional flow matching (CFM) and the GFT objective (THEORY.md).

All losses are Monte Carlo estimates of  E_t [ w(t) |b(x, t) - target|^2 ]: the mean over the batch of
(weight *) the squared error summed over the non-batch dimensions.

GFT at temperature beta >= 0:

    total = (L_target + beta * L_pretrained) / (1 + beta)     (normalize=True; else the plain sum)

with L_target the CFM term on the target coupling and L_pretrained either the *coupling form*
(a :class:`PathSample` built from pairs (x0, x1 ~ pretrained sampler)) or the *drift form* (a
:class:`DriftBatch` of points x ~ p^pre_t with the frozen pretrained drift as target). A DriftBatch
whose points are the target path's points gives the naive "L2-to-pretrained" regulariser. T2 needs
the same time weighting for both terms, so :func:`gft_loss` takes ``weight`` as a callable w(t).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from gftlib.paths.interpolants import PathSample
from gftlib.types import VelocityField
from gftlib.validation import check_bool, check_finite_number, check_tensor

__all__ = ["DriftBatch", "LossTerms", "regression_loss", "cfm_loss", "gft_loss", "LOSS_REDUCTIONS",
           "ElementMean", "reduction_weight"]

#: "sum": squared error summed over a sample's dimensions (gftlib's default); "mean": averaged over
#: them too, i.e. over all elements of the batch (torchcfm's ``torch.mean((vt - ut) ** 2)``).
LOSS_REDUCTIONS: tuple[str, ...] = ("sum", "mean")

TimeWeight = Callable[[Tensor], Tensor]


@dataclass(frozen=True)
class DriftBatch:
    """Points ``x`` (n, *shape) at times ``t`` (n,) with regression ``target`` (n, *shape), e.g. the
    frozen pretrained drift b_pre(x, t) at x ~ p^pre_t (computed without gradient)."""

    x: Tensor
    t: Tensor
    target: Tensor


@dataclass(frozen=True)
class LossTerms:
    """``total``: scalar to back-propagate. ``target``: CFM term on the target coupling.
    ``pretrained``: pretrained term (a zero tensor when there is no pretrained batch; computed
    without gradient, for logging, when beta == 0 and a batch is given). ``beta``: the temperature."""

    total: Tensor
    target: Tensor
    pretrained: Tensor
    beta: float


class ElementMean:
    """Time weight w(t) = 1 / D for samples of ``shape`` (D = prod(shape)): with it every loss here
    is the mean squared error over all elements (torchcfm's reduction) instead of the per-sample sum
    over dimensions, so gradients scale by exactly 1 / D (1 / 3072 at 3 x 32 x 32). Pass it as
    ``time_weight`` to the objectives (it weights both GFT terms alike, as T2 needs)."""

    def __init__(self, shape: tuple[int, ...]) -> None:
        dims = tuple(int(d) for d in shape)
        if not dims or any(d < 1 for d in dims):
            raise ValueError(f"shape must be a non-empty tuple of positive sizes, got {shape!r}")
        self.shape, self.scale = dims, 1.0 / math.prod(dims)

    def __call__(self, t: Tensor) -> Tensor:
        return torch.full_like(t, self.scale)

    def __repr__(self) -> str:
        return f"ElementMean(shape={self.shape})"


def reduction_weight(reduction: str, shape: tuple[int, ...]) -> ElementMean | None:
    """The time weight of ``reduction`` (:data:`LOSS_REDUCTIONS`) for samples of ``shape``: None
    for "sum" (the losses' own sum over dimensions), :class:`ElementMean` for "mean"."""
    if reduction not in LOSS_REDUCTIONS:
        raise ValueError(f"loss reduction must be one of {list(LOSS_REDUCTIONS)}, got {reduction!r}")
    return ElementMean(tuple(shape)) if reduction == "mean" else None


def _resolve_weight(weight: Tensor | TimeWeight | None, t: Tensor, n: int, values: bool = True
                    ) -> Tensor | None:
    if weight is None:
        return None
    if callable(weight) and not isinstance(weight, Tensor):
        weight = weight(t)
        name = "weight(t)"
    else:
        name = "weight"
    check_tensor(name, weight, finite=values)
    if weight.shape != (n,):
        raise ValueError(f"{name} must have shape ({n},) (one weight per sample), got {tuple(weight.shape)}")
    if values and bool((weight < 0).any()):
        raise ValueError(f"{name} must be non-negative, got min {float(weight.min()):g}")
    return weight


def _checked_inputs(x: Tensor, t: Tensor, target: Tensor, weight: Tensor | TimeWeight | None,
                    check_values: bool) -> Tensor | None:
    """Validate one regression batch; returns the resolved (n,) weight or None."""
    check_tensor("x", x, min_ndim=2, finite=check_values)
    check_tensor("target", target, finite=check_values)
    check_tensor("t", t, ndim=1, finite=check_values)
    n = x.shape[0]
    if target.shape != x.shape:
        raise ValueError(f"target must have the shape of x {tuple(x.shape)}, got {tuple(target.shape)}")
    if t.shape[0] != n:
        raise ValueError(f"t must have shape ({n},), got {tuple(t.shape)}")
    return _resolve_weight(weight, t, n, check_values)


def _check_output(pred: Any, target: Tensor, x: Tensor) -> None:
    if not isinstance(pred, Tensor) or pred.shape != target.shape:
        got = tuple(pred.shape) if isinstance(pred, Tensor) else type(pred).__name__
        raise ValueError(f"model output must have the shape of x {tuple(x.shape)}, got {got}")


def _weighted_errors(pred: Tensor, target: Tensor, w: Tensor | None) -> Tensor:
    """(n,) per-sample w_i * sum_{dims} (pred_i - target_i)^2."""
    err = (pred - target).pow(2).reshape(pred.shape[0], -1).sum(dim=1)
    return err if w is None else err * w.to(err.dtype)


def regression_loss(model: VelocityField, x: Tensor, t: Tensor, target: Tensor,
                    weight: Tensor | TimeWeight | None = None, *, check_values: bool = True) -> Tensor:
    """mean_i [ w_i * sum_{dims} (model(x, t)_i - target_i)^2 ]  (scalar).

    x, target: (n, *shape); t: (n,); weight: None, a (n,) tensor, or a callable w(t) -> (n,).
    ``check_values=False`` skips the data-dependent checks (x, t, target, weight finite; weight
    >= 0), which read values back to the host (a device synchronisation on GPUs); shapes and types
    are still checked. Meant for batches the library drew itself (see gftlib.gft.objective).
    """
    check_bool("check_values", check_values)
    w = _checked_inputs(x, t, target, weight, check_values)
    pred = model(x, t)
    _check_output(pred, target, x)
    return _weighted_errors(pred, target, w).mean()


def cfm_loss(model: VelocityField, path: PathSample, weight: Tensor | TimeWeight | None = None, *,
             check_values: bool = True) -> Tensor:
    """Conditional flow matching loss on a :class:`PathSample`: regression of model(x_t, t) on its target."""
    if not isinstance(path, PathSample):
        raise TypeError(f"path must be a PathSample, got {type(path).__name__}")
    return regression_loss(model, path.xt, path.t, path.target, weight, check_values=check_values)


def _inputs(batch: PathSample | DriftBatch) -> tuple[Tensor, Tensor, Tensor]:
    """(x, t, regression target) of a pretrained-term batch."""
    if isinstance(batch, PathSample):
        return batch.xt, batch.t, batch.target
    return batch.x, batch.t, batch.target


def _term(model: VelocityField, batch: PathSample | DriftBatch, weight: TimeWeight | None,
          check_values: bool) -> Tensor:
    return regression_loss(model, *_inputs(batch), weight, check_values=check_values)


def _fusable(a: tuple[Tensor, Tensor, Tensor], b: tuple[Tensor, Tensor, Tensor]) -> bool:
    """Both batches can go through one forward pass: same sample shape, dtypes and devices."""
    return all(u.shape[1:] == v.shape[1:] and u.dtype == v.dtype and u.device == v.device
               for u, v in zip(a, b))


def _fused_terms(model: VelocityField, first: tuple[Tensor, Tensor, Tensor],
                 second: tuple[Tensor, Tensor, Tensor], weight: TimeWeight | None,
                 check_values: bool) -> tuple[Tensor, Tensor]:
    """The two regression losses from one forward pass on the concatenated batch."""
    w1 = _checked_inputs(*first, weight, check_values)
    w2 = _checked_inputs(*second, weight, check_values)
    n = first[0].shape[0]
    x, t, target = (torch.cat([u, v]) for u, v in zip(first, second))
    pred = model(x, t)
    _check_output(pred, target, x)
    e1 = _weighted_errors(pred[:n], target[:n], w1)
    e2 = _weighted_errors(pred[n:], target[n:], w2)
    return e1.mean(), e2.mean()


def gft_loss(model: VelocityField, target_path: PathSample, beta: float,
             pretrained: PathSample | DriftBatch | None, *, weight: TimeWeight | None = None,
             normalize: bool = True, check_values: bool = True, fused: bool = True) -> LossTerms:
    """GFT objective at temperature ``beta`` (see module docstring).

    ``weight``: None or a callable w(t) -> (n,) applied to both terms (one weighting, as T2 needs).
    At beta == 0, ``total`` is exactly the CFM loss on ``target_path``. ``check_values``: see
    :func:`regression_loss` (False in the objectives' training hot path: no host synchronisation).
    ``fused`` (default True): when beta > 0 and both batches have the same sample shape, dtype and
    device, evaluate the model once on the concatenated (n_target + n_pretrained) batch instead of
    twice; the two terms are the same per-sample sums (up to floating-point reassociation inside the
    network), and one larger batch uses a GPU better. Set False for a network whose output for one
    sample depends on the rest of the batch (e.g. BatchNorm in training mode).
    """
    b = check_finite_number("beta", beta, minimum=0.0)
    check_bool("normalize", normalize)
    check_bool("fused", fused)
    if weight is not None and (isinstance(weight, Tensor) or not callable(weight)):
        raise TypeError(
            "weight for gft_loss must be a callable w(t) -> (n,) so that both terms use the same time "
            f"weighting, got {type(weight).__name__}"
        )
    if pretrained is not None and not isinstance(pretrained, (PathSample, DriftBatch)):
        raise TypeError(
            f"pretrained must be a PathSample, a DriftBatch or None, got {type(pretrained).__name__}"
        )
    if b > 0 and pretrained is None:
        raise ValueError(f"beta={b:g} > 0 needs a pretrained batch (PathSample or DriftBatch), got None")
    if not isinstance(target_path, PathSample):
        raise TypeError(f"path must be a PathSample, got {type(target_path).__name__}")
    if b > 0 and fused and _fusable(first := _inputs(target_path), second := _inputs(pretrained)):
        target, pre = _fused_terms(model, first, second, weight, check_values)
    else:
        target = cfm_loss(model, target_path, weight, check_values=check_values)
        if pretrained is None:
            return LossTerms(total=target, target=target, pretrained=torch.zeros((), dtype=target.dtype,
                             device=target.device), beta=b)
        if b == 0:
            with torch.no_grad():
                pre = _term(model, pretrained, weight, check_values)
            return LossTerms(total=target, target=target, pretrained=pre, beta=b)
        pre = _term(model, pretrained, weight, check_values)
    total = target + b * pre
    if normalize:
        total = total / (1.0 + b)
    return LossTerms(total=total, target=target, pretrained=pre, beta=b)
