"""k-nearest-neighbour fidelity and diversity of generated samples against real ones.

Precision and recall (Kynkaanniemi et al., 2019) and density and coverage (Naeem et al., 2020),
with k-NN balls (k = 5 by default) in data space (2-D points) or in a feature space (pass the
features of images). ``real``: (N, d) reference samples (e.g. held-out target); ``fake``: (M, d)
generated samples. The ball of a point has radius its distance to its k-th nearest neighbour in its
own set (the point itself excluded). Exact pairwise distances in float64 (memory O(N M)).

- precision: fraction of fake points inside the union of the real balls (fidelity);
- recall: fraction of real points inside the union of the fake balls (diversity);
- density: (1 / (k M)) sum_j #{real balls containing fake j} (1 in expectation when fake and real
  come from the same distribution, above 1 when fakes crowd into dense real regions);
- coverage: fraction of real balls that contain at least one fake point (diversity, robust to outliers).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from gftlib.validation import check_positive_int

__all__ = ["knn_radii", "prdc"]


def _points(name: str, x: Any) -> Tensor:
    t = torch.as_tensor(x.detach().cpu() if isinstance(x, Tensor) else x, dtype=torch.float64)
    if t.ndim < 2:
        raise ValueError(f"{name} must be (n, d) points (or (n, *shape), flattened), got shape {tuple(t.shape)}")
    t = t.reshape(t.shape[0], -1)
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name} must contain only finite values")
    return t


def knn_radii(x: Tensor, k: int) -> Tensor:
    """(n,) distance of each point of ``x`` (n, d) to its k-th nearest other point of ``x``."""
    k = check_positive_int("k", k)
    if x.shape[0] <= k:
        raise ValueError(f"a set needs more than k={k} points for k-NN radii, got {x.shape[0]}")
    return torch.cdist(x, x).kthvalue(k + 1, dim=1).values  # the first is the 0 distance to itself


def prdc(real: Any, fake: Any, *, k: int = 5) -> dict[str, float]:
    """``{"precision", "recall", "density", "coverage"}`` of ``fake`` against ``real`` (module docstring)."""
    r, f = _points("real", real), _points("fake", fake)
    if r.shape[1] != f.shape[1]:
        raise ValueError(f"real and fake must have the same dimension, got {r.shape[1]} and {f.shape[1]}")
    k = check_positive_int("k", k)
    r_rad, f_rad = knn_radii(r, k), knn_radii(f, k)
    d = torch.cdist(r, f)  # (N, M)
    inside_real = d <= r_rad[:, None]  # fake j inside the ball of real i
    inside_fake = d <= f_rad[None, :]  # real i inside the ball of fake j
    return {
        "precision": float(inside_real.any(dim=0).double().mean()),
        "recall": float(inside_fake.any(dim=1).double().mean()),
        "density": float(inside_real.double().sum() / (k * f.shape[0])),
        "coverage": float(inside_real.any(dim=1).double().mean()),
    }
