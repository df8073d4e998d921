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

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from gftlib.interpolants import PathSample
from gftlib.types import VelocityField
from gftlib.validation import check_finite_number, check_tensor

__all__ = ["DriftBatch", "LossTerms", "regression_loss", "cfm_loss", "gft_loss"]

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


def regression_loss(model: VelocityField, x: Tensor, t: Tensor, target: Tensor,
                    weight: Tensor | TimeWeight | None = None, *, check_values: bool = True) -> Tensor:
    """mean_i [ w_i * sum_{dims} (model(x, t)_i - target_i)^2 ]  (scalar).

    x, target: (n, *shape); t: (n,); weight: None, a (n,) tensor, or a callable w(t) -> (n,).
    ``check_values=False`` skips the data-dependent checks (x, t, target, weight finite; weight
    >= 0), which read values back to the host (a device synchronisation on GPUs); shapes and types
    are still checked. Meant for batches the library drew itself (see gftlib.objectives).
    """
    if not isinstance(check_values, bool):
        raise TypeError(f"check_values must be True or False, got {check_values!r}")
    check_tensor("x", x, min_ndim=2, finite=check_values)
    check_tensor("target", target, finite=check_values)
    check_tensor("t", t, ndim=1, finite=check_values)
    n = x.shape[0]
    if target.shape != x.shape:
        raise ValueError(f"target must have the shape of x {tuple(x.shape)}, got {tuple(target.shape)}")
    if t.shape[0] != n:
        raise ValueError(f"t must have shape ({n},), got {tuple(t.shape)}")
    w = _resolve_weight(weight, t, n, check_values)
    pred = model(x, t)
    if not isinstance(pred, Tensor) or pred.shape != target.shape:
        got = tuple(pred.shape) if isinstance(pred, Tensor) else type(pred).__name__
        raise ValueError(f"model output must have the shape of x {tuple(x.shape)}, got {got}")
    err = (pred - target).pow(2).reshape(n, -1).sum(dim=1)
    if w is not None:
        err = err * w.to(err.dtype)
    return err.mean()


def cfm_loss(model: VelocityField, path: PathSample, weight: Tensor | TimeWeight | None = None, *,
             check_values: bool = True) -> Tensor:
    """Conditional flow matching loss on a :class:`PathSample`: regression of model(x_t, t) on its target."""
    if not isinstance(path, PathSample):
        raise TypeError(f"path must be a PathSample, got {type(path).__name__}")
    return regression_loss(model, path.xt, path.t, path.target, weight, check_values=check_values)


def _term(model: VelocityField, batch: PathSample | DriftBatch, weight: TimeWeight | None,
          check_values: bool) -> Tensor:
    if isinstance(batch, PathSample):
        return cfm_loss(model, batch, weight, check_values=check_values)
    return regression_loss(model, batch.x, batch.t, batch.target, weight, check_values=check_values)


def gft_loss(model: VelocityField, target_path: PathSample, beta: float,
             pretrained: PathSample | DriftBatch | None, *, weight: TimeWeight | None = None,
             normalize: bool = True, check_values: bool = True) -> LossTerms:
    """GFT objective at temperature ``beta`` (see module docstring).

    ``weight``: None or a callable w(t) -> (n,) applied to both terms (one weighting, as T2 needs).
    At beta == 0, ``total`` is exactly the CFM loss on ``target_path``. ``check_values``: see
    :func:`regression_loss` (False in the objectives' training hot path: no host synchronisation).
    """
    b = check_finite_number("beta", beta, minimum=0.0)
    if not isinstance(normalize, bool):
        raise TypeError(f"normalize must be a bool, got {normalize!r}")
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
