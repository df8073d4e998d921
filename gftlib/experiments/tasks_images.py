"""The image domain-shift task of E2: pretrain a UNet flow on one image distribution, fine-tune it
on a small sample of another, and evaluate every method of :mod:`gftlib.experiments.methods`.

Conventions: t = 0 noise (x0 ~ N(0, I)), t = 1 data; images are ``(n, 3, S, S)`` float32 in
[-1, 1]; every metric clamps generated images to [-1, 1] first (what an image file would hold).

Data (:class:`ImageTask`, ``dataset``):

- ``"skimage"`` (default, offline): the *target* is patches of scikit-image's immunohistochemistry
  image (:func:`gftlib.data.datasets.image_patches` source ``"ihc"``), training patches from the left half of
  its columns, held-out patches from the right half (no shared pixel; ``target_train_fraction``).
- ``"cifar10"`` | ``"wilds-<name>"`` (e.g. ``"wilds-camelyon17"``): the target is that local image
  set at ``data_root`` (:func:`gftlib.data.datasets.load_image_dataset`, split ``"train"``); one seeded random
  subset is cut into disjoint training / held-out / reference parts.
- The *source* (pretraining) is CIFAR-10's training split at ``pretrain_root`` when given (held-out
  source images: its test split), otherwise patches of scikit-image's natural photos (``"natural"``).
  ``dataset="cifar10"`` with a ``pretrain_root`` is refused (no domain shift).

Skimage patches are crops of side ``image_size * downsample`` average-pooled by ``downsample``, so a
small patch still shows texture. Nothing is ever downloaded; a missing path raises FileNotFoundError
naming it.

Training: :func:`pretrain` (OT-CFM on the source, like the paper's pretrained model) and
:func:`finetune` (one method, one seed, every method with the same optimizer, steps, batch size and
evaluation budget; :class:`ImageFinetuneConfig` extends the 2-D task's
:class:`~gftlib.experiments.tasks2d.FinetuneConfig`). Both are cached with
:func:`gftlib.experiments.cache.cached_torch` on every parameter that can change them. The
pretrained model's law p_pre is, by definition here, the law of its Euler sampler with ``nfe`` steps
(the caches of gft-coupling / reflow / gft-drift use the same sampler).

Evaluation against the held-out target set H (``n_heldout`` images), with ``n_eval`` generated images
from a fixed evaluation noise and Euler with ``nfe`` steps:

- Fréchet distance of :class:`gftlib.eval.features.RandomConvFeatures` features (a fixed random conv net;
  **not FID**, comparable only with itself), and true FID when an Inception network is given;
- pixel-space sliced W2 (:func:`gftlib.eval.metrics.sliced_wasserstein`, fixed directions);
- mean path length and straightness of the sampling paths (:mod:`gftlib.solvers.ode`);
- a held-out CFM loss on fixed (x0, t) (paired across models) and, over training, the sliced W2 of a
  small sample (``n_curve``) for convergence curves.

Reference values (:func:`reference_metrics`): a null distribution of each distance (``n_null``
independent held-out target samples of size ``n_eval`` against H), the distance of a sample of the
training distribution, of the source, and of the pretrained model.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from gftlib.data.datasets import image_patches, load_image_dataset
from gftlib.experiments.cache import cached_torch
from gftlib.experiments.checks import null_upper_bound
from gftlib.experiments.methods import METHODS, check_methods, run_method
from gftlib.experiments.profiles import PROFILES
from gftlib.experiments.tasks2d import FinetuneConfig
from gftlib.eval.features import (
    INCEPTION_URL,
    InceptionFeatures,
    RandomConvFeatures,
    extract_features,
    load_inception_features,
)
from gftlib.eval.metrics import frechet_distance, sliced_wasserstein
from gftlib.models import UNET_CONFIGS, build_model, count_parameters, unet_config
from gftlib.gft.objective import FlowMatchingObjective
from gftlib.solvers.ode import sample_ode
from gftlib.rng import seeded_generator, stream_seed
from gftlib.training.config import AMP_MODES, TrainConfig
from gftlib.training.loop import train
from gftlib.validation import (check_choice, check_existing_path, check_finite_number, check_positive_int,
                               resolve_device)

__all__ = [
    "PROFILE_TABLE",
    "PROFILE_SETTINGS",
    "DATASETS",
    "NO_TARGET_TERM",
    "QUICK_METHODS",
    "SourceReference",
    "source_reference",
    "ImageTask",
    "ImageFinetuneConfig",
    "ImageSetup",
    "Generated",
    "ImageRun",
    "DistanceSet",
    "Reference",
    "resolve_setup",
    "pretrain",
    "generate",
    "generate_pretrained",
    "finetune",
    "run_methods",
    "feature_extractor",
    "distances",
    "reference_metrics",
    "null_bound",
    "PairedDecrease",
    "paired_decrease",
    "initial_heldout_loss",
    "image_grid",
]

#: Values of ``dataset`` (any ``"wilds-<name>"`` supported by gftlib.data.datasets.load_image_dataset works).
DATASETS: tuple[str, ...] = ("skimage", "cifar10", "wilds-camelyon17", "wilds-rxrx1", "wilds-fmow",
                             "wilds-<name>")

#: Methods whose objective has no target term (reflow stays at the pretrained law by design).
NO_TARGET_TERM: tuple[str, ...] = ("reflow",)

#: Methods of the quick profile: GFT (coupling form) and the three baselines every claim is tested
#: against (ft, ft-ot, l2-reg), 3 seeds each within the CPU budget; gft-drift, scratch and reflow run
#: on the other profiles (and on request: ``methods``). E1 compares both GFT forms in 2-D.
QUICK_METHODS: tuple[str, ...] = ("ft", "ft-ot", "l2-reg", "gft-coupling")

#: The notebook's user-facing knobs per profile. ``methods`` is a list of names from METHODS;
#: ``model_config`` a name in gftlib.models.UNET_CONFIGS or a dict of UNetVelocity overrides
#: (optionally with "config": base name); ``image_size`` overrides the config's.
PROFILE_TABLE: dict[str, dict[str, Any]] = {
    "smoke": {"n_seeds": 1, "dataset": "skimage", "data_root": None, "pretrain_root": None,
              "inception_weights": None, "image_size": 8, "model_config": "tiny", "n_target": 64,
              "pretrain_steps": 60, "steps": 6, "batch_size": 16, "beta0": 2.0, "schedule_kind": "cosine",
              "methods": list(METHODS), "nfe": 3},
    "quick": {"n_seeds": 3, "dataset": "skimage", "data_root": None, "pretrain_root": None,
              "inception_weights": None, "image_size": 16, "model_config": "tiny", "n_target": 256,
              "pretrain_steps": 350, "steps": 50, "batch_size": 32, "beta0": 2.0, "schedule_kind": "cosine",
              "methods": list(QUICK_METHODS), "nfe": 8},
    "paper": {"n_seeds": 3, "dataset": "skimage", "data_root": None, "pretrain_root": None,
              "inception_weights": None, "image_size": 32, "model_config": "cifar10", "n_target": 5000,
              "pretrain_steps": 100_000, "steps": 20_000, "batch_size": 128, "beta0": 2.0,
              "schedule_kind": "cosine", "methods": list(METHODS), "nfe": 50},
}

#: Internal per-profile settings. Sizes: ``n_source`` pretraining images, ``n_heldout`` held-out
#: target images (H), ``n_eval`` generated images per evaluation (and per reference sample),
#: ``n_null`` null replicates, ``n_loss`` held-out pairs for the CFM loss, ``n_curve`` images for the
#: curve over training at ``n_evals`` evaluations, ``n_grid`` images per sample grid. Skimage patches:
#: crop side ``patch_crop`` (downsample = patch_crop // image_size). Features: RandomConvFeatures
#: width/depth (seed 0). Caches: ``cache_size`` pairs, ``n_trajectories`` x ``time_grid`` drift points.
PROFILE_SETTINGS: dict[str, dict[str, Any]] = {
    "smoke": {"n_source": 512, "n_heldout": 128, "n_eval": 128, "n_null": 8, "n_loss": 64, "n_curve": 16,
              "n_evals": 1, "n_grid": 16, "patch_crop": 64, "pretrain_batch": 32, "pretrain_lr": 2e-3,
              "lr": 2e-3, "ema_decay": 0.999, "cache_size": 32, "n_trajectories": 16, "time_grid": 2,
              "feature_width": 16, "feature_depth": 3, "n_projections": 128, "amp": "none",
              "eval_chunk": 512},
    "quick": {"n_source": 4096, "n_heldout": 512, "n_eval": 256, "n_null": 16, "n_loss": 128, "n_curve": 32,
              "n_evals": 2, "n_grid": 16, "patch_crop": 64, "pretrain_batch": 32, "pretrain_lr": 2e-3,
              "lr": 1e-3, "ema_decay": 0.999, "cache_size": 128, "n_trajectories": 32, "time_grid": 8,
              "feature_width": 32, "feature_depth": 3, "n_projections": 256, "amp": "none",
              "eval_chunk": 512},
    "paper": {"n_source": 50_000, "n_heldout": 5000, "n_eval": 5000, "n_null": 16, "n_loss": 2048,
              "n_curve": 1000, "n_evals": 20, "n_grid": 36, "patch_crop": 96, "pretrain_batch": 128,
              "pretrain_lr": 2e-4, "lr": 1e-4, "ema_decay": 0.9999, "cache_size": 5000,
              "n_trajectories": 1024, "time_grid": 32, "feature_width": 64, "feature_depth": 3,
              "n_projections": 512, "amp": "bf16", "eval_chunk": 500},
}

# Cache keys (gftlib.experiments.cache.cached_torch) cover the source of the whole package by default:
# the runs pass through models, objectives, samplers, metrics and features.

# Independent random streams (one integer seed per role, from (seed, role, index)).
_ROLES = {"source": 0, "source_ref": 1, "target_train": 2, "target_heldout": 3, "target_null": 4,
          "target_train_ref": 5, "eval_noise": 6, "loss_noise": 7, "pool": 8, "pool_perm": 9,
          "source_null": 10}


_PATCH_CHUNK = 4096
# Column split of the source images (gftlib.data.datasets's default 75 % / 25 %). The IHC target uses
# ImageTask.target_train_fraction (default 1/2): its right quarter is mostly stroma, so a 75/25 split
# would make the held-out patches a visibly different distribution (feature FD train vs held-out
# 4.4 at 16x16, against 0.6 for the halves and 0.008 between two training samples).
_SOURCE_TRAIN_FRACTION = 0.75


def _role_seed(seed: int, role: str, index: int = 0) -> int:
    """The seed of the task's stream for ``(role, index)``: :func:`gftlib.rng.stream_seed` (62 bits)."""
    return stream_seed(int(seed), _ROLES[role], int(index))


def _role_generator(seed: int, role: str, index: int = 0) -> torch.Generator:
    return seeded_generator(_role_seed(seed, role, index))


def _check_dataset(dataset: Any) -> str:
    if not isinstance(dataset, str) or not (dataset in ("skimage", "cifar10") or
                                            (dataset.startswith("wilds-") and len(dataset) > 6)):
        raise ValueError(f"dataset must be 'skimage', 'cifar10' or 'wilds-<name>' (e.g. 'wilds-camelyon17'), "
                         f"got {dataset!r}")
    return dataset


def _check_optional_path(name: str, value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, (str, Path)) or str(value) == "":
        raise TypeError(f"{name} must be None or a local path, got {value!r}")
    return str(Path(value).expanduser())


def _normalize_model_config(model_config: Any, image_size: int) -> tuple[tuple[str, Any], ...]:
    """UNetVelocity kwargs (as sorted items, lists made tuples) from a name or a dict of overrides."""
    if isinstance(model_config, str):
        cfg = unet_config(check_choice("model_config", model_config, UNET_CONFIGS))
    elif isinstance(model_config, Mapping):
        extra = dict(model_config)
        base = extra.pop("config", None)
        if base is not None:
            base = check_choice("model_config['config']", base, UNET_CONFIGS)
        cfg = unet_config(base) if base is not None else {}
        if "image_size" in extra and extra["image_size"] != image_size:
            raise ValueError(f"model_config['image_size']={extra['image_size']!r} conflicts with "
                             f"image_size={image_size}; set image_size only")
        cfg.update(extra)
    else:
        names = ", ".join(map(repr, UNET_CONFIGS))
        raise TypeError(f"model_config must be a UNet config name ({names}) or a "
                        f"dict of UNetVelocity arguments, got {model_config!r}")
    cfg["image_size"] = image_size
    cfg.setdefault("in_channels", 3)
    if cfg["in_channels"] != 3:
        raise ValueError(f"model_config in_channels must be 3 (RGB images), got {cfg['in_channels']!r}")
    norm = {k: tuple(v) if isinstance(v, list) else v for k, v in cfg.items()}
    return tuple(sorted(norm.items()))


# --------------------------------------------------------------------------------------------- data
@functools.lru_cache(maxsize=6)
def _load(name: str, root: str, split: str, size: int, n: int | None, seed: int) -> Tensor:
    return load_image_dataset(name, root, split=split, size=size, n=n, seed=seed).images


@dataclass(frozen=True)
class ImageTask:
    """Data, model, pretraining and evaluation sizes of the image domain-shift task (validated).

    See the module docstring for ``dataset`` / ``data_root`` / ``pretrain_root``. ``model_config``:
    UNetVelocity arguments as sorted ``(name, value)`` items (built by :func:`resolve_setup` from a
    config name or dict). ``seed`` seeds every data draw (one stream per role), the evaluation noise
    and the pretraining. Pretraining: ``pretrain_steps`` AdamW steps of ``pretrain_batch`` at
    ``pretrain_lr`` with ``pretrain_coupling`` (OT-CFM by default). Evaluation: Euler with ``nfe``
    steps; RandomConvFeatures(seed=0, width=feature_width, depth=feature_depth); sliced W2 with
    ``n_projections`` fixed directions.
    """

    dataset: str = "skimage"
    data_root: str | None = None
    pretrain_root: str | None = None
    image_size: int = 16
    model_config: tuple[tuple[str, Any], ...] = ()
    n_target: int = 256
    n_source: int = 4096
    n_heldout: int = 512
    n_eval: int = 512
    n_null: int = 4
    n_loss: int = 256
    n_grid: int = 16
    patch_crop: int = 64
    target_train_fraction: float = 0.5
    seed: int = 0
    pretrain_steps: int = 400
    pretrain_batch: int = 64
    pretrain_lr: float = 2e-3
    pretrain_coupling: str = "ot"
    amp: str = "none"
    nfe: int = 8
    feature_width: int = 32
    feature_depth: int = 3
    n_projections: int = 256
    eval_chunk: int = 512

    def __post_init__(self) -> None:
        put = lambda name, value: object.__setattr__(self, name, value)  # noqa: E731
        put("dataset", _check_dataset(self.dataset))
        put("data_root", _check_optional_path("data_root", self.data_root))
        put("pretrain_root", _check_optional_path("pretrain_root", self.pretrain_root))
        if self.dataset == "skimage" and self.data_root is not None:
            raise ValueError(f"data_root is only used with dataset 'cifar10' or 'wilds-<name>'; dataset "
                             f"'skimage' needs none, got data_root={self.data_root!r}")
        if self.dataset != "skimage" and self.data_root is None:
            raise ValueError(f"dataset={self.dataset!r} needs data_root (a local folder holding it; "
                             f"gftlib never downloads), got None")
        if self.dataset == "cifar10" and self.pretrain_root is not None:
            raise ValueError("dataset='cifar10' with a pretrain_root would pretrain and fine-tune on "
                             "CIFAR-10 (no domain shift); set pretrain_root=None (source: natural skimage "
                             "patches)")
        put("image_size", check_positive_int("image_size", self.image_size, minimum=4))
        for name, minimum in (("n_target", 2), ("n_source", 2), ("n_heldout", 2), ("n_eval", 2),
                              ("n_null", 2),
                              ("n_loss", 1), ("n_grid", 1), ("patch_crop", 1), ("pretrain_steps", 1),
                              ("pretrain_batch", 2), ("nfe", 1), ("feature_width", 1), ("feature_depth", 1),
                              ("n_projections", 1), ("eval_chunk", 1)):
            put(name, check_positive_int(name, getattr(self, name), minimum=minimum))
        put("seed", check_positive_int("seed", self.seed, minimum=0))
        put("pretrain_lr", check_finite_number("pretrain_lr", self.pretrain_lr, minimum=0.0, strict=True))
        put("target_train_fraction", check_finite_number("target_train_fraction", self.target_train_fraction,
                                                         minimum=0.0, maximum=1.0, strict=True))
        put("pretrain_coupling", check_choice("pretrain_coupling", self.pretrain_coupling,
                                              ("independent", "ot")))
        put("amp", check_choice("amp", self.amp, AMP_MODES))
        if self.n_loss > self.n_heldout:
            raise ValueError(f"n_loss must be <= n_heldout={self.n_heldout}, got {self.n_loss}")
        if self.n_grid > self.n_eval:
            raise ValueError(f"n_grid must be <= n_eval={self.n_eval}, got {self.n_grid}")
        if 2 ** (self.feature_depth - 1) > self.image_size:
            raise ValueError(f"feature_depth={self.feature_depth} needs images of at least "
                             f"{2 ** (self.feature_depth - 1)} pixels, got image_size={self.image_size}")
        if not self.model_config:
            put("model_config", _normalize_model_config("tiny", self.image_size))

    # -- description
    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["model_config"] = dict(self.model_config)
        return d

    @property
    def downsample(self) -> int:
        """Average-pooling factor of skimage patches (crop side image_size * downsample)."""
        return max(1, self.patch_crop // self.image_size)

    @property
    def source_name(self) -> str:
        return "cifar10" if self.pretrain_root is not None else "skimage natural patches"

    @property
    def target_name(self) -> str:
        return "skimage ihc patches" if self.dataset == "skimage" else self.dataset

    @property
    def shape(self) -> tuple[int, int, int]:
        return (3, self.image_size, self.image_size)

    def model_kwargs(self) -> dict[str, Any]:
        return dict(self.model_config)

    def build_model(self, *, seed: int | None = None) -> nn.Module:
        return build_model("unet", seed=seed, **self.model_kwargs())

    def pretrain_key(self) -> dict[str, Any]:
        """Fields that determine the pretrained model (target-side fields excluded)."""
        keys = ("pretrain_root", "image_size", "n_source", "patch_crop", "seed", "pretrain_steps",
                "pretrain_batch", "pretrain_lr", "pretrain_coupling", "amp")
        d = {k: getattr(self, k) for k in keys}
        d["model_config"] = dict(self.model_config)
        return d

    # -- source
    def _patches(self, source: str, n: int, split: str, role: str, index: int = 0) -> Tensor:
        fraction = self.target_train_fraction if source == "ihc" else _SOURCE_TRAIN_FRACTION
        # In chunks of _PATCH_CHUNK (each with its own seed): image_patches holds the full-resolution
        # crops of a call in memory, which for the paper profile's 50 000 patches would be ~5 GB.
        chunks = []
        for c, start in enumerate(range(0, n, _PATCH_CHUNK)):
            chunks.append(image_patches(source, size=self.image_size, n=min(_PATCH_CHUNK, n - start),
                                        split=split,
                                        seed=_role_seed(self.seed, role, index * 1_000_003 + c),
                                        downsample=self.downsample, train_fraction=fraction))
        return torch.cat(chunks)

    def check_data(self) -> None:
        """Fail now if a data source is unusable: load the local sets (FileNotFoundError naming a
        missing path; ValueError if a set is too small) and check that skimage patches fit."""
        if self.pretrain_root is None:
            image_patches("natural", size=self.image_size, n=1, downsample=self.downsample,
                          train_fraction=_SOURCE_TRAIN_FRACTION)
        else:
            self.source_train()
            self.source_reference()
        if self.dataset == "skimage":
            image_patches("ihc", size=self.image_size, n=1, downsample=self.downsample,
                          train_fraction=self.target_train_fraction)
        else:
            self.target_train()

    def source_train(self) -> Tensor:
        """(n_source, 3, S, S) pretraining images."""
        if self.pretrain_root is None:
            return self._patches("natural", self.n_source, "train", "source")
        return _load("cifar10", self.pretrain_root, "train", self.image_size, self.n_source,
                     _role_seed(self.seed, "source")).clone()

    def source_reference(self) -> Tensor:
        """(n_eval, 3, S, S) held-out source images (CIFAR-10 test split or the natural held-out columns)."""
        if self.pretrain_root is None:
            return self._patches("natural", self.n_eval, "heldout", "source_ref")
        return _load("cifar10", self.pretrain_root, "test", self.image_size, self.n_eval,
                     _role_seed(self.seed, "source_ref")).clone()

    def source_null(self, k: int) -> Tensor:
        """(n_eval, 3, S, S): the k-th held-out source sample independent of :meth:`source_reference`
        (0 <= k < n_null; skimage: fresh patches of the held-out columns; CIFAR-10: a seeded test subset)."""
        k = check_positive_int("k", k, minimum=0)
        if k >= self.n_null:
            raise ValueError(f"k must be < n_null={self.n_null}, got {k}")
        if self.pretrain_root is None:
            return self._patches("natural", self.n_eval, "heldout", "source_null", k)
        return _load("cifar10", self.pretrain_root, "test", self.image_size, self.n_eval,
                     _role_seed(self.seed, "source_null", k)).clone()

    # -- target
    @property
    def n_pool(self) -> int:
        """Images a local target set must provide: train + held-out + (n_null + 1) reference samples."""
        return self.n_target + self.n_heldout + (self.n_null + 1) * self.n_eval

    def _pool_part(self, part: str, index: int = 0) -> Tensor:
        images = _load(self.dataset, self.data_root, "train", self.image_size, self.n_pool,
                       _role_seed(self.seed, "pool"))
        perm = torch.randperm(images.shape[0], generator=_role_generator(self.seed, "pool_perm"))
        bounds = {"train": (0, self.n_target)}
        start = self.n_target
        bounds["heldout"] = (start, start + self.n_heldout)
        start += self.n_heldout
        bounds["train_ref"] = (start, start + self.n_eval)
        start += self.n_eval
        a, b = bounds.get(part, (start + index * self.n_eval, start + (index + 1) * self.n_eval))
        return images[perm[a:b]].clone()

    def target_train(self) -> Tensor:
        """(n_target, 3, S, S) the limited target training sample."""
        if self.dataset == "skimage":
            return self._patches("ihc", self.n_target, "train", "target_train")
        return self._pool_part("train")

    def target_heldout(self) -> Tensor:
        """(n_heldout, 3, S, S) held-out target images H (never trained on): every metric is against H."""
        if self.dataset == "skimage":
            return self._patches("ihc", self.n_heldout, "heldout", "target_heldout")
        return self._pool_part("heldout")

    def target_null(self, k: int) -> Tensor:
        """(n_eval, 3, S, S): the k-th held-out target sample independent of H (0 <= k < n_null)."""
        k = check_positive_int("k", k, minimum=0)
        if k >= self.n_null:
            raise ValueError(f"k must be < n_null={self.n_null}, got {k}")
        if self.dataset == "skimage":
            return self._patches("ihc", self.n_eval, "heldout", "target_null", k)
        return self._pool_part("null", k)

    def target_train_reference(self) -> Tensor:
        """(n_eval, 3, S, S): a fresh sample of the *training* distribution (skimage: the training
        columns, independent crops; local sets: images disjoint from the training sample)."""
        if self.dataset == "skimage":
            return self._patches("ihc", self.n_eval, "train", "target_train_ref")
        return self._pool_part("train_ref")

    def eval_noise(self) -> Tensor:
        """(n_eval, 3, S, S) fixed evaluation noise x0 ~ N(0, I) (the same for every model)."""
        return torch.randn(self.n_eval, *self.shape, generator=_role_generator(self.seed, "eval_noise"))

    def independent_coupling_distance(self) -> float:
        """E|x1 - x0| over all pairs of evaluation noise x0 and target training images x1 (flattened):
        THEORY T5's bound on the path length of the flow of the independent coupling (Jensen)."""
        x0 = self.eval_noise().flatten(1).double()
        x1 = self.target_train().flatten(1).double()
        return float(torch.cdist(x0, x1).mean())

    def loss_batch(self) -> tuple[Tensor, Tensor, Tensor]:
        """Fixed held-out CFM pairs: x0 (n_loss, 3, S, S), x1 = H[:n_loss] and stratified times
        t_i = (i + 1/2) / n_loss."""
        x0 = torch.randn(self.n_loss, *self.shape, generator=_role_generator(self.seed, "loss_noise"))
        t = (torch.arange(self.n_loss, dtype=torch.float32) + 0.5) / self.n_loss
        return x0, self.target_heldout()[: self.n_loss], t


@dataclass(frozen=True)
class ImageFinetuneConfig(FinetuneConfig):
    """The 2-D task's fine-tuning budget plus the image settings: drift-cache ``time_grid``, the
    pretrained sampler's ``solver_steps`` (Euler; the caches use it), ``amp`` ("none" | "bf16"),
    ``n_curve`` images for the sliced-W2 curve over training; no dopri5 evaluations by default."""

    dopri_fractions: tuple[float, ...] = ()
    time_grid: int = 8
    solver_steps: int = 8
    amp: str = "none"
    n_curve: int = 64

    def __post_init__(self) -> None:
        super().__post_init__()
        put = lambda name, value: object.__setattr__(self, name, value)  # noqa: E731
        put("time_grid", check_positive_int("time_grid", self.time_grid))
        put("solver_steps", check_positive_int("solver_steps", self.solver_steps))
        put("amp", check_choice("amp", self.amp, AMP_MODES))
        put("n_curve", check_positive_int("n_curve", self.n_curve, minimum=2))

    def method_options(self, seed: int) -> dict[str, Any]:
        return {**super().method_options(seed), "time_grid": self.time_grid, "solver_method": "euler",
                "solver_steps": self.solver_steps}

    def key_for(self, method: str) -> dict[str, Any]:
        d = super().key_for(method)
        if method != "gft-drift":
            d.pop("time_grid")
        if method not in ("gft-drift", "gft-coupling", "reflow"):
            d.pop("solver_steps")
        return d


@dataclass(frozen=True)
class ImageSetup:
    """What the notebook needs after its parameters cell."""

    task: ImageTask
    config: ImageFinetuneConfig
    methods: tuple[str, ...]
    seeds: tuple[int, ...]
    device: torch.device
    inception: InceptionFeatures | None
    n_parameters: int


def resolve_setup(params: Mapping[str, Any]) -> ImageSetup:
    """Build (and so validate) the task, the budget and the optional files from resolved parameters.

    ``params``: :func:`gftlib.experiments.profiles.resolve_parameters` output with ``seed``,
    ``profile``, ``device``, ``n_seeds``, ``dataset``, ``data_root``, ``pretrain_root``,
    ``inception_weights``, ``image_size``, ``model_config``, ``n_target``, ``pretrain_steps``,
    ``steps``, ``batch_size``, ``beta0``, ``schedule_kind``, ``methods``, ``nfe``. Builds the model
    once (validating the config), loads the local data sets and the Inception network if given
    (FileNotFoundError naming a missing path), and checks ``n_target`` / the local set's size.
    """
    profile = check_choice("profile", params["profile"], PROFILES)
    s = PROFILE_SETTINGS[profile]
    n_seeds = check_positive_int("n_seeds", params["n_seeds"])
    methods = check_methods(params["methods"])
    device = resolve_device(params["device"])
    image_size = check_positive_int("image_size", params["image_size"], minimum=4)
    nfe = check_positive_int("nfe", params["nfe"])
    amp = s["amp"] if device.type == "cuda" else "none"
    task = ImageTask(
        dataset=params["dataset"], data_root=params["data_root"], pretrain_root=params["pretrain_root"],
        image_size=image_size, model_config=_normalize_model_config(params["model_config"], image_size),
        n_target=params["n_target"], n_source=s["n_source"], n_heldout=s["n_heldout"], n_eval=s["n_eval"],
        n_null=s["n_null"], n_loss=s["n_loss"], n_grid=s["n_grid"], patch_crop=s["patch_crop"],
        seed=params["seed"], pretrain_steps=params["pretrain_steps"], pretrain_batch=s["pretrain_batch"],
        pretrain_lr=s["pretrain_lr"], amp=amp, nfe=nfe, feature_width=s["feature_width"],
        feature_depth=s["feature_depth"], n_projections=s["n_projections"], eval_chunk=s["eval_chunk"])
    if task.pretrain_root is not None:  # the pretraining source (ImageTask refuses it with dataset 'cifar10')
        check_existing_path("pretrain_root", task.pretrain_root,
                            what="None or a local CIFAR-10 folder (the pretraining source)")
    n_parameters = count_parameters(task.build_model())  # validates the UNet config with its message
    steps = check_positive_int("steps", params["steps"])
    config = ImageFinetuneConfig(
        steps=steps, batch_size=params["batch_size"], lr=s["lr"], ema_decay=s["ema_decay"],
        beta0=params["beta0"], schedule_kind=params["schedule_kind"], cache_size=s["cache_size"],
        n_trajectories=s["n_trajectories"], n_evals=min(s["n_evals"], steps), time_grid=s["time_grid"],
        solver_steps=nfe, amp=amp, n_curve=min(s["n_curve"], task.n_eval))
    if config.batch_size > task.n_target:
        raise ValueError(f"batch_size must be <= n_target={task.n_target} (one batch of distinct target "
                         f"images), got {config.batch_size}")
    inception = None
    if params["inception_weights"] is not None:
        path = check_existing_path(
            "inception_weights", _check_optional_path("inception_weights", params["inception_weights"]),
            what=f"None or the local NVlabs Inception file (gftlib never downloads it; get {INCEPTION_URL})")
        inception = load_inception_features(path, device=device)
    task.check_data()  # a missing file or a too-small set fails here
    seeds = tuple(task.seed + i for i in range(n_seeds))
    return ImageSetup(task=task, config=config, methods=methods, seeds=seeds, device=device,
                      inception=inception, n_parameters=n_parameters)


# --------------------------------------------------------------------------------------------- training
def pretrain(task: ImageTask, *, device: str | torch.device = "cpu") -> nn.Module:
    """The source model: CFM (``task.pretrain_coupling``) on ``task.source_train()`` from a random
    init seeded with ``task.seed``; returns the EMA network (eval mode, no gradients, CPU). Cached."""
    dev = resolve_device(device)

    def build() -> dict[str, Any]:
        model = task.build_model(seed=task.seed)
        objective = FlowMatchingObjective(task.source_train().to(dev), batch_size=task.pretrain_batch,
                                          coupling=task.pretrain_coupling, seed=task.seed)
        cfg = TrainConfig(steps=task.pretrain_steps, lr=task.pretrain_lr, seed=task.seed, device=str(dev),
                          amp=task.amp, progress=False, log_every=max(1, task.pretrain_steps // 50))
        res = train(model, objective, cfg)
        return {"ema": {k: v.detach().cpu().clone() for k, v in res.ema_model.state_dict().items()},
                "history": res.history}

    key = {"kind": "tasks-images-pretrain", "task": task.pretrain_key(), "device": dev.type}
    state = cached_torch("tasks-images-pretrain", key, build)
    return _load_model(task, state["ema"])


def _load_model(task: ImageTask, state: Mapping[str, Tensor]) -> nn.Module:
    model = task.build_model()
    model.load_state_dict(dict(state))
    return model.eval().requires_grad_(False)


@dataclass(frozen=True)
class Generated:
    """A model's evaluation output: ``samples`` (n_eval, 3, S, S) CPU float32 (raw, not clamped)
    from the fixed evaluation noise with Euler ``nfe`` steps; per-sample ``path_length`` and
    ``straightness`` (n_eval,); ``heldout_loss`` (n_loss,) per-pair CFM loss on the fixed held-out
    pairs of :meth:`ImageTask.loss_batch` (sum over pixels)."""

    samples: Tensor
    path_length: np.ndarray
    straightness: np.ndarray
    heldout_loss: np.ndarray

    @property
    def mean_path_length(self) -> float:
        return float(self.path_length.mean())

    @property
    def mean_straightness(self) -> float:
        return float(self.straightness.mean())


@torch.no_grad()
def _heldout_loss(task: ImageTask, model: nn.Module, device: torch.device) -> np.ndarray:
    x0, x1, t = task.loss_batch()
    out = []
    for a in range(0, x0.shape[0], task.eval_chunk):
        b0, b1, tt = x0[a:a + task.eval_chunk], x1[a:a + task.eval_chunk], t[a:a + task.eval_chunk]
        tb = tt.view(-1, 1, 1, 1)
        xt = (1 - tb) * b0 + tb * b1
        v = model(xt.to(device), tt.to(device)).float().cpu()
        out.append(((v - (b1 - b0)) ** 2).flatten(1).sum(1).double())
    return torch.cat(out).numpy()


@torch.no_grad()
def generate(task: ImageTask, model: nn.Module, *, device: str | torch.device = "cpu",
             n: int | None = None) -> Generated:
    """Push the first ``n`` (default n_eval) evaluation-noise images through ``model`` (Euler, nfe
    steps, float32, in chunks of eval_chunk) and compute the held-out CFM loss. No caching."""
    dev = resolve_device(device)
    model = model.to(dev)
    was_training = model.training
    model.eval()
    x0 = task.eval_noise()
    if n is not None:
        x0 = x0[: check_positive_int("n", n)]
    xs, ls, ss = [], [], []
    for a in range(0, x0.shape[0], task.eval_chunk):
        res = sample_ode(model, x0[a:a + task.eval_chunk].to(dev), method="euler", steps=task.nfe)
        xs.append(res.x.float().cpu())
        ls.append(res.path_length.double().cpu())
        ss.append(res.straightness.double().cpu())
    out = Generated(samples=torch.cat(xs), path_length=torch.cat(ls).numpy(),
                    straightness=torch.cat(ss).numpy(), heldout_loss=_heldout_loss(task, model, dev))
    model.train(was_training)
    return out


def generate_pretrained(task: ImageTask, *, device: str | torch.device = "cpu") -> Generated:
    """:func:`generate` for the pretrained model (cached)."""
    dev = resolve_device(device)
    key = {"kind": "tasks-images-pretrained-eval", "task": task.as_dict(), "device": dev.type}
    return cached_torch("tasks-images-pretrained-eval", key,
                        lambda: generate(task, pretrain(task, device=dev), device=dev))


@dataclass(frozen=True)
class ImageRun:
    """One fine-tuning run (EMA model). Curve arrays share ``eval_steps`` (E,) with step 0 = the
    initial model: ``curve_sw`` (sliced W2 of ``n_curve`` samples to H) and ``curve_loss`` (mean
    held-out CFM loss). Loss arrays share ``log_steps`` (means over each log interval; ``beta`` is
    the temperature there). ``final``: :class:`Generated` of the final EMA model;
    ``schedule_final_beta``: beta at the last update (None without a schedule)."""

    method: str
    seed: int
    eval_steps: np.ndarray
    curve_sw: np.ndarray
    curve_loss: np.ndarray
    log_steps: np.ndarray
    beta: np.ndarray
    loss_total: np.ndarray
    loss_target: np.ndarray
    loss_pretrained: np.ndarray
    schedule_final_beta: float | None
    final: Generated = field(repr=False)
    ema_state: dict[str, Tensor] = field(repr=False)


def _curve_evaluator(task: ImageTask, config: ImageFinetuneConfig, device: torch.device):
    heldout = task.target_heldout()

    def evaluate(model: nn.Module, step: int) -> dict[str, float]:
        g = generate(task, model, device=device, n=config.n_curve)
        return {"curve_sw": _sw(g.samples, heldout, task), "curve_loss": float(g.heldout_loss.mean())}

    return evaluate


def _finetune_uncached(task: ImageTask, method: str, seed: int, config: ImageFinetuneConfig,
                       device: torch.device) -> ImageRun:
    pretrained = None if method == "scratch" else pretrain(task, device=device)
    cfg = TrainConfig(steps=config.steps, lr=config.lr, ema_decay=config.ema_decay, seed=seed,
                      device=str(device),
                      amp=config.amp, eval_every=config.eval_every, log_every=max(1, config.steps // 40),
                      progress=False)
    run = run_method(method, target_data=task.target_train(), pretrained_model=pretrained,
                     new_model=lambda: task.build_model(seed=seed),
                     evaluate=_curve_evaluator(task, config, device),
                     eval_key="curve_sw", train_config=cfg, device=device, chunk_size=task.eval_chunk,
                     **config.method_options(seed))
    evals, logs, col = run.evals, run.logs, run.column
    return ImageRun(
        method=method, seed=seed, eval_steps=col(evals, "step", np.int64), curve_sw=col(evals, "curve_sw"),
        curve_loss=col(evals, "curve_loss"), log_steps=col(logs, "step", np.int64), beta=col(logs, "beta"),
        loss_total=col(logs, "total"), loss_target=col(logs, "target"),
        loss_pretrained=col(logs, "pretrained"),
        schedule_final_beta=run.final_beta(config.steps),
        final=generate(task, run.result.ema_model, device=device),
        ema_state={k: v.detach().cpu().clone() for k, v in run.result.ema_model.state_dict().items()},
    )


def finetune(task: ImageTask, method: str, seed: int, config: ImageFinetuneConfig, *,
             device: str | torch.device = "cpu") -> ImageRun:
    """Fine-tune (for "scratch": train from a random init seeded with ``seed``) on
    ``task.target_train()`` with ``method``; ``seed`` drives the data order, noise and caches.
    Cached on every parameter that can change the run."""
    method = check_choice("method", method, METHODS)
    seed = check_positive_int("seed", seed, minimum=0)
    if not isinstance(task, ImageTask):
        raise TypeError(f"task must be an ImageTask, got {type(task).__name__}")
    if not isinstance(config, ImageFinetuneConfig):
        raise TypeError(f"config must be an ImageFinetuneConfig, got {type(config).__name__}")
    dev = resolve_device(device)
    task_key = task.as_dict()
    if method == "scratch":  # the pretrained model plays no part
        for k in ("pretrain_root", "n_source", "pretrain_steps", "pretrain_batch", "pretrain_lr",
                  "pretrain_coupling"):
            task_key.pop(k)
    key = {"kind": "tasks-images-finetune", "task": task_key, "method": method, "seed": seed,
           "config": config.key_for(method), "device": dev.type}
    return cached_torch(f"tasks-images-{method}", key,
                        lambda: _finetune_uncached(task, method, seed, config, dev))


def run_methods(task: ImageTask, methods: Sequence[str], seeds: Sequence[int], config: ImageFinetuneConfig, *,
                device: str | torch.device = "cpu") -> dict[str, list[ImageRun]]:
    """``{method: [run for each seed]}`` (each run cached)."""
    return {m: [finetune(task, m, s, config, device=device) for s in seeds] for m in methods}


# --------------------------------------------------------------------------------------------- metrics
def feature_extractor(task: ImageTask, *, device: str | torch.device = "cpu") -> RandomConvFeatures:
    """The fixed feature network of the Fréchet distance: RandomConvFeatures(seed=0, width, depth)."""
    net = RandomConvFeatures(seed=0, width=task.feature_width, depth=task.feature_depth)
    return net.to(resolve_device(device))


def _clamp(x: Tensor) -> Tensor:
    return x.detach().float().cpu().clamp(-1.0, 1.0)


def _sw(x: Tensor, y: Tensor, task: ImageTask) -> float:
    """Pixel-space sliced W2 with the task's fixed directions (the same for every comparison)."""
    return sliced_wasserstein(_clamp(x), _clamp(y), n_projections=task.n_projections,
                              generator=torch.Generator().manual_seed(12345))


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
        self.h_feat = extract_features(_clamp(heldout), extractor)
        self.h_incep = (None if inception is None
                        else extract_features(_clamp(heldout), inception, batch_size=100))

    def __call__(self, images: Tensor) -> DistanceSet:
        x = _clamp(images)
        fd = frechet_distance(extract_features(x, self.extractor), self.h_feat, method="eigh")
        fid = None
        if self.inception is not None:
            fid = frechet_distance(extract_features(x, self.inception, batch_size=100), self.h_incep,
                                   method="eigh")
        return DistanceSet(fd=fd, sw=_sw(x, self.heldout, self.task), fid=fid)


def distances(task: ImageTask, images: Sequence[Tensor], *, inception: InceptionFeatures | None = None,
              device: str | torch.device = "cpu") -> list[DistanceSet]:
    """:class:`DistanceSet` of each image set in ``images`` to the held-out target set H."""
    measure = _Features(task, feature_extractor(task, device=device), inception, task.target_heldout())
    return [measure(x) for x in images]


@dataclass(frozen=True)
class Reference:
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

    def closer_margin(self, metric: str = "sw", *, k: float = 5.0) -> float:
        """``k * sqrt(2) * s``, s the std (ddof = 1) of the null values: k standard errors of the
        difference of two independent evaluations of ``metric`` at the task's sizes."""
        k = check_finite_number("k", k, minimum=0.0)
        return float(k * math.sqrt(2.0) * self.null_values(metric).std(ddof=1))

    def resolvable(self, metric: str = "sw", *, k: float = 5.0) -> bool:
        """Whether the pretrained model is farther from H than a fresh sample of the training
        distribution by more than :meth:`closer_margin`: only then can fine-tuning be *seen* to
        bring a model closer to the target than the pretrained one."""
        pre, best = getattr(self.pretrained, metric), getattr(self.train_ref, metric)
        return bool(pre - best > self.closer_margin(metric, k=k))


def reference_metrics(task: ImageTask, pretrained: Generated, *, inception: InceptionFeatures | None = None,
                      device: str | torch.device = "cpu") -> Reference:
    """The :class:`Reference` distances of ``task`` (``pretrained``: :func:`generate_pretrained`)."""
    sets = [task.target_null(k) for k in range(task.n_null)]
    sets += [task.target_train_reference(), task.source_reference(), task.eval_noise(), pretrained.samples]
    d = distances(task, sets, inception=inception, device=device)
    k = task.n_null
    return Reference(null=d[:k], train_ref=d[k], source=d[k + 1], noise=d[k + 2], pretrained=d[k + 3])


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


def null_bound(values: Sequence[float], *, confidence: float = 0.999) -> float:
    """:func:`gftlib.experiments.checks.null_upper_bound` (kept here for the notebooks' imports)."""
    return null_upper_bound(values, confidence=confidence)


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
