"""Evaluation of E2's image task (:mod:`gftlib.experiments.tasks.images`) against the held-out
target set H: feature Fréchet distance (:class:`gftlib.eval.features.RandomConvFeatures`, not FID),
pixel sliced W2 and, with an Inception network, FID (:func:`distances`); diversity in the same
feature space (:func:`feature_prdc`: precision, recall, density, coverage); their reference values
(:func:`reference_metrics`: a null distribution from independent held-out samples, a sample of the
training distribution, the source, the evaluation noise and the pretrained model); the source-side
check (:func:`source_reference`); the paired held-out-loss test (:func:`paired_decrease`) and the
sample grids of the figures (:func:`image_grid`). Images are ``(n, 3, S, S)`` in [-1, 1].
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from gftlib.eval.diversity import prdc
from gftlib.eval.features import InceptionFeatures, RandomConvFeatures, extract_features
from gftlib.eval.metrics import frechet_distance
from gftlib.experiments.methods import METHODS
from gftlib.experiments.tasks.images import Generated
from gftlib.experiments.tasks.images_data import ImageTask, clamp_images, sliced_w2
from gftlib.validation import check_choice, check_positive_int, resolve_device

__all__ = ["feature_extractor", "DistanceSet", "distances", "feature_prdc", "DistanceReference",
           "reference_metrics", "SourceReference", "source_reference", "PairedDecrease", "paired_decrease",
           "initial_heldout_loss", "image_grid"]


def feature_extractor(task: ImageTask, *, device: str | torch.device = "cpu") -> RandomConvFeatures:
    """The fixed feature network of the Fréchet distance: RandomConvFeatures(seed=0, width, depth)."""
    net = RandomConvFeatures(seed=0, width=task.feature_width, depth=task.feature_depth)
    return net.to(resolve_device(device))


@dataclass(frozen=True)
class DistanceSet:
    """Distances of one image set to H: ``fd`` (RandomConvFeatures Fréchet distance, not FID),
    ``sw`` (pixel sliced W2), ``fid`` (Inception FID, None without an Inception network)."""

    fd: float
    sw: float
    fid: float | None


class _Features:
    """Feature cache for H (computed once per extractor)."""

    def __init__(self, task: ImageTask, extractor: Any, inception: InceptionFeatures | None,
                 heldout: Tensor) -> None:
        self.task, self.extractor, self.inception = task, extractor, inception
        self.heldout = heldout
        self.h_feat = extract_features(clamp_images(heldout), extractor)
        self.h_incep = (None if inception is None
                        else extract_features(clamp_images(heldout), inception, batch_size=100))

    def __call__(self, images: Tensor) -> DistanceSet:
        x = clamp_images(images)
        fd = frechet_distance(extract_features(x, self.extractor), self.h_feat, method="eigh")
        fid = None
        if self.inception is not None:
            fid = frechet_distance(extract_features(x, self.inception, batch_size=100), self.h_incep,
                                   method="eigh")
        return DistanceSet(fd=fd, sw=sliced_w2(x, self.heldout, self.task), fid=fid)


def distances(task: ImageTask, images: Sequence[Tensor], *, inception: InceptionFeatures | None = None,
              device: str | torch.device = "cpu") -> list[DistanceSet]:
    """:class:`DistanceSet` of each image set in ``images`` to the held-out target set H."""
    measure = _Features(task, feature_extractor(task, device=device), inception, task.target_heldout())
    return [measure(x) for x in images]


def feature_prdc(task: ImageTask, images: Sequence[Tensor], *, k: int = 5,
                 device: str | torch.device = "cpu") -> list[dict[str, float]]:
    """Diversity in feature space: :func:`gftlib.eval.diversity.prdc` (precision, recall, density,
    coverage; k nearest neighbours) of each image set (n, 3, S, S) against the held-out set H, both
    in the features of the Fréchet distance (RandomConvFeatures(seed=0, width, depth); images clamped)."""
    extractor = feature_extractor(task, device=device)
    held = extract_features(clamp_images(task.target_heldout()), extractor)
    return [prdc(held, extract_features(clamp_images(x), extractor), k=k) for x in images]


@dataclass(frozen=True)
class DistanceReference:
    """Reference distances to H: ``null`` (n_null,) for independent held-out target samples (the
    estimator's null distribution: what a perfect model of the held-out distribution would get),
    ``train_ref`` (a fresh sample of the training distribution), ``source`` (held-out source images),
    ``noise`` (the evaluation noise itself = an untrained zero-output model), ``pretrained``."""

    null: list[DistanceSet]
    train_ref: DistanceSet
    source: DistanceSet
    noise: DistanceSet
    pretrained: DistanceSet

    def null_values(self, metric: str) -> np.ndarray:
        """(n_null,) null values of ``metric`` ("fd" | "sw" | "fid")."""
        metric = check_choice("metric", metric, ("fd", "sw", "fid"))
        values = [getattr(d, metric) for d in self.null]
        if any(v is None for v in values):
            raise ValueError(f"metric {metric!r} was not computed (no Inception network was given)")
        return np.asarray(values, dtype=np.float64)

    def null_se(self, metric: str) -> float:
        """The standard error of one evaluation of ``metric`` at the task's sizes: the std (ddof = 1)
        of its null values. With :func:`gftlib.experiments.checks.difference_margin` it gives the
        margin of "resolvably closer to H than the pretrained model"."""
        return float(self.null_values(metric).std(ddof=1))


def reference_metrics(task: ImageTask, pretrained: Generated, *, inception: InceptionFeatures | None = None,
                      device: str | torch.device = "cpu") -> DistanceReference:
    """The :class:`DistanceReference` distances of ``task`` (``pretrained``: :func:`generate_pretrained`)."""
    sets = [task.target_null(k) for k in range(task.n_null)]
    sets += [task.target_train_reference(), task.source_reference(), task.eval_noise(), pretrained.samples]
    d = distances(task, sets, inception=inception, device=device)
    k = task.n_null
    return DistanceReference(null=d[:k], train_ref=d[k], source=d[k + 1], noise=d[k + 2], pretrained=d[k + 3])


@dataclass(frozen=True)
class SourceReference:
    """Feature Fréchet distances to the held-out source set S (:meth:`ImageTask.source_reference`):
    ``null_fd`` (n_null,) of independent held-out source samples (the source's own noise floor),
    ``pretrained_fd`` of the pretrained model's samples, ``target_fd`` of the held-out target set H."""

    null_fd: np.ndarray
    pretrained_fd: float
    target_fd: float


def source_reference(task: ImageTask, pretrained: Generated, *,
                     device: str | torch.device = "cpu") -> SourceReference:
    """:class:`SourceReference` of ``task`` (``pretrained``: :func:`generate_pretrained`)."""
    measure = _Features(task, feature_extractor(task, device=device), None, task.source_reference())
    null = np.asarray([measure(task.source_null(k)).fd for k in range(task.n_null)], dtype=np.float64)
    return SourceReference(null_fd=null, pretrained_fd=measure(pretrained.samples).fd,
                           target_fd=measure(task.target_heldout()).fd)


@dataclass(frozen=True)
class PairedDecrease:
    """Paired comparison of per-pair losses: ``mean`` of d_i = before_i - after_i, its standard error
    ``se`` = std(d, ddof=1) / sqrt(n) and ``n``; ``t = mean / se`` (inf when every d_i is equal and > 0)."""

    mean: float
    se: float
    n: int

    @property
    def t(self) -> float:
        if self.se > 0:
            return self.mean / self.se
        return math.inf if self.mean > 0 else (-math.inf if self.mean < 0 else 0.0)


def paired_decrease(before: Sequence[float] | np.ndarray,
                    after: Sequence[float] | np.ndarray) -> PairedDecrease:
    """:class:`PairedDecrease` of ``after`` relative to ``before`` (same pairs, shape (n,), n >= 2)."""
    b, a = np.asarray(before, dtype=np.float64), np.asarray(after, dtype=np.float64)
    if b.ndim != 1 or b.shape != a.shape or b.size < 2:
        raise ValueError(f"before and after must be 1-D of the same length >= 2, got shapes {b.shape} "
                         f"and {a.shape}")
    if not (np.all(np.isfinite(b)) and np.all(np.isfinite(a))):
        raise ValueError("before and after must be finite")
    d = b - a
    return PairedDecrease(mean=float(d.mean()), se=float(d.std(ddof=1) / math.sqrt(d.size)), n=int(d.size))


def initial_heldout_loss(task: ImageTask, method: str, pretrained: Generated) -> np.ndarray:
    """(n_loss,) per-pair held-out CFM loss of ``method``'s initial model: the pretrained model's, or
    for "scratch" the zero-output UNet's (zero_init), |x1 - x0|^2 exactly."""
    method = check_choice("method", method, METHODS)
    if method != "scratch":
        return np.asarray(pretrained.heldout_loss, dtype=np.float64)
    x0, x1, _ = task.loss_batch()
    return ((x1 - x0) ** 2).flatten(1).sum(1).double().numpy()


# --------------------------------------------------------------------------------------------- figures
def image_grid(images: Tensor, *, cols: int | None = None, pad: int = 1,
               pad_value: float = 1.0) -> np.ndarray:
    """Tile images (n, 3, S, S) in [-1, 1] into one (rows*(S+pad)+pad, cols*(S+pad)+pad, 3) array in
    [0, 1] for ``imshow`` (values clamped; ``cols`` default ceil(sqrt(n)); empty cells = pad_value)."""
    if not isinstance(images, Tensor) or images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be a (n, 3, S, S) tensor, got {getattr(images, 'shape', images)!r}")
    n, _, h, w = images.shape
    if n == 0:
        raise ValueError("images must hold at least one image, got 0")
    cols = math.ceil(math.sqrt(n)) if cols is None else check_positive_int("cols", cols)
    pad = check_positive_int("pad", pad, minimum=0)
    rows = math.ceil(n / cols)
    x = ((images.detach().float().cpu().clamp(-1, 1) + 1) / 2).permute(0, 2, 3, 1).numpy()
    out = np.full((rows * (h + pad) + pad, cols * (w + pad) + pad, 3), pad_value, dtype=np.float64)
    for i in range(n):
        r, c = divmod(i, cols)
        top, left = pad + r * (h + pad), pad + c * (w + pad)
        out[top:top + h, left:left + w] = x[i]
    return out
