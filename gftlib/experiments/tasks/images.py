"""The image domain-shift task of E2: pretrain a UNet flow on one image distribution (the data:
:class:`gftlib.experiments.tasks.images_data.ImageTask`), fine-tune it on a small sample of another
with every method of :mod:`gftlib.experiments.methods` through the shared
:class:`gftlib.experiments.tasks.runner.TaskRunner`; the evaluation is in
:mod:`gftlib.experiments.tasks.images_eval`.

Conventions: t = 0 noise (x0 ~ N(0, I)), t = 1 data; images are ``(n, 3, S, S)`` float32 in
[-1, 1]; every metric clamps generated images to [-1, 1] first (what an image file would hold).

Training: :func:`pretrain` (OT-CFM on the source, like the paper's pretrained model) and
:func:`finetune` (one method, one seed, every method with the same optimizer, steps, batch size and
evaluation budget; :class:`ImageFinetuneConfig` extends the 2-D task's
:class:`~gftlib.experiments.tasks.budget.FinetuneConfig`). Both are cached with
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

Reference values (:func:`gftlib.experiments.tasks.images_eval.reference_metrics`): a null
distribution of each distance (``n_null`` independent held-out target samples of size ``n_eval``
against H), the distance of a sample of the training distribution, of the source, and of the
pretrained model.
"""


from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from gftlib.eval.features import INCEPTION_URL, InceptionFeatures, load_inception_features
from gftlib.experiments import image_checkpoints as IC
from gftlib.experiments.cache import cached_torch
from gftlib.experiments.methods import METHODS, MethodRun, check_methods
from gftlib.experiments.profiles import PROFILES, profile_values
from gftlib.experiments.tasks.budget import FinetuneConfig
from gftlib.experiments.tasks.images_data import (ImageTask, check_optional_path, normalize_model_config,
                                                  sliced_w2)
from gftlib.experiments.tasks.runner import (RunRecord, TaskRunner, load_weights, pretrain_source,
                                             record_fields)
from gftlib.gft.objective import FlowMatchingObjective
from gftlib.losses import reduction_weight
from gftlib.models import TORCHCFM_RECIPE, count_parameters
from gftlib.solvers.ode import sample_ode
from gftlib.training import AMP_MODES, TrainConfig
from gftlib.validation import check_choice, check_existing_path, check_positive_int, resolve_device

__all__ = ["PROFILE_TABLE", "PROFILE_SETTINGS", "DRY_RUN_SIZES", "DRY_RUN_SETTINGS", "NO_TARGET_TERM", "QUICK_METHODS", "ImageFinetuneConfig",
           "ImageSetup", "Generated", "ImageRun", "ImageRunner", "resolve_setup", "pretrain", "generate",
           "generate_pretrained", "finetune", "run_methods"]

#: Methods whose objective has no target term (reflow stays at the pretrained law by design).
NO_TARGET_TERM: tuple[str, ...] = ("reflow",)

#: Methods of the quick profile: GFT (coupling form) and the three baselines every claim is tested
#: against (ft, ft-ot, l2-reg), in 4 units (seeds, each with its own pretraining) within the CPU
#: budget; gft-drift, scratch and reflow run on the other profiles (and on request: ``methods``).
#: E1 compares both GFT forms in 2-D.
QUICK_METHODS: tuple[str, ...] = ("ft", "ft-ot", "l2-reg", "gft-coupling")

#: The notebook's user-facing knobs per profile. ``methods`` is a list of names from METHODS;
#: ``model_config`` a name in gftlib.models.UNET_CONFIGS or a dict of UNetVelocity overrides
#: (optionally with "config": base name), or "torchcfm" / {"config": "torchcfm", ...} for torchcfm's
#: UNetModelWrapper (CIFAR-10 architecture + overrides); ``image_size`` overrides the config's.
#: ``pretrained_checkpoint``: :mod:`gftlib.experiments.image_checkpoints` ("pretrain", a path, or
#: "required": the paper profile starts from torchcfm's CIFAR-10 release, a path the user gives).
PROFILE_TABLE: dict[str, dict[str, Any]] = {
    "smoke": {"n_seeds": 1, "dataset": "skimage", "data_root": None, "pretrain_root": None,
              "inception_weights": None, "image_size": 8, "model_config": "tiny", "n_target": 64,
              "pretrain_steps": 60, "steps": 6, "batch_size": 16, "beta0": 2.0, "schedule_kind": "cosine",
              "methods": list(METHODS), "nfe": 3},
    "quick": {"n_seeds": 4, "dataset": "skimage", "data_root": None, "pretrain_root": None,
              "inception_weights": None, "image_size": 16, "model_config": "tiny", "n_target": 256,
              "pretrain_steps": 350, "steps": 150, "batch_size": 32, "beta0": 2.0, "schedule_kind": "cosine",
              "methods": list(QUICK_METHODS), "nfe": 8},
    "paper": {"n_seeds": 3, "dataset": "skimage", "data_root": None, "pretrain_root": None,
              "pretrained_checkpoint": IC.REQUIRED,
              "inception_weights": None, "image_size": 32, "model_config": IC.TORCHCFM, "n_target": 5000,
              "pretrain_steps": 100_000, "steps": 20_000, "batch_size": 128, "beta0": 2.0,
              "schedule_kind": "cosine", "methods": list(METHODS), "nfe": 50},
}

for _profile in ("smoke", "quick"):  # pretrain the source model here
    PROFILE_TABLE[_profile]["pretrained_checkpoint"] = IC.PRETRAIN

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

#: Dry-run sizes (``dry_run=True``, :func:`gftlib.experiments.profiles.profile_values`): a profile's
#: code path (data source, methods, model kind, checkpoint, schedule) at tiny sizes, for the tests.
DRY_RUN_SIZES: dict[str, Any] = {"n_seeds": 2, "image_size": 8, "n_target": 16, "pretrain_steps": 2,
                                 "steps": 2, "batch_size": 4, "nfe": 2}
DRY_RUN_SETTINGS: dict[str, Any] = {
    "n_source": 16, "n_heldout": 16, "n_eval": 8, "n_null": 3, "n_loss": 8, "n_curve": 4, "n_evals": 1,
    "n_grid": 4, "pretrain_batch": 4, "cache_size": 8, "n_trajectories": 4, "time_grid": 2,
    "feature_width": 8, "n_projections": 16, "eval_chunk": 8}

@dataclass(frozen=True)
class ImageFinetuneConfig(FinetuneConfig):
    """The 2-D task's fine-tuning budget plus the image settings: drift-cache ``time_grid``, the
    pretrained sampler's ``solver_steps`` (Euler; the caches use it), ``amp`` ("none" | "bf16"),
    ``n_curve`` images for the sliced-W2 curve over training; no dopri5 evaluations by default;
    ``loss_reduction`` of the training losses (gftlib.losses.LOSS_REDUCTIONS: "sum" over a sample's
    dimensions, or torchcfm's "mean" over all elements)."""

    dopri_fractions: tuple[float, ...] = ()
    time_grid: int = 8
    solver_steps: int = 8
    amp: str = "none"
    n_curve: int = 64
    loss_reduction: str = "sum"

    def __post_init__(self) -> None:
        super().__post_init__()
        put = lambda name, value: object.__setattr__(self, name, value)  # noqa: E731
        put("time_grid", check_positive_int("time_grid", self.time_grid))
        put("solver_steps", check_positive_int("solver_steps", self.solver_steps))
        put("amp", check_choice("amp", self.amp, AMP_MODES))
        put("n_curve", check_positive_int("n_curve", self.n_curve, minimum=2))
        reduction_weight(self.loss_reduction, (1,))  # validates the name

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
    s = profile_values(PROFILE_SETTINGS, profile, dry_run=params.get("dry_run", False),
                       dry_run_sizes=DRY_RUN_SETTINGS)
    checkpoint = IC.check_pretrained_checkpoint(params.get("pretrained_checkpoint", IC.PRETRAIN))
    if checkpoint is not None:  # fine-tuning torchcfm's network: torchcfm's optimiser and loss scale
        s = {**s, "lr": TORCHCFM_RECIPE["lr"], "ema_decay": TORCHCFM_RECIPE["ema_decay"]}
    n_seeds = check_positive_int("n_seeds", params["n_seeds"])
    methods = check_methods(params["methods"])
    device = resolve_device(params["device"])
    image_size = check_positive_int("image_size", params["image_size"], minimum=4)
    nfe = check_positive_int("nfe", params["nfe"])
    amp = s["amp"] if device.type == "cuda" else "none"
    task = ImageTask(
        dataset=params["dataset"], data_root=params["data_root"], pretrain_root=params["pretrain_root"],
        pretrained_checkpoint=checkpoint, image_size=image_size,
        model_config=normalize_model_config(params["model_config"], image_size),
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
        solver_steps=nfe, amp=amp, n_curve=min(s["n_curve"], task.n_eval),
        loss_reduction="sum" if checkpoint is None else TORCHCFM_RECIPE["loss_reduction"])
    if config.batch_size > task.n_target:
        raise ValueError(f"batch_size must be <= n_target={task.n_target} (one batch of distinct target "
                         f"images), got {config.batch_size}")
    inception = None
    if params["inception_weights"] is not None:
        path = check_existing_path(
            "inception_weights", check_optional_path("inception_weights", params["inception_weights"]),
            what=f"None or the local NVlabs Inception file (gftlib never downloads it; get {INCEPTION_URL})")
        inception = load_inception_features(path, device=device)
    task.check_data()  # a missing file or a too-small set fails here
    seeds = tuple(task.seed + i for i in range(n_seeds))
    return ImageSetup(task=task, config=config, methods=methods, seeds=seeds, device=device,
                      inception=inception, n_parameters=n_parameters)


# --------------------------------------------------------------------------------------------- training
def pretrain(task: ImageTask, *, device: str | torch.device = "cpu") -> nn.Module:
    """The source model: CFM (``task.pretrain_coupling``) on ``task.source_train()`` from a random
    init seeded with ``task.seed``; returns the EMA network (eval mode, no gradients, CPU). Cached.
    With ``task.pretrained_checkpoint``: that checkpoint's EMA network instead (nothing is trained)."""
    dev = resolve_device(device)
    if task.pretrained_checkpoint is not None:
        return IC.load_checkpoint_model(task.pretrained_checkpoint, task.model_kwargs())
    objective = lambda: FlowMatchingObjective(  # noqa: E731
        task.source_train().to(dev), batch_size=task.pretrain_batch, coupling=task.pretrain_coupling,
        seed=task.seed)
    key = {"kind": "tasks-images-pretrain", "task": task.pretrain_key(), "device": dev.type}
    state = pretrain_source(task, objective, name="tasks-images-pretrain", key=key, device=dev, amp=task.amp)
    return load_weights(task.build_model(), state["ema"])


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
class ImageRun(RunRecord):
    """One fine-tuning run (EMA model) of the image task: :class:`~gftlib.experiments.tasks.runner.RunRecord`
    plus curve arrays sharing ``eval_steps`` (E,) with step 0 = the initial model: ``curve_sw`` (sliced
    W2 of ``n_curve`` samples to H) and ``curve_loss`` (mean held-out CFM loss); ``final``:
    :class:`Generated` of the final EMA model."""

    eval_steps: np.ndarray
    curve_sw: np.ndarray
    curve_loss: np.ndarray
    final: Generated = field(repr=False)


class ImageRunner(TaskRunner[ImageTask, ImageFinetuneConfig, ImageRun]):
    """The image task's pieces of the shared runner: a sliced-W2 / held-out-loss curve over
    training, and the final EMA model's :class:`Generated`."""

    name = "tasks-images"
    eval_key = "curve_sw"
    task_type = ImageTask
    config_type = ImageFinetuneConfig
    scratch_ignores = ("pretrain_root", "n_source", "pretrain_steps", "pretrain_batch", "pretrain_lr",
                       "pretrain_coupling", "pretrained_checkpoint", "pretrained_checkpoint_sha256")

    def pretrained(self, task: ImageTask, method: str, config: ImageFinetuneConfig,
                   device: torch.device) -> nn.Module | None:
        return None if method == "scratch" else pretrain(task, device=device)

    def train_config(self, config: ImageFinetuneConfig, seed: int, device: torch.device) -> TrainConfig:
        return TrainConfig(steps=config.steps, lr=config.lr, ema_decay=config.ema_decay, seed=seed,
                           device=str(device), amp=config.amp, eval_every=config.eval_every,
                           log_every=max(1, config.steps // 40), progress=False)

    def method_options(self, task: ImageTask, config: ImageFinetuneConfig, seed: int) -> dict[str, Any]:
        return {"chunk_size": task.eval_chunk, **config.method_options(seed),
                "time_weight": reduction_weight(config.loss_reduction, task.shape)}

    def evaluator(self, task: ImageTask, config: ImageFinetuneConfig,
                  device: torch.device) -> Callable[[nn.Module, int], dict[str, float]]:
        heldout = task.target_heldout()

        def evaluate(model: nn.Module, step: int) -> dict[str, float]:
            g = generate(task, model, device=device, n=config.n_curve)
            return {"curve_sw": sliced_w2(g.samples, heldout, task),
                    "curve_loss": float(g.heldout_loss.mean())}

        return evaluate

    def collect(self, task: ImageTask, method: str, seed: int, config: ImageFinetuneConfig, run: MethodRun,
                device: torch.device) -> ImageRun:
        evals, col = run.evals, run.column
        final = generate(task, run.result.ema_model, device=device)
        return ImageRun(**record_fields(run, method, seed, config.steps),
                        eval_steps=col(evals, "step", np.int64), curve_sw=col(evals, "curve_sw"),
                        curve_loss=col(evals, "curve_loss"), final=final)


RUNNER = ImageRunner()


def finetune(task: ImageTask, method: str, seed: int, config: ImageFinetuneConfig, *,
             device: str | torch.device = "cpu") -> ImageRun:
    """Fine-tune (for "scratch": train from a random init seeded with ``seed``) on
    ``task.target_train()`` with ``method``; ``seed`` drives the data order, noise and caches.
    Cached on every parameter that can change the run."""
    return RUNNER.finetune(task, method, seed, config, device=device)


def run_methods(task: ImageTask, methods: Sequence[str], seeds: Sequence[int], config: ImageFinetuneConfig, *,
                device: str | torch.device = "cpu") -> dict[str, list[ImageRun]]:
    """``{method: [run for each seed]}`` (each run cached)."""
    return RUNNER.run_methods([(task, s) for s in seeds], methods, config, device=device)
