"""The data of E2's image domain-shift task (:class:`ImageTask`): one image distribution to pretrain
a UNet flow on, a small sample of another to fine-tune it on, held-out sets and evaluation noise.

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

Evaluation conventions shared by every metric of the task: :func:`clamp_images` and
:func:`sliced_w2` (pixel-space sliced W2 with the task's fixed directions).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from gftlib.data.datasets import image_patches, load_image_dataset
from gftlib.eval.metrics import sliced_wasserstein
from gftlib.experiments import image_checkpoints as IC
from gftlib.models import UNET_CONFIGS, build_model, unet_config
from gftlib.rng import seeded_generator, stream_seed
from gftlib.training import AMP_MODES
from gftlib.validation import check_choice, check_finite_number, check_int_fields, check_positive_int

__all__ = ["DATASETS", "ImageTask", "normalize_model_config", "check_optional_path", "clamp_images",
           "sliced_w2"]

#: Values of ``dataset`` (any ``"wilds-<name>"`` supported by gftlib.data.datasets.load_image_dataset works).
DATASETS: tuple[str, ...] = ("skimage", "cifar10", "wilds-camelyon17", "wilds-rxrx1", "wilds-fmow",
                             "wilds-<name>")

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


def check_optional_path(name: str, value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, (str, Path)) or str(value) == "":
        raise TypeError(f"{name} must be None or a local path, got {value!r}")
    return str(Path(value).expanduser())


def normalize_model_config(model_config: Any, image_size: int) -> tuple[tuple[str, Any], ...]:
    """UNetVelocity kwargs (as sorted items, lists made tuples) from a name or a dict of overrides;
    torchcfm's network ("torchcfm" or {"config": "torchcfm", ...}) adds ``("kind", "torchcfm")``."""
    if IC.is_torchcfm_config(model_config):
        return IC.torchcfm_model_items(model_config, image_size)
    if isinstance(model_config, str):
        cfg = unet_config(check_choice("model_config", model_config, UNET_CONFIGS + (IC.TORCHCFM,)))
    elif isinstance(model_config, Mapping):
        extra = dict(model_config)
        base = extra.pop("config", None)
        if base is not None:
            base = check_choice("model_config['config']", base, UNET_CONFIGS + (IC.TORCHCFM,))
        cfg = unet_config(base) if base is not None else {}
        if "image_size" in extra and extra["image_size"] != image_size:
            raise ValueError(f"model_config['image_size']={extra['image_size']!r} conflicts with "
                             f"image_size={image_size}; set image_size only")
        cfg.update(extra)
    else:
        names = ", ".join(map(repr, UNET_CONFIGS + (IC.TORCHCFM,)))
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
    ``n_projections`` fixed directions. ``pretrained_checkpoint``: a torchcfm checkpoint whose EMA
    network is the pretrained model (:mod:`gftlib.experiments.image_checkpoints`; None: pretrain here).
    """

    dataset: str = "skimage"
    data_root: str | None = None
    pretrain_root: str | None = None
    pretrained_checkpoint: str | None = None
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
        put("data_root", check_optional_path("data_root", self.data_root))
        put("pretrain_root", check_optional_path("pretrain_root", self.pretrain_root))
        put("pretrained_checkpoint", check_optional_path("pretrained_checkpoint", self.pretrained_checkpoint))
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
        check_int_fields(self, {"n_target": 2, "n_source": 2, "n_heldout": 2, "n_eval": 2, "n_null": 2,
                                "n_loss": 1, "n_grid": 1, "patch_crop": 1, "pretrain_steps": 1,
                                "pretrain_batch": 2, "nfe": 1, "feature_width": 1, "feature_depth": 1,
                                "n_projections": 1, "eval_chunk": 1})
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
            put("model_config", normalize_model_config("tiny", self.image_size))
        IC.check_checkpoint_task(self.pretrained_checkpoint, self.model_kind, self.pretrain_root)

    # -- description
    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["model_config"] = dict(self.model_config)
        if self.pretrained_checkpoint is not None:  # cache keys follow the file's content
            d["pretrained_checkpoint_sha256"] = IC.checkpoint_sha256(self.pretrained_checkpoint)
        return d

    @property
    def model_kind(self) -> str:
        """"unet" (gftlib's UNetVelocity) or "torchcfm" (torchcfm's UNetModelWrapper)."""
        return dict(self.model_config).get("kind", "unet")

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
        return {k: v for k, v in self.model_config if k != "kind"}

    def build_model(self, *, seed: int | None = None) -> nn.Module:
        return build_model(self.model_kind, seed=seed, **self.model_kwargs())

    def pretrain_key(self) -> dict[str, Any]:
        """Fields that determine the pretrained model (target-side fields excluded)."""
        keys = ("pretrain_root", "image_size", "n_source", "patch_crop", "seed", "pretrain_steps",
                "pretrain_batch", "pretrain_lr", "pretrain_coupling", "amp")
        d = {k: getattr(self, k) for k in keys}
        d["model_config"] = dict(self.model_config)
        if self.pretrained_checkpoint is not None:  # loaded, not trained: only the file and network count
            d = {"pretrained_checkpoint_sha256": IC.checkpoint_sha256(self.pretrained_checkpoint),
                 "model_config": d["model_config"]}
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
            if self.pretrained_checkpoint is None:  # a checkpoint is not pretrained here
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


def clamp_images(x: Tensor) -> Tensor:
    """``x`` detached, float32, on the CPU, clamped to [-1, 1] (what an image file would hold)."""
    return x.detach().float().cpu().clamp(-1.0, 1.0)


def sliced_w2(x: Tensor, y: Tensor, task: ImageTask) -> float:
    """Pixel-space sliced W2 with the task's fixed directions (the same for every comparison)."""
    return sliced_wasserstein(clamp_images(x), clamp_images(y), n_projections=task.n_projections,
                              generator=torch.Generator().manual_seed(12345))
