"""Memorisation of a small training set by a generative model (limited-data experiments).

For generated samples y_1..y_n, a training set T (the m points the model was trained on) and a
held-out set H of the *same size* m drawn from the same distribution (never trained on):

- ``train_distance``  = mean_j min_i |y_j - T_i|,
- ``heldout_distance`` = mean_j min_i |y_j - H_i|,
- ``ratio`` = train_distance / heldout_distance: about 1 for a model that generalises (its samples
  are as far from T as from a fresh set of the same size), 0 for a model that copies T;
- ``closer_to_train`` = the fraction of samples whose nearest neighbour in T ∪ H lies in T (ties
  count 1/2). If the samples are independent of T and H and T, H are i.i.d. of equal size, T and H
  are exchangeable given the samples, so its expectation is exactly 1/2; copies of T give 1.

Test of the null "no memorisation" (:func:`closer_to_train_z`, first held-out set only): given the
samples and the union U = T ∪ H (2m points), the null makes T a uniformly random half of U. Each
sample's nearest neighbour in U is then fixed; with c_u the number of samples whose nearest
neighbour is u, the fraction f = sum_u c_u 1[u in T] / n has conditional mean 1/2 and variance
Var(f | U, y) = (1/4) (2m / (2m - 1)) sum_u (c_u - n / 2m)^2 / n^2 (sampling without replacement),
so z = (f - 1/2) / sd is approximately standard normal; z >> 0 flags memorisation.

When the held-out pool holds k >= 1 times m points it is split into k disjoint sets of m points
(in order) and both held-out quantities are averaged over them, which lowers their variance
without changing the null value. Distances are Euclidean on flattened samples, in float64 (CPU).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor

__all__ = ["Memorization", "memorization", "closer_to_train_z"]


@dataclass(frozen=True)
class Memorization:
    """See the module docstring. ``n_heldout_sets``: the k held-out sets averaged over."""

    train_distance: float
    heldout_distance: float
    ratio: float
    closer_to_train: float
    n_heldout_sets: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _points(name: str, x: Any) -> Tensor:
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape (n, ...), got {type(x).__name__}")
    if x.ndim < 2 or x.shape[0] < 1:
        raise ValueError(f"{name} must have shape (n, ...) with n >= 1, got {tuple(x.shape)}")
    x = x.detach().to("cpu", torch.float64).reshape(x.shape[0], -1)
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} must contain only finite values")
    return x


def memorization(samples: Tensor, train: Tensor, heldout: Tensor) -> Memorization:
    """Memorisation statistics of ``samples`` (n, ...) against ``train`` (m, ...) and a held-out
    pool ``heldout`` (at least m points; its first k * m points form k disjoint sets of m)."""
    y, t, h = _points("samples", samples), _points("train", train), _points("heldout", heldout)
    if not y.shape[1] == t.shape[1] == h.shape[1]:
        raise ValueError(f"samples, train and heldout must have the same features per point, got "
                         f"{y.shape[1]}, {t.shape[1]} and {h.shape[1]}")
    m = t.shape[0]
    k = h.shape[0] // m
    if k < 1:
        raise ValueError(f"heldout must hold at least as many points as train ({m}), got {h.shape[0]}: "
                         "the comparison needs a held-out set of the same size")
    d_train = torch.cdist(y, t).min(dim=1).values
    d_held = torch.cdist(y, h[: k * m]).reshape(y.shape[0], k, m).min(dim=2).values  # (n, k)
    closer = (d_train[:, None] < d_held).double() + 0.5 * (d_train[:, None] == d_held).double()
    train_distance = float(d_train.mean())
    heldout_distance = float(d_held.mean())
    ratio = train_distance / heldout_distance if heldout_distance > 0 else float("nan")
    return Memorization(train_distance=train_distance, heldout_distance=heldout_distance, ratio=ratio,
                        closer_to_train=float(closer.mean()), n_heldout_sets=k)


def closer_to_train_z(samples: Tensor, train: Tensor, heldout: Tensor) -> tuple[float, float]:
    """``(f, z)``: the closer-to-train fraction against the first ``len(train)`` held-out points and
    its z-score under the null of exchangeable training and held-out sets (module docstring).
    ``z`` is ``nan`` when the conditional variance is 0 (e.g. every sample shares one neighbour)."""
    y, t, h = _points("samples", samples), _points("train", train), _points("heldout", heldout)
    m = t.shape[0]
    if h.shape[0] < m or not y.shape[1] == t.shape[1] == h.shape[1]:
        raise ValueError(f"heldout must hold at least len(train)={m} points with the features of train "
                         f"and samples, got shapes {tuple(y.shape)}, {tuple(t.shape)}, {tuple(h.shape)}")
    union = torch.cat([t, h[:m]])
    nearest = torch.cdist(y, union).argmin(dim=1)
    n = y.shape[0]
    f = float((nearest < m).double().mean())
    counts = torch.bincount(nearest, minlength=2 * m).double()
    var = 0.25 * (2 * m / (2 * m - 1)) * float(((counts - n / (2 * m)) ** 2).sum()) / n**2
    return f, (f - 0.5) / var**0.5 if var > 0 else float("nan")
