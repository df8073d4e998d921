"""Data-path benchmark: images/s of the disk image loader at 96 x 96 next to what a training step
consumes at batch 128, so a user sees whether the GPU would starve.

Loader: ``n_images`` random-noise RGB PNG files of 96 x 96 pixels (Camelyon17's patch format; noise
compresses worst, so decoding is at least as slow as for real patches) in a temporary folder,
read by :func:`gftlib.data.image_sources.open_image_source` ("folder", centre crop + resize to 96, values
in [-1, 1]) through :func:`gftlib.data.image_sources.image_loader` (batch 128, shuffled) with each worker
count. The first batch (worker start-up) is timed apart; ``images_per_s`` is the steady rate over
the remaining batches.

Demand: one CFM training step (independent coupling, the profile's fast settings) of the profile's
network at 96 x 96. The GPU profile measures the recipe's network (torchcfm's CIFAR-10 architecture at
96 px, 35.7 M parameters) at batch 128 directly; the CPU profiles time a smaller batch and scale to 128 assuming a
constant per-sample cost (stated in the result). demand = 128 / step time (images/s).
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gftlib.training.fastpath import fast_settings
from gftlib.data.image_sources import image_loader, open_image_source
from gftlib.models import UNetVelocity, count_parameters, unet_config
from gftlib.gft.objective import FlowMatchingObjective
from gftlib.training.config import TrainConfig
from gftlib.training.loop import train

__all__ = ["DATA_PROFILES", "bench_data", "render_data_markdown"]

IMAGE_SIZE, DEMAND_BATCH = 96, 128
DATA_PROFILES: dict[str, dict[str, Any]] = {
    "gpu": dict(n_images=3072, workers=(0, 4, 8, 16), step_batch=128, net="torchcfm", warmup=3, repeats=10),
    "cpu": dict(n_images=768, workers=(0, 2), step_batch=4, net="small", warmup=1, repeats=3),
    "quick": dict(n_images=24, workers=(0,), step_batch=2, net="tiny", warmup=1, repeats=1),
}


def _write_pngs(root: Path, n: int) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    for i in range(n):
        folder = root / f"part_{i // 256:03d}"
        folder.mkdir(exist_ok=True)
        pixels = rng.integers(0, 256, (IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"patch_{i:06d}.png")


def _time_loader(root: Path, workers: int) -> dict[str, Any]:
    source = open_image_source("folder", root, split="all", image_size=IMAGE_SIZE)
    loader = image_loader(source, DEMAND_BATCH, shuffle=True, num_workers=workers, seed=0)
    start = time.perf_counter()
    it = iter(loader)
    first = next(it)
    t_first = time.perf_counter() - start
    count, t0 = 0, time.perf_counter()
    for batch in it:
        count += batch.shape[0]
    steady = time.perf_counter() - t0
    del it, loader
    return {"workers": workers, "first_batch_s": t_first, "images": count + first.shape[0],
            "steady_images": count, "steady_s": steady,
            "images_per_s": count / steady if count else first.shape[0] / t_first}


class _Clock:
    """Objective wrapper stamping the start of every loss call (device synchronised)."""

    def __init__(self, inner: Any, device: torch.device) -> None:
        self.inner, self.device, self.stamps = inner, device, []

    def loss(self, model, beta, generator):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.stamps.append(time.perf_counter())
        return self.inner.loss(model, beta, generator)

    def state_dict(self):
        return self.inner.state_dict()

    def load_state_dict(self, state):
        self.inner.load_state_dict(state)


def _network(name: str) -> torch.nn.Module:
    """torchcfm's CIFAR-10 network at 96 px (the recipe's) or a gftlib UNet preset at 96 px with
    attention at its lowest resolution."""
    torch.manual_seed(0)
    if name == "torchcfm":
        from gftlib.cli.weights import torchcfm_size_config
        from gftlib.models.torchcfm import TorchCFMVelocity

        return TorchCFMVelocity(**torchcfm_size_config(IMAGE_SIZE))  # attention kept at 48 x 48
    cfg = unet_config(name)
    lowest = IMAGE_SIZE // 2 ** (len(cfg["channel_mult"]) - 1)  # the presets' attention sits at 8 px
    return UNetVelocity(**{**cfg, "image_size": IMAGE_SIZE, "attention_resolutions": (lowest,)})


def _time_step(p: dict[str, Any], device: torch.device) -> dict[str, Any]:
    model = _network(p["net"])
    b = p["step_batch"]
    data = torch.rand(4 * b, 3, IMAGE_SIZE, IMAGE_SIZE, generator=torch.Generator().manual_seed(1)) * 2 - 1
    clock = _Clock(FlowMatchingObjective(data.to(device), batch_size=b, coupling="independent", seed=0),
                   device)
    fast = fast_settings(device)
    steps = p["warmup"] + p["repeats"] + 1
    train(model, clock, TrainConfig(steps=steps, device=str(device), amp=fast["amp"],
                                    channels_last=fast["channels_last"], compile=fast["compile"],
                                    progress=False,
                                    log_every=10**9, seed=0))
    gaps = np.diff(clock.stamps)[p["warmup"]:].tolist()
    per_sample = statistics.median(gaps) / b
    return {"network": p["net"], "parameters": count_parameters(model), "measured_batch": b,
            "step_median_s": statistics.median(gaps), "times_s": gaps, "per_sample_s": per_sample,
            "step_s_at_128": per_sample * DEMAND_BATCH, "demand_images_per_s": 1.0 / per_sample,
            "scaled": b != DEMAND_BATCH, "settings": fast}


def bench_data(profile: str, device: torch.device) -> dict[str, Any]:
    """Loader throughput per worker count and the training step's demand (see the module doc)."""
    p = DATA_PROFILES[profile]
    with tempfile.TemporaryDirectory(prefix="gft-bench-data-") as tmp:
        root = Path(tmp)
        _write_pngs(root, p["n_images"])
        loaders = [_time_loader(root, w) for w in p["workers"]]
    step = _time_step(p, device)
    best = max(loaders, key=lambda r: r["images_per_s"])
    return {"image_size": IMAGE_SIZE, "batch": DEMAND_BATCH, "n_images": p["n_images"], "loader": loaders,
            "step": step, "best_workers": best["workers"], "best_images_per_s": best["images_per_s"],
            "supply_over_demand": best["images_per_s"] / step["demand_images_per_s"],
            "starves": bool(best["images_per_s"] < step["demand_images_per_s"])}


def render_data_markdown(d: dict[str, Any]) -> list[str]:
    """Markdown lines of the data-path section."""
    s = d["step"]
    how = (f"measured at batch {s['measured_batch']}, scaled to {d['batch']} at constant per-sample cost"
           if s["scaled"] else f"measured at batch {d['batch']}")
    lines = ["", f"## Data path at {d['image_size']}x{d['image_size']}", "",
             f"Loader: {d['n_images']} PNG files (random noise, {d['image_size']}x{d['image_size']}), "
             f"folder source, batch {d['batch']}.", "",
             "| workers | first batch | images/s (steady) |", "|---|---|---|"]
    lines += [f"| {r['workers']} | {r['first_batch_s']:.2f} s | {r['images_per_s']:.0f} |" for r in d["loader"]]
    verdict = "the loader keeps up" if not d["starves"] else "the loader is too slow: the GPU would starve"
    lines += ["", f"Training step demand ({s['network']} network, {s['parameters']:,} parameters, {how}): "
              f"{s['step_s_at_128']:.3f} s per step of {d['batch']} = {s['demand_images_per_s']:.0f} images/s.",
              f"Supply / demand = {d['supply_over_demand']:.2f} with {d['best_workers']} workers: {verdict}.", ""]
    return lines
