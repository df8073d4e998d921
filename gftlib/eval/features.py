"""Image feature extractors for a Fréchet distance (FID-style) between image sets.

Images are float (n, C, H, W) in [-1, 1] (gftlib's convention). Two extractors:

- :class:`RandomConvFeatures`: a fixed random conv net, available everywhere without downloads.
  Its weights are drawn from ``torch.Generator('cpu').manual_seed(seed)`` in float32, so every
  machine builds the same network. Distances computed with it are comparable only with each other
  (same seed, width, depth), never with published FID numbers.
- :func:`load_inception_features`: a local TorchScript Inception-v3 feature extractor in the NVlabs
  ``inception-2015-12-05.pt`` format (called as ``model(images_uint8_nchw, return_features=True)``
  -> (n, 2048)); with it the Fréchet distance is the standard FID.

FID preprocessing convention (the one torchcfm reports, via clean-fid's ``legacy_tensorflow`` mode,
which runs this same NVlabs network): a [-1, 1] image x is quantised to uint8 as
``round((x + 1) * 127.5)`` clamped to [0, 255] (:func:`quantize_uint8`; torchcfm writes
``(x * 127.5 + 128).clip(0, 255).to(uint8)``, the same values except at exact .5 ties) and passed
at its own resolution; the network itself resizes to 299 x 299 (bilinear, align_corners=False) and
maps v -> (v - 128) / 128, i.e. its Inception sees inputs in [-1, 1]. gftlib never resizes before
the network and never downloads it. Only the TorchScript file is supported: pytorch-fid's and
torch-fidelity's ``pt_inception-2015-12-05-*.pth`` are state dicts of their own Python Inception
classes (not included), and are rejected with a message. Reference statistics in the pytorch-fid /
clean-fid ``.npz`` format (``mu``, ``sigma``) are read by :func:`load_fid_statistics`.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gftlib.io import atomic_path
from gftlib.eval.metrics import frechet_distance
from gftlib.validation import check_positive_int, check_tensor, resolve_device

__all__ = ["RandomConvFeatures", "InceptionFeatures", "load_inception_features", "extract_features",
           "frechet_feature_distance", "INCEPTION_URL", "quantize_uint8", "feature_statistics",
           "save_fid_statistics", "load_fid_statistics"]

#: Where the NVlabs TorchScript Inception network can be obtained (gftlib never downloads it).
INCEPTION_URL = ("https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/metrics/"
                 "inception-2015-12-05.pt")

FeatureExtractor = Callable[[Tensor], Tensor]


class RandomConvFeatures(nn.Module):
    """Fixed random multi-scale conv features: (n, C, H, W) in [-1, 1] -> (n, F), F = width * (2^depth - 1).

    ``depth`` stages; stage k (k = 0..depth-1) has two 3x3 convolutions with ``width * 2^k`` output
    channels (ReLU after each, zero padding, no bias) and is followed by 2x2 average pooling before
    the next stage. The features are the global spatial means of every stage's output, concatenated
    (coarse texture/colour statistics at several scales). Weights ~ N(0, 2 / fan_in) (He), drawn in
    float32 on the CPU from ``torch.Generator().manual_seed(seed)`` in a fixed order, stored as
    buffers (not trained). Inputs need H, W >= 2^(depth - 1).
    """

    def __init__(self, seed: int = 0, image_channels: int = 3, width: int = 64, depth: int = 3) -> None:
        super().__init__()
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise TypeError(f"seed must be an integer, got {seed!r}")
        self.seed = seed
        self.image_channels = check_positive_int("image_channels", image_channels)
        self.width = check_positive_int("width", width)
        self.depth = check_positive_int("depth", depth)
        g = torch.Generator(device="cpu").manual_seed(seed)
        c_in = self.image_channels
        self._names: list[str] = []
        for k in range(self.depth):
            c_out = self.width * 2 ** k
            for j in range(2):
                fan_in = c_in * 9
                w = torch.randn(c_out, c_in, 3, 3, generator=g, dtype=torch.float32) * math.sqrt(2.0 / fan_in)
                name = f"weight_{k}_{j}"
                self.register_buffer(name, w)
                self._names.append(name)
                c_in = c_out
        self.eval()

    @property
    def feature_dim(self) -> int:
        return self.width * (2 ** self.depth - 1)

    def forward(self, images: Tensor) -> Tensor:
        images = check_tensor("images", images, ndim=4)
        if images.shape[1] != self.image_channels:
            raise ValueError(f"images must have {self.image_channels} channels, "
                             f"got shape {tuple(images.shape)}")
        min_side = 2 ** (self.depth - 1)
        if min(images.shape[-2:]) < min_side:
            raise ValueError(f"images must be at least {min_side}x{min_side} for depth={self.depth}, "
                             f"got shape {tuple(images.shape)}")
        h = images
        feats = []
        for k in range(self.depth):
            if k > 0:
                h = F.avg_pool2d(h, 2)
            for j in range(2):
                w = getattr(self, f"weight_{k}_{j}").to(dtype=h.dtype)
                h = F.relu(F.conv2d(h, w, padding=1))
            feats.append(h.mean(dim=(-2, -1)))
        return torch.cat(feats, dim=1)


def quantize_uint8(images: Tensor) -> Tensor:
    """[-1, 1] float images -> uint8 ``round((x + 1) * 127.5)`` clamped to [0, 255] (same shape)."""
    images = check_tensor("images", images)
    return ((images.detach().float() + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8)


class InceptionFeatures:
    """Wraps a TorchScript Inception feature network: images (n, 3, H, W) float in [-1, 1] -> (n, 2048).

    Images are quantised by :func:`quantize_uint8` and passed at their own size as
    ``model(images_uint8, return_features=True)``; the network resizes to 299x299 itself.
    """

    def __init__(self, model: Any, device: torch.device) -> None:
        self.model = model
        self.device = device

    def __call__(self, images: Tensor) -> Tensor:
        images = check_tensor("images", images, ndim=4)
        if images.shape[1] != 3:
            raise ValueError(f"Inception features need 3-channel images, got shape {tuple(images.shape)}")
        u8 = quantize_uint8(images)
        with torch.no_grad():
            out = self.model(u8.to(self.device), return_features=True)
        return out.float()


def load_inception_features(path: str | Path, *, device: str | torch.device = "cpu") -> InceptionFeatures:
    """Load the NVlabs TorchScript Inception (``inception-2015-12-05.pt``) from a local ``path``.

    Raises FileNotFoundError naming ``path`` (with the URL to obtain it) when it does not exist.
    """
    dev = resolve_device(device)
    p = Path(path).expanduser()
    if not p.is_file():
        raise FileNotFoundError(f"Inception feature network not found: {p}. gftlib never downloads it; get "
                                f"{INCEPTION_URL} and pass its local path.")
    with warnings.catch_warnings():  # the NVlabs file is TorchScript; torch >= 2.10 flags jit as deprecated
        warnings.filterwarnings("ignore", message=".*torch.jit.load.*is deprecated",
                                category=DeprecationWarning)
        try:
            model = torch.jit.load(str(p), map_location=dev)
        except RuntimeError as exc:
            raise ValueError(f"{p} is not a TorchScript file (expected NVlabs' inception-2015-12-05.pt from "
                             f"{INCEPTION_URL}; pytorch-fid / torch-fidelity .pth state dicts are not "
                             f"supported): {str(exc).splitlines()[0]}") from exc
    model.eval()
    return InceptionFeatures(model, dev)


def extract_features(images: Tensor, extractor: FeatureExtractor, *, batch_size: int = 256) -> Tensor:
    """Apply ``extractor`` in batches under no_grad: images (n, C, H, W) -> (n, F) float64 on the CPU."""
    images = check_tensor("images", images, ndim=4)
    batch_size = check_positive_int("batch_size", batch_size)
    if not callable(extractor):
        raise TypeError(f"extractor must be callable images -> features, got {type(extractor).__name__}")
    dev = None
    if isinstance(extractor, nn.Module):
        buf = next(iter(extractor.buffers()), None)
        dev = buf.device if buf is not None else None
    elif isinstance(extractor, InceptionFeatures):
        dev = extractor.device
    out = []
    with torch.no_grad():
        for i in range(0, images.shape[0], batch_size):
            chunk = images[i:i + batch_size]
            if dev is not None:
                chunk = chunk.to(dev)
            f = extractor(chunk)
            if not isinstance(f, Tensor) or f.ndim != 2 or f.shape[0] != chunk.shape[0]:
                raise ValueError(f"extractor must return (batch, F) features, got {getattr(f, 'shape', f)!r}")
            out.append(f.detach().to("cpu", torch.float64))
    return torch.cat(out)


def frechet_feature_distance(a_images: Tensor, b_images: Tensor, extractor: FeatureExtractor, *,
                             batch_size: int = 256, method: str = "sqrtm") -> float:
    """Fréchet distance between Gaussians fitted to ``extractor`` features of two image sets.

    With :func:`load_inception_features` this is FID; with :class:`RandomConvFeatures` a
    download-free analogue. Needs at least 2 images per set (and ideally many more than F).
    ``method`` is passed to :func:`gftlib.eval.metrics.frechet_distance` ("eigh" is faster for F = 2048).
    """
    fa = extract_features(a_images, extractor, batch_size=batch_size)
    fb = extract_features(b_images, extractor, batch_size=batch_size)
    return frechet_distance(fa, fb, method=method)


def feature_statistics(features: Tensor) -> tuple[np.ndarray, np.ndarray]:
    """(n, F) features -> (mu (F,), sigma (F, F)) in float64, sigma with ddof = 1 (as pytorch-fid)."""
    f = check_tensor("features", features, ndim=2).detach().to("cpu", torch.float64).numpy()
    if f.shape[0] < 2:
        raise ValueError(f"features must have at least 2 rows, got {f.shape[0]}")
    return f.mean(axis=0), np.atleast_2d(np.cov(f, rowvar=False))


def save_fid_statistics(path: str | Path, mu: np.ndarray, sigma: np.ndarray) -> Path:
    """Atomically write ``mu``, ``sigma`` as an .npz in pytorch-fid's / clean-fid's format."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, mu=np.asarray(mu, np.float64), sigma=np.asarray(sigma, np.float64))
    return Path(path)


def load_fid_statistics(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Read reference statistics (``mu`` (F,), ``sigma`` (F, F)) from a pytorch-fid / clean-fid .npz."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise FileNotFoundError(f"FID statistics file not found: {p} (expected an .npz with mu and sigma)")
    with np.load(p, allow_pickle=False) as z:
        if "mu" not in z.files or "sigma" not in z.files:
            raise ValueError(f"{p}: expected arrays 'mu' and 'sigma', found {list(z.files)}")
        mu, sigma = np.asarray(z["mu"], np.float64), np.asarray(z["sigma"], np.float64)
    if mu.ndim != 1 or sigma.shape != (mu.shape[0], mu.shape[0]):
        raise ValueError(f"{p}: mu must be (F,) and sigma (F, F), got {mu.shape} and {sigma.shape}")
    return mu, sigma
