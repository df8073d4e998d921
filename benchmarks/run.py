"""``python -m benchmarks.run [--device auto|cpu|cuda] [--quick] [--out-dir DIR]``: one benchmark run
on one machine, written to ``DIR/results-<machine>.json`` and ``DIR/results-<machine>.md``.

Sections (each timed as the median of repeated measurements after warm-up; peak memory per section):

1. ``peer``: torchcfm's own CIFAR-10 OT-CFM training step as its example script runs it
   (UNetModelWrapper, ExactOptimalTransportConditionalFlowMatcher, Adam lr 2e-4 with the warm-up
   LambdaLR, gradient clipping 1.0, the example's per-key EMA; fp32). Own code, written from the
   description of examples/images/cifar10/train_cifar10.py.
2. ``cfm``: gftlib's CFM step (FlowMatchingObjective with exact OT, :func:`gftlib.training.loop.train`) on the
   same network configuration and batch: ``fp32`` (plain) and ``fast`` (the device's
   :func:`gftlib.training.fastpath.fast_settings` plus :class:`gftlib.gft.prefetch.PrefetchingObjective`), and
   ``fast_independent`` (independent coupling), and ``fast_ot_batch`` (prefetched OT at batch 128
   when the profile's batch differs; the OT target is stated there).
3. ``gft``: GFT steps at beta = 1 (constant schedule), coupling form and drift form, fast settings.
   A GFT step regresses B target and B pretrained samples, so the *per-sample* cost ratio against
   the CFM step is (t_gft / 2B) / (t_cfm / B). Targets: coupling form <= 1.15, drift form <= 1.5.
4. ``ot``: the exact OT coupling alone (gftlib.paths.couplings.ot_permutation vs torchcfm's OTPlanSampler)
   at batch 128 (and at the step's batch), and its share of a step: synchronous, and left on the
   critical path when prefetched (the measured wait for the background solve; target <= 5 %).
5. ``sampling``: batched Euler sampling at NFE 8 and 32 (gftlib.training.fastpath.sample_batched, fp32 and
   fast settings; torchcfm's network in a plain Euler loop as the peer), images per second.
6. ``data``: images/s of the disk image loader at 96 x 96 (PNG folder, per worker count) next to
   the training step's demand at batch 128 (:mod:`benchmarks.dataloader`): does the GPU starve?

Profiles: on CUDA the full CIFAR-10 configuration (unet_config("cifar10"), batch 128); on the CPU a
reduced configuration for *both* torchcfm and gftlib so that the run takes a few minutes; ``--quick``
a tiny one for the smoke test. Peak memory: ``torch.cuda.max_memory_allocated`` on a GPU; on the CPU
the peak resident set size during the section minus the RSS at its start (Linux VmHWM, reset
through /proc/self/clear_refs; ru_maxrss elsewhere), which misses memory the process already held.
"""

from __future__ import annotations

import argparse
import copy
import datetime as _dt
import math
import os
import platform
import re
import resource
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from benchmarks.dataloader import bench_data, render_data_markdown
from gftlib.paths.couplings import ot_permutation
from gftlib.experiments.methods import build_method
from gftlib.training.fastpath import fast_settings, sample_batched
from gftlib.io import atomic_write_bytes, atomic_write_json
from gftlib.models import UNetVelocity, count_parameters, to_fast_layout, unet_config
from gftlib.gft.objective import FlowMatchingObjective
from gftlib.gft.prefetch import PrefetchingObjective
from gftlib.training.config import TrainConfig
from gftlib.training.loop import train
from gftlib.validation import resolve_device

__all__ = ["PROFILES", "SECTIONS", "run_benchmarks", "machine_info", "main"]

#: Top-level sections of the results JSON.
SECTIONS = ("machine", "config", "peer", "cfm", "gft", "ot", "sampling", "data", "ratios", "targets")

#: Network / batch / repetition settings per profile. The network is described in torchcfm's terms
#: (num_channels, channel_mult, num_res_blocks, attention resolution, num_head_channels); gftlib
#: builds the same layout (min_group_channels=1 reproduces torchcfm's 32-group GroupNorm).
PROFILES: dict[str, dict[str, Any]] = {
    "gpu": dict(image_size=32, num_channels=128, channel_mult=(1, 2, 2, 2), num_res_blocks=2, attention=16,
                num_head_channels=64, batch=128, warmup=6, repeats=20, ot_batch=128, ot_repeats=10,
                sample_n=512, sample_batch=256, cache_size=2048, cache_steps=32, n_trajectories=256,
                time_grid=32),
    "cpu": dict(image_size=16, num_channels=32, channel_mult=(1, 2, 2), num_res_blocks=2, attention=8,
                num_head_channels=32, batch=32, warmup=2, repeats=5, ot_batch=128, ot_repeats=3,
                sample_n=32, sample_batch=32, cache_size=64, cache_steps=4, n_trajectories=32, time_grid=8),
    "quick": dict(image_size=8, num_channels=32, channel_mult=(1, 2), num_res_blocks=1, attention=4,
                  num_head_channels=32, batch=4, warmup=1, repeats=2, ot_batch=16, ot_repeats=1,
                  sample_n=2, sample_batch=2, cache_size=8, cache_steps=2, n_trajectories=4, time_grid=2),
}
NFES = (8, 32)
TARGETS = {"gft_coupling_per_sample": 1.15, "gft_drift_per_sample": 1.5, "ot_critical_path_share": 0.05}
LR, EMA_DECAY, GRAD_CLIP, PEER_WARMUP_STEPS = 2e-4, 0.9999, 1.0, 5000


# ----------------------------------------------------------------------------------------- machine
def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def slugify(name: str) -> str:
    """'NVIDIA H100 80GB HBM3' -> 'nvidia-h100-80gb-hbm3'."""
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    return slug or "unknown"


def machine_info(device: torch.device) -> dict[str, Any]:
    cpu = _cpu_name()
    info = {"device": str(device), "cpu": cpu, "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
            "python": platform.python_version(), "platform": platform.platform()}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["name"] = info["gpu"]
    else:
        info["name"] = cpu
    info["slug"] = slugify(info["name"])
    return info


# ----------------------------------------------------------------------------------------- measuring
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _rss_kb(field: str) -> int | None:
    try:
        match = re.search(rf"{field}:\s+(\d+)\s+kB", Path("/proc/self/status").read_text())
    except OSError:
        return None
    return int(match.group(1)) if match else None


class PeakMemory:
    """Peak memory of a section: CUDA max_memory_allocated, or the CPU resident-set high-water mark
    minus the RSS at the start (VmHWM reset through /proc/self/clear_refs where Linux allows it)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.method = ("torch.cuda.max_memory_allocated (absolute peak)" if device.type == "cuda"
                       else "CPU RSS delta: peak resident set during the section minus RSS at its start")
        self._base = 0.0
        self._reset_ok = False

    def __enter__(self) -> "PeakMemory":
        _sync(self.device)
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            return self
        try:
            Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
            self._reset_ok = True
        except OSError:
            self._reset_ok = False
        rss = _rss_kb("VmRSS")
        self._base = float(rss if rss is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
        return self

    def __exit__(self, *exc: Any) -> None:
        return None

    def peak_mb(self) -> float:
        _sync(self.device)
        if self.device.type == "cuda":
            return torch.cuda.max_memory_allocated(self.device) / 2**20
        hwm = _rss_kb("VmHWM") if self._reset_ok else None
        peak = float(hwm if hwm is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
        return max(peak - self._base, 0.0) / 1024


def _summary(times: list[float], per: int) -> dict[str, Any]:
    med = statistics.median(times)
    return {"median_s": med, "min_s": min(times), "max_s": max(times), "repeats": len(times),
            "samples_per_step": per, "per_sample_s": med / per, "samples_per_s": per / med,
            "times_s": times}


def _time_calls(fn: Callable[[], Any], device: torch.device, warmup: int, repeats: int) -> list[float]:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return times


class _StepClock:
    """Objective wrapper stamping the start of every ``loss`` call (device synchronised): the gaps
    between stamps are full training steps of :func:`gftlib.training.loop.train` (batch, forward, backward,
    clipping, optimizer, EMA, bookkeeping)."""

    def __init__(self, inner: Any, device: torch.device) -> None:
        self.inner, self.device, self.stamps = inner, device, []

    def loss(self, model: nn.Module, beta: float, generator: torch.Generator) -> Any:
        _sync(self.device)
        self.stamps.append(time.perf_counter())
        return self.inner.loss(model, beta, generator)

    def state_dict(self) -> dict[str, Any]:
        return self.inner.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.inner.load_state_dict(state)

    def set_rank(self, rank: int, world_size: int) -> None:
        self.inner.set_rank(rank, world_size)

    def step_times(self, warmup: int) -> list[float]:
        gaps = [b - a for a, b in zip(self.stamps, self.stamps[1:])]
        return gaps[warmup:]


# ----------------------------------------------------------------------------------------- models
def _peer_model(p: dict[str, Any]) -> nn.Module:
    from torchcfm.models.unet.unet import UNetModelWrapper

    return UNetModelWrapper(dim=(3, p["image_size"], p["image_size"]), num_res_blocks=p["num_res_blocks"],
                            num_channels=p["num_channels"], channel_mult=list(p["channel_mult"]), num_heads=4,
                            num_head_channels=p["num_head_channels"],
                            attention_resolutions=str(p["attention"]), dropout=0.1)


def _our_config(p: dict[str, Any], profile: str) -> dict[str, Any]:
    if profile == "gpu":
        return unet_config("cifar10")
    return dict(in_channels=3, image_size=p["image_size"], base_channels=p["num_channels"],
                channel_mult=tuple(p["channel_mult"]), num_res_blocks=p["num_res_blocks"],
                attention_resolutions=(p["attention"],), num_heads=4,
                num_head_channels=p["num_head_channels"], dropout=0.1, min_group_channels=1)


def _our_model(p: dict[str, Any], profile: str) -> UNetVelocity:
    torch.manual_seed(0)
    return UNetVelocity(**_our_config(p, profile))


def _data(p: dict[str, Any], device: torch.device, n_batches: int = 8) -> Tensor:
    g = torch.Generator().manual_seed(1)
    s = p["image_size"]
    return (torch.rand(n_batches * p["batch"], 3, s, s, generator=g) * 2 - 1).to(device)


# ----------------------------------------------------------------------------------------- sections
def bench_peer(p: dict[str, Any], device: torch.device) -> dict[str, Any]:
    """torchcfm's example step (own code): zero_grad, next batch, x0 = randn_like, OT-CFM sample,
    forward, MSE, backward, clip, Adam step, warm-up scheduler step, per-key EMA."""
    from torchcfm.conditional_flow_matching import ExactOptimalTransportConditionalFlowMatcher

    data, b = _data(p, device), p["batch"]
    with PeakMemory(device) as mem:
        torch.manual_seed(0)
        model = _peer_model(p).to(device)
        ema_model = copy.deepcopy(model)
        optim = torch.optim.Adam(model.parameters(), lr=LR)
        sched = torch.optim.lr_scheduler.LambdaLR(optim, lr_lambda=lambda s: min(s, PEER_WARMUP_STEPS)
                                                  / PEER_WARMUP_STEPS)
        fm = ExactOptimalTransportConditionalFlowMatcher(sigma=0.0)
        cursor = [0]

        def ema(source: nn.Module, target: nn.Module, decay: float) -> None:
            src, tgt = source.state_dict(), target.state_dict()
            for key in src:
                tgt[key].data.copy_(tgt[key].data * decay + src[key].data * (1 - decay))

        def step() -> None:
            optim.zero_grad()
            lo = cursor[0] % data.shape[0]
            cursor[0] += b
            x1 = data[lo:lo + b]
            x0 = torch.randn_like(x1)
            t, xt, ut = fm.sample_location_and_conditional_flow(x0, x1)
            vt = model(t, xt)
            loss = torch.mean((vt - ut) ** 2)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), GRAD_CLIP)
            optim.step()
            sched.step()
            ema(model, ema_model, EMA_DECAY)

        times = _time_calls(step, device, p["warmup"], p["repeats"])
        out = _summary(times, b)
        out["peak_memory_mb"] = mem.peak_mb()
    out["parameters"] = count_parameters(model)
    out["description"] = "torchcfm OT-CFM step (UNetModelWrapper, exact OT, Adam, clip, EMA), fp32"
    return out


def _train_section(objective: Any, p: dict[str, Any], profile: str, device: torch.device,
                   settings: dict[str, Any], *, schedule_steps: bool = False, samples_per_step: int,
                   build: Callable[[int], Any] | None = None) -> dict[str, Any]:
    """Time ``train`` steps of our UNet on ``objective`` (or ``build(steps) -> (objective, schedule)``)."""
    steps = p["warmup"] + p["repeats"] + 1
    with PeakMemory(device) as mem:
        schedule = None
        if build is not None:
            objective, schedule = build(steps)
        clock = _StepClock(objective, device)
        cfg = TrainConfig(steps=steps, lr=LR, ema_decay=EMA_DECAY, grad_clip=GRAD_CLIP, device=str(device),
                          amp=settings["amp"], channels_last=settings["channels_last"],
                          compile=settings["compile"], progress=False, log_every=10**9, seed=0)
        result = train(_our_model(p, profile), clock, cfg, schedule=schedule)
        out = _summary(clock.step_times(p["warmup"]), samples_per_step)
        out["peak_memory_mb"] = mem.peak_mb()
    objective = clock.inner
    waits = getattr(objective, "wait_seconds", None)
    if waits:  # PrefetchingObjective: time the step waited for the background coupling solve
        waits = waits[max(0, len(waits) - len(out["times_s"])):]
        out["coupling_wait_s"] = waits
        out["coupling_wait_median_s"] = statistics.median(waits)
        out["coupling_wait_share"] = statistics.median(waits) / out["median_s"]
    if hasattr(objective, "close"):
        objective.close()
    out["final_loss"] = result.history[-1]["total"]
    out["settings"] = dict(settings)
    return out


def bench_cfm(p: dict[str, Any], profile: str, device: torch.device, fast: dict[str, Any]) -> dict[str, Any]:
    data, b = _data(p, device), p["batch"]
    plain = {"amp": "none", "channels_last": False, "compile": False}
    res = {}
    obj = FlowMatchingObjective(data, batch_size=b, coupling="ot", seed=0)
    res["fp32"] = _train_section(obj, p, profile, device, plain, samples_per_step=b)
    res["fp32"]["description"] = "gftlib CFM step, exact OT, fp32, no prefetch"
    obj = PrefetchingObjective(FlowMatchingObjective(data, batch_size=b, coupling="ot", seed=0))
    res["fast"] = _train_section(obj, p, profile, device, fast, samples_per_step=b)
    res["fast"]["settings"]["prefetch"] = True
    res["fast"]["description"] = "gftlib CFM step, exact OT prefetched, fast settings"
    obj = FlowMatchingObjective(data, batch_size=b, coupling="independent", seed=0)
    res["fast_independent"] = _train_section(obj, p, profile, device, fast, samples_per_step=b)
    res["fast_independent"]["description"] = "gftlib CFM step, independent coupling, fast settings"
    big = p["ot_batch"]
    if big != b:  # the OT target is stated at batch 128: measure the prefetched step there too
        obj = PrefetchingObjective(FlowMatchingObjective(_data(p, device, n_batches=2 * (big // b + 1)),
                                                         batch_size=big, coupling="ot", seed=0))
        res["fast_ot_batch"] = _train_section(obj, p, profile, device, fast, samples_per_step=big)
        res["fast_ot_batch"]["settings"]["prefetch"] = True
        res["fast_ot_batch"]["description"] = (f"gftlib CFM step at batch {big}, exact OT prefetched, "
                                               "fast settings")
    res["parameters"] = count_parameters(_our_model(p, profile))
    return res


def bench_gft(p: dict[str, Any], profile: str, device: torch.device, fast: dict[str, Any]) -> dict[str, Any]:
    data, b = _data(p, device), p["batch"]
    res = {}
    for form, method in (("coupling", "gft-coupling"), ("drift", "gft-drift")):
        pretrained = _our_model(p, profile).eval()
        build_times = []

        def build(steps: int, method: str = method, pretrained: nn.Module = pretrained) -> Any:
            spec = build_method(method, target_data=data, pretrained_model=pretrained, batch_size=b,
                                steps=steps, beta0=1.0, schedule_kind="constant", target_coupling="ot",
                                cache_size=p["cache_size"], n_trajectories=p["n_trajectories"],
                                time_grid=p["time_grid"], solver_steps=p["cache_steps"], device=str(device))
            start = time.perf_counter()
            spec.objective.pretrained.prepare()  # the one-off cache build, outside the timed steps
            _sync(device)
            build_times.append(time.perf_counter() - start)
            return PrefetchingObjective(spec.objective), spec.schedule

        out = _train_section(None, p, profile, device, fast, samples_per_step=2 * b, build=build)
        out["settings"]["prefetch"] = True
        out["cache_build_s"] = build_times[0]
        out["cache"] = ({"size": p["cache_size"], "solver_steps": p["cache_steps"]} if form == "coupling" else
                        {"n_trajectories": p["n_trajectories"], "time_grid": p["time_grid"],
                         "solver_steps": p["cache_steps"]})
        out["description"] = (f"gftlib GFT step, {form} form, beta = 1: {b} target + {b} pretrained samples, "
                              "exact OT target coupling prefetched, fast settings")
        res[form] = out
    return res


def bench_ot(p: dict[str, Any], device: torch.device) -> dict[str, Any]:
    from torchcfm.optimal_transport import OTPlanSampler

    s = p["image_size"]
    peer = OTPlanSampler(method="exact")
    g = torch.Generator().manual_seed(3)
    out: dict[str, Any] = {}
    shapes = {"batch128_step_shape": (p["ot_batch"], (3, s, s)),
              "batch128_cifar_shape": (p["ot_batch"], (3, 32, 32)),
              "step_batch": (p["batch"], (3, s, s))}
    for key, (n, shape) in shapes.items():
        x0 = torch.randn(n, *shape, generator=g)
        x1 = torch.rand(n, *shape, generator=g) * 2 - 1
        with PeakMemory(torch.device("cpu")) as mem:
            ours = _time_calls(lambda: ot_permutation(x0, x1), torch.device("cpu"), 1, p["ot_repeats"])
            ours_mem = mem.peak_mb()
        theirs = _time_calls(lambda: peer.sample_plan(x0, x1), torch.device("cpu"), 1, p["ot_repeats"])
        out[key] = {"batch": n, "shape": list(shape), "ours_median_s": statistics.median(ours),
                    "ours_times_s": ours, "ours_peak_memory_mb": ours_mem,
                    "torchcfm_median_s": statistics.median(theirs), "torchcfm_times_s": theirs}
    out["description"] = ("exact OT on CPU float32 inputs: gftlib.paths.couplings.ot_permutation (float64 "
                          "GEMM-form cost of centred inputs + scipy linear_sum_assignment) vs torchcfm "
                          "OTPlanSampler('exact').sample_plan (cdist + POT emd + np.random.choice)")
    return out


def bench_sampling(p: dict[str, Any], profile: str, device: torch.device, fast: dict[str, Any]
                   ) -> dict[str, Any]:
    n, bs, s = p["sample_n"], p["sample_batch"], p["image_size"]
    shape = (3, s, s)
    res: dict[str, Any] = {"n": n, "batch_size": bs, "method": "euler"}
    model = _our_model(p, profile).to(device).eval()
    fast_model = to_fast_layout(copy.deepcopy(model)) if fast["channels_last"] else model
    torch.manual_seed(0)
    peer = _peer_model(p).to(device).eval()
    variants = {"fp32": ("none", False, model)}
    if fast["amp"] != "none" or fast["channels_last"]:
        variants["fast"] = (fast["amp"], fast["channels_last"], fast_model)
    for nfe in NFES:
        entry: dict[str, Any] = {}
        for name, (amp, cl, net) in variants.items():
            kw = dict(nfe=nfe, batch_size=bs, amp=amp, channels_last=cl, device=str(device))
            warm = torch.Generator().manual_seed(9)
            sample_batched(net, min(n, bs), shape, generator=warm, **kw)  # warm-up
            with PeakMemory(device) as mem:
                run = sample_batched(net, n, shape, generator=torch.Generator().manual_seed(9), **kw)
                entry[name] = {"images_per_s": run.images_per_second, "seconds": run.seconds, "nfe": run.nfe,
                               "amp": amp, "channels_last": cl, "peak_memory_mb": mem.peak_mb()}

        def peer_run(count: int) -> None:
            x = torch.randn(count, *shape, generator=torch.Generator().manual_seed(9)).to(device)
            with torch.no_grad():
                for k in range(nfe):
                    t = torch.full((count,), k / nfe, device=device)
                    x = x + peer(t, x) / nfe
        peer_run(min(n, bs))
        with PeakMemory(device) as mem:
            _sync(device)
            start = time.perf_counter()
            for lo in range(0, n, bs):
                peer_run(min(bs, n - lo))
            _sync(device)
            sec = time.perf_counter() - start
            entry["torchcfm_euler"] = {"images_per_s": n / sec, "seconds": sec, "nfe": nfe, "amp": "none",
                                       "channels_last": False, "peak_memory_mb": mem.peak_mb()}
        res[f"nfe_{nfe}"] = entry
    res["description"] = ("batched Euler sampling of the untrained network (cost does not depend on the "
                          "weights): gftlib.training.fastpath.sample_batched vs torchcfm's UNet in a plain Euler loop")
    return res


def _process_warmup(p: dict[str, Any], profile: str, device: torch.device) -> None:
    """One forward/backward of each network at batch 2 before any section, so that one-off library
    initialisation (kernel caches, allocator pools, lazy imports) is charged to no section."""
    s = p["image_size"]
    x, t = torch.zeros(2, 3, s, s, device=device), torch.rand(2, device=device)
    torch.manual_seed(0)
    for model, call in ((_peer_model(p), lambda m: m(t, x)), (_our_model(p, profile), lambda m: m(x, t))):
        call(model.to(device)).sum().backward()
    _sync(device)


# ----------------------------------------------------------------------------------------- report
def _ratios(r: dict[str, Any]) -> dict[str, Any]:
    peer, cfm, gft, ot, smp = r["peer"], r["cfm"], r["gft"], r["ot"], r["sampling"]
    ref = cfm["fast"]["per_sample_s"]
    out = {
        "cfm_fp32_step_vs_torchcfm": cfm["fp32"]["median_s"] / peer["median_s"],
        "cfm_fast_step_vs_torchcfm": cfm["fast"]["median_s"] / peer["median_s"],
        "cfm_fast_step_vs_cfm_fp32": cfm["fast"]["median_s"] / cfm["fp32"]["median_s"],
        "gft_coupling_per_sample_vs_cfm": gft["coupling"]["per_sample_s"] / ref,
        "gft_drift_per_sample_vs_cfm": gft["drift"]["per_sample_s"] / ref,
        "gft_coupling_step_vs_cfm": gft["coupling"]["median_s"] / cfm["fast"]["median_s"],
        "gft_drift_step_vs_cfm": gft["drift"]["median_s"] / cfm["fast"]["median_s"],
        "gft_coupling_per_sample_vs_torchcfm": gft["coupling"]["per_sample_s"] / peer["per_sample_s"],
        "gft_drift_per_sample_vs_torchcfm": gft["drift"]["per_sample_s"] / peer["per_sample_s"],
        "ot_ours_vs_torchcfm_batch128": (ot["batch128_step_shape"]["ours_median_s"]
                                         / ot["batch128_step_shape"]["torchcfm_median_s"]),
        "ot_share_of_cfm_fp32_step": ot["step_batch"]["ours_median_s"] / cfm["fp32"]["median_s"],
        "ot_share_of_cfm_fast_step_prefetched": cfm["fast"]["coupling_wait_share"],
        # measured directly: the median time the step waited for the background OT solve, over
        # the median step, at batch ot_batch (128) -- the "<= 5 % of a step at batch 128"
        "ot_critical_path_share_vs_cfm": cfm.get("fast_ot_batch", cfm["fast"])["coupling_wait_share"],
        # what a synchronous OT would cost at batch 128 (the step's per-sample cost scaled to 128)
        "ot_share_estimate_batch128": ot["batch128_step_shape"]["ours_median_s"] / (
            ot["batch128_step_shape"]["ours_median_s"] + ot["batch128_step_shape"]["batch"]
            * cfm["fp32"]["per_sample_s"]),
    }
    for nfe in NFES:
        e = smp[f"nfe_{nfe}"]
        best = max(v["images_per_s"] for k, v in e.items() if k != "torchcfm_euler")
        out[f"sampling_nfe{nfe}_vs_torchcfm"] = best / e["torchcfm_euler"]["images_per_s"]
    return out


def _met(target: dict[str, Any]) -> str:
    return "met" if target["met"] else "NOT met"


def _fmt_s(x: float) -> str:
    if x < 1e-3:
        return f"{x * 1e6:.0f} us"
    return f"{x * 1e3:.1f} ms" if x < 1 else f"{x:.2f} s"


def render_markdown(r: dict[str, Any]) -> str:
    m, c, peer, cfm, gft, ot, smp, rat, tgt = (r[k] for k in ("machine", "config", "peer", "cfm", "gft", "ot",
                                                              "sampling", "ratios", "targets"))
    big = cfm.get("fast_ot_batch", cfm["fast"])
    dev = m.get("gpu") or f"{m['cpu']} ({m['cpu_count']} logical CPUs, {m['torch_threads']} torch threads)"
    lines = [
        f"# gftlib benchmark on {m['name']}",
        "",
        f"- Machine: {dev}; device `{m['device']}`; torch {m['torch']}; profile `{c['profile']}`; "
        f"{r['date']}.",
        f"- Network (torchcfm and gftlib, same layout): {c['network']}; {c['parameters']:,} parameters "
        f"(gftlib), {peer['parameters']:,} (torchcfm); batch {c['batch']}, images 3x{c['image_size']}x"
        f"{c['image_size']}.",
        f"- Timing: median of {c['repeats']} steps after {c['warmup']} warm-up steps (device synchronised). "
        f"Fast settings on this device: {c['fast_settings']} + OT prefetching.",
        f"- Peak memory: {c['memory_method']}.",
        "",
        "| measurement | time | throughput | peak mem (MB) | vs torchcfm | vs our CFM |",
        "|---|---|---|---|---|---|",
    ]

    def row(name: str, e: dict[str, Any], vs_peer: float | None, vs_cfm: float | None) -> None:
        vp = "" if vs_peer is None else f"{vs_peer:.2f}x"
        vc = "" if vs_cfm is None else f"{vs_cfm:.2f}x"
        lines.append(f"| {name} | {_fmt_s(e['median_s'])}/step | {e['samples_per_s']:.1f} samples/s | "
                     f"{e['peak_memory_mb']:.0f} | {vp} | {vc} |")

    row("(1) torchcfm OT-CFM step, fp32", peer, 1.0, None)
    row("(2) gftlib CFM step, OT, fp32", cfm["fp32"], cfm["fp32"]["median_s"] / peer["median_s"], None)
    row("(2) gftlib CFM step, OT prefetched, fast", cfm["fast"], rat["cfm_fast_step_vs_torchcfm"], 1.0)
    row("gftlib CFM step, independent coupling, fast", cfm["fast_independent"],
        cfm["fast_independent"]["median_s"] / peer["median_s"],
        cfm["fast_independent"]["median_s"] / cfm["fast"]["median_s"])
    if "fast_ot_batch" in cfm:
        row(f"(2) gftlib CFM step at batch {big['samples_per_step']}, OT prefetched, fast", big, None, None)
    for form in ("coupling", "drift"):
        e = gft[form]
        row(f"(3) GFT step, {form} form ({c['batch']}+{c['batch']} samples), per-sample ratio", e,
            rat[f"gft_{form}_per_sample_vs_torchcfm"], rat[f"gft_{form}_per_sample_vs_cfm"])
    for key, label in (("batch128_step_shape", "step image shape"), ("batch128_cifar_shape", "3x32x32"),
                       ("step_batch", "step batch")):
        e = ot[key]
        lines.append(f"| (4) exact OT alone, batch {e['batch']}, {label} | {_fmt_s(e['ours_median_s'])} "
                     f"(torchcfm/POT {_fmt_s(e['torchcfm_median_s'])}) | | {e['ours_peak_memory_mb']:.0f} | "
                     f"{e['ours_median_s'] / e['torchcfm_median_s']:.1f}x | |")
    for nfe in NFES:
        e = smp[f"nfe_{nfe}"]
        peer_ips = e["torchcfm_euler"]["images_per_s"]
        for name, v in e.items():
            label = "torchcfm UNet, plain Euler loop" if name == "torchcfm_euler" else f"gftlib, {name}"
            lines.append(f"| (5) sampling NFE {nfe}, {label} | {_fmt_s(v['seconds'])} for {smp['n']} | "
                         f"{v['images_per_s']:.1f} images/s | {v['peak_memory_mb']:.0f} | "
                         f"{peer_ips / v['images_per_s']:.2f}x time | |")
    lines += [
        "",
        f"OT share of a step at batch {c['batch']}: {rat['ot_share_of_cfm_fp32_step']:.1%} of the plain fp32 "
        f"CFM step (synchronous); {rat['ot_share_of_cfm_fast_step_prefetched']:.1%} left on the critical "
        "path when prefetched (median wait for the background solve over the median step). A synchronous "
        f"OT at batch {ot['batch128_step_shape']['batch']} would take "
        f"{rat['ot_share_estimate_batch128']:.1%} of a step (estimate from the per-sample step cost).",
        "",
        f"OT left on the critical path at batch {big['samples_per_step']} (prefetched; median wait for the "
        f"background solve over the median step, measured): {rat['ot_critical_path_share_vs_cfm']:.2%} "
        f"(target <= {TARGETS['ot_critical_path_share']:.0%}): {_met(tgt['ot_critical_path_share'])}; "
        f"step {_fmt_s(big['median_s'])}, wait {_fmt_s(big['coupling_wait_median_s'])}.",
        "",
        "GFT overhead targets (per-sample cost vs our CFM step with the same settings):",
        f"- coupling form: {rat['gft_coupling_per_sample_vs_cfm']:.2f}x (target <= "
        f"{TARGETS['gft_coupling_per_sample']}): {_met(tgt['gft_coupling_per_sample'])}",
        f"- drift form: {rat['gft_drift_per_sample_vs_cfm']:.2f}x (target <= "
        f"{TARGETS['gft_drift_per_sample']}): {_met(tgt['gft_drift_per_sample'])}",
        f"- one-off cache builds (not in the step): coupling {_fmt_s(gft['coupling']['cache_build_s'])}, "
        f"drift {_fmt_s(gft['drift']['cache_build_s'])}.",
        "",
        "Ratios are time ratios (> 1: slower than the reference) except where marked. Timings on a shared "
        "machine are noisy; see the JSON for every repeat.",
        "",
    ]
    if "data" in r:
        lines += render_data_markdown(r["data"])
    return "\n".join(lines)


def _check_finite_positive(obj: Any, path: str = "") -> None:
    if isinstance(obj, dict):
        for k, v in obj.items():
            _check_finite_positive(v, f"{path}.{k}")
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            _check_finite_positive(v, f"{path}[{i}]")
    elif isinstance(obj, float) and not math.isfinite(obj):
        raise RuntimeError(f"benchmark produced a non-finite number at {path}: {obj}")


def run_benchmarks(device: str = "auto", *, quick: bool = False, out_dir: str | Path = "benchmarks",
                   machine: str | None = None, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run every section on ``device`` and write ``results-<machine>.json`` / ``.md`` into ``out_dir``.
    Returns the results dict (with ``json_path`` and ``md_path``)."""
    dev = resolve_device(device)
    profile = "quick" if quick else ("gpu" if dev.type == "cuda" else "cpu")
    p = PROFILES[profile]
    fast = fast_settings(dev)
    info = machine_info(dev)
    slug = slugify(machine) if machine else info["slug"]
    info["slug"] = slug
    mem_method = PeakMemory(dev).method
    net = (f"UNet {p['num_channels']} channels, mult {list(p['channel_mult'])}, {p['num_res_blocks']} res "
           f"blocks, attention at {p['attention']}, head channels {p['num_head_channels']}, dropout 0.1")
    r: dict[str, Any] = {
        "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": info,
        "config": {"profile": profile, "network": net, "image_size": p["image_size"], "batch": p["batch"],
                   "warmup": p["warmup"], "repeats": p["repeats"], "fast_settings": fast,
                   "memory_method": mem_method,
                   "profile_settings": {k: (list(v) if isinstance(v, tuple) else v) for k, v in p.items()},
                   "parameters": count_parameters(_our_model(p, profile)), "lr": LR, "ema_decay": EMA_DECAY,
                   "grad_clip": GRAD_CLIP},
    }
    start = time.perf_counter()
    _process_warmup(p, profile, dev)
    for name, fn in (("peer", lambda: bench_peer(p, dev)), ("cfm", lambda: bench_cfm(p, profile, dev, fast)),
                     ("gft", lambda: bench_gft(p, profile, dev, fast)), ("ot", lambda: bench_ot(p, dev)),
                     ("sampling", lambda: bench_sampling(p, profile, dev, fast)),
                     ("data", lambda: bench_data(profile, dev))):
        t0 = time.perf_counter()
        r[name] = fn()
        log(f"[bench] {name}: {time.perf_counter() - t0:.1f} s")
    r["ratios"] = _ratios(r)
    r["targets"] = {key: {"value": r["ratios"][f"{key}_vs_cfm"], "limit": limit,
                          "met": bool(r["ratios"][f"{key}_vs_cfm"] <= limit)}
                    for key, limit in TARGETS.items()}
    r["total_seconds"] = time.perf_counter() - start
    _check_finite_positive(r)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out / f"results-{slug}.json", out / f"results-{slug}.md"
    atomic_write_json(json_path, r)
    atomic_write_bytes(md_path, render_markdown(r).encode())
    log(f"[bench] wrote {json_path} and {md_path} ({r['total_seconds']:.0f} s)")
    r["json_path"], r["md_path"] = str(json_path), str(md_path)
    return r


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default auto)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes (smoke test), any device")
    parser.add_argument("--out-dir", default=str(Path(__file__).resolve().parent),
                        help="where results-<machine>.json/.md go (default: the benchmarks directory)")
    parser.add_argument("--machine", default=None, help="override the machine slug used in the file names")
    args = parser.parse_args(argv)
    from gftlib.io import check_output_path  # bad values are rejected before any benchmark runs

    try:
        resolve_device(args.device)
        check_output_path("--out-dir", args.out_dir, directory=True)
    except ValueError as err:
        parser.error(str(err) if str(err).startswith("--") else f"--device: {err}")
    if args.machine is not None and not re.search(r"[A-Za-z0-9]", args.machine):
        parser.error(f"--machine must contain a letter or digit (it names the result files), "
                     f"got {args.machine!r}")
    run_benchmarks(args.device, quick=args.quick, out_dir=args.out_dir, machine=args.machine)
    return 0


if __name__ == "__main__":
    sys.exit(main())
