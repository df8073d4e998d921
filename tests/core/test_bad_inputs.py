"""Catalogue of bad inputs: each is rejected before any work starts, with a message that names the
parameter, the value given and what is allowed (the "clear errors" part of the reliability issue).

Every catalogue entry is (kind, trigger, expected exception type, and three regexes that must all be
found in the message: the parameter's name, the offending value, the allowed values or range).
Known gaps are kept visible as ``xfail(strict=True)`` entries whose reason states the current
behaviour and the message asked for; once a gap is fixed the entry XPASSes, the suite fails, and
the mark must be removed (turning it into an ordinary catalogue entry).

Command-line arguments (train_cli, run_notebooks, summary, benchmarks/run.py) have their own
catalogue, with a completeness check, in tests/core/test_reliability_inputs.py.

Separate tests check "before any work starts" where it matters: ``train`` with a bad schedule or a
mismatched checkpoint writes nothing and leaves the model and the objective untouched, and the
papermill runner refuses an unknown parameter without starting a kernel.
"""

from __future__ import annotations

import json
import re
import sys
import types
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch

from gftlib.theory.analytic import GaussianMixture
from gftlib.training.checkpoint import load_checkpoint
from gftlib.paths.couplings import ExactOTCoupling, SinkhornCoupling, make_coupling
from gftlib.data.datasets import image_patches, load_image_dataset, make_2d
from gftlib.experiments import run_notebooks as RN
from gftlib.experiments.methods import build_method
from gftlib.experiments.profiles import resolve_parameters
from gftlib.experiments.tasks.budget import FinetuneConfig
from gftlib.experiments.tasks.toy2d import Task2D, finetune
from gftlib.experiments.tasks.toy2d_eval import quality_vs_nfe
from gftlib.eval.features import load_inception_features
from gftlib.theory.girsanov import simulate_log_likelihood_ratios
from gftlib.paths.interpolants import Interpolant
from gftlib.losses import gft_loss
from gftlib.eval.metrics import frechet_distance, mmd_rbf, sliced_wasserstein, wasserstein2
from gftlib.models import MLPVelocity, UNetVelocity, build_model, unet_config
from gftlib.gft.batch_sampler import BatchSampler
from gftlib.gft.objective import FlowMatchingObjective
from gftlib.gft.coupling_cache import PretrainedCouplingCache
from gftlib.gft.drift_cache import PretrainedDriftCache
from gftlib.solvers.ode import sample_ode
from gftlib.solvers.sde import sample_sde
from gftlib.schedules import make_schedule
from gftlib.training.config import TrainConfig
from gftlib.training.loop import train
from gftlib.validation import resolve_device

from train_helpers import TinyMLP, ToyObjective, toy_data

torch.set_num_threads(1)

REPO = Path(__file__).resolve().parents[2]
HAS_CUDA = torch.cuda.is_available()
NAN, INF = float("nan"), float("inf")


# ----------------------------------------------------------------------------------------- helpers
def _gen() -> torch.Generator:
    return torch.Generator().manual_seed(0)


def _identity(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    return x


def _path():
    """A small valid PathSample (straight line, t = 1/2)."""
    x0, x1 = torch.zeros(4, 2), torch.ones(4, 2)
    return Interpolant().sample(x0, x1, t=0.5)


def _train_cfg(**kw: Any) -> TrainConfig:
    base = dict(steps=2, lr=1e-3, device="cpu", progress=False, log_every=1)
    base.update(kw)
    return TrainConfig(**base)


def _tiny(seed: int = 0) -> TinyMLP:
    torch.manual_seed(seed)
    return TinyMLP(hidden=8)


_TABLE = {p: {"n": 1} for p in ("smoke", "quick", "paper")}


def _notebook(path: Path, body: str = "open('ran.txt', 'w').write('x')",
              params: str = "seed = 0\nprofile = 'quick'\ndevice = 'auto'\nn = None") -> Path:
    """A minimal nbformat-4 notebook (written as JSON: importing nbformat costs seconds)."""
    def cell(source: str, tags: list[str] | None = None) -> dict[str, Any]:
        return {"cell_type": "code", "execution_count": None, "metadata": {"tags": tags} if tags else {},
                "outputs": [], "source": source}

    nb = {"cells": [cell(params, ["parameters"]), cell(body)], "nbformat": 4, "nbformat_minor": 4,
          "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}}}
    path.write_text(json.dumps(nb))
    return path


def _fake_papermill(calls: list[str]) -> types.ModuleType:
    """Stands in for papermill (whose import alone takes seconds): records what would have run."""
    module = types.ModuleType("papermill")

    class PapermillExecutionError(Exception):
        pass

    def execute_notebook(input_path: str, output_path: str, **kwargs: Any) -> None:
        calls.append(Path(input_path).name)

    module.PapermillExecutionError = PapermillExecutionError  # type: ignore[attr-defined]
    module.execute_notebook = execute_notebook  # type: ignore[attr-defined]
    return module


def _unknown_notebook_parameter(env: SimpleNamespace) -> None:
    env.monkeypatch.setitem(sys.modules, "papermill", _fake_papermill([]))
    RN.run_notebook(_notebook(env.tmp / "a.ipynb"), parameters={"sede": 1}, build_dir=env.tmp / "b")


def _resume_mismatch(env: SimpleNamespace) -> None:
    ckpt = env.tmp / "ckpt"
    data = toy_data(64)
    train(_tiny(), ToyObjective(data, 8), _train_cfg(lr=1e-3, checkpoint_dir=str(ckpt)))
    train(_tiny(), ToyObjective(data, 8), _train_cfg(lr=2e-3, checkpoint_dir=str(ckpt)))


def _beta_without_pretrained(env: SimpleNamespace) -> None:
    obj = FlowMatchingObjective(toy_data(64), batch_size=8)
    train(MLPVelocity(2, hidden=8, depth=1), obj, _train_cfg(), schedule=make_schedule("constant", 1.0, 2))


def _one_visible_gpu(env: SimpleNamespace) -> None:
    env.monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    env.monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    resolve_device("cuda:3")


def _cli_missing_pretrained(env: SimpleNamespace) -> None:
    from gftlib.experiments.train_cli import build_parser, check_args

    # what main() runs right after parsing (it turns the error into argparse's exit 2; the rest of the
    # command line is covered argument by argument in tests/core/test_reliability_inputs.py)
    args = build_parser().parse_args(["--task", "2d", "--method", "ft", "--steps", "2", "--n-data", "16",
                                      "--batch-size", "4", "--device", "cpu", "--dataset", "moons",
                                      "--pretrained", str(env.tmp / "missing_weights.pt")])
    check_args(args)


def _corrupt_checkpoint(env: SimpleNamespace) -> None:
    path = env.tmp / "ckpt_00000001.pt"
    path.write_bytes(b"this is not a torch file")
    load_checkpoint(path)


# ----------------------------------------------------------------------------------------- catalogue
@dataclass(frozen=True)
class Case:
    kind: str
    trigger: Callable[[SimpleNamespace], Any]
    exc: type[BaseException] | tuple[type[BaseException], ...]
    param: str      # regex: the parameter's name
    value: str      # regex: the value given
    allowed: str    # regex: the allowed values / range
    gap: str | None = None       # xfail(strict) reason: current behaviour -> message asked for
    needs_no_cuda: bool = False  # the input is only bad on a machine without a GPU


def _c(kind: str, trigger: Callable[[SimpleNamespace], Any], exc: Any, param: str, value: str,
       allowed: str, **kw: Any) -> Case:
    return Case(kind, trigger, exc, param, value, allowed, **kw)


CASES: list[Case] = [
    # --- temperatures and cooling schedules
    _c("beta negative", lambda e: gft_loss(_identity, _path(), -1.0, None),
       ValueError, r"\bbeta\b", r"-1\.0", r">= 0"),
    _c("beta NaN", lambda e: gft_loss(_identity, _path(), NAN, None),
       ValueError, r"\bbeta\b", r"\bnan\b", r"finite number >= 0"),
    _c("beta0 negative", lambda e: make_schedule("cosine", -1.0, 10),
       ValueError, r"\bbeta0\b", r"-1\.0", r">= 0"),
    _c("beta0 NaN (method)",
       lambda e: build_method("l2-reg", target_data=toy_data(16), pretrained_model=_identity, batch_size=4,
                              steps=2, beta0=NAN, device="cpu"),
       ValueError, r"\bbeta0\b", r"\bnan\b", r"finite number >= 0"),
    _c("increasing custom schedule", lambda e: make_schedule("custom", None, 10, values=[1.0, 2.0, 0.0]),
       ValueError, r"\bvalues\b", r"values\[1\]=2", r"non-increasing"),
    _c("unknown schedule kind", lambda e: make_schedule("cosin", 1.0, 10),
       ValueError, r"\bkind\b", r"'cosin'", r"'cosine'.*'exponential'.*'step'"),
    _c("schedule total_steps = 0", lambda e: make_schedule("linear", 1.0, 0),
       ValueError, r"\btotal_steps\b", r"\b0\b", r">= 1"),
    _c("exponential rate <= 0", lambda e: make_schedule("exponential", 1.0, 10, rate=0.0),
       ValueError, r"\brate\b", r"0\.0", r"> 0"),
    _c("step schedule with one stage", lambda e: make_schedule("step", 1.0, 10, n_stages=1),
       ValueError, r"\bn_stages\b", r"\b1\b", r">= 2"),
    _c("beta_final above beta0", lambda e: make_schedule("linear", 1.0, 10, beta_final=2.0),
       ValueError, r"\bbeta_final\b", r"2\.0", r">= 0 and <= 1"),
    _c("schedule option of another kind", lambda e: make_schedule("cosine", 1.0, 10, rate=2.0),
       ValueError, r"\brate\b", r"2\.0", r"exponential"),
    # --- couplings
    _c("unknown coupling", lambda e: make_coupling("emd"),
       ValueError, r"\bcoupling\b", r"'emd'", r"'independent', 'ot', 'sinkhorn'"),
    _c("unknown target coupling (GFT method)",
       lambda e: build_method("l2-reg", target_data=toy_data(16), pretrained_model=_identity, batch_size=4,
                              steps=2, target_coupling="emd", device="cpu"),
       ValueError, r"target_coupling|\bcoupling\b", r"'emd'", r"'independent', 'ot', 'sinkhorn'"),
    _c("Sinkhorn reg <= 0", lambda e: SinkhornCoupling(reg=0.0),
       ValueError, r"\breg\b", r"0\.0", r"> 0"),
    _c("batch too small for OT", lambda e: ExactOTCoupling()(torch.zeros(1, 2), torch.zeros(1, 2)),
       ValueError, r"batch size", r"n=1", r">= 2"),
    _c("batch too small for OT (objective)",
       lambda e: FlowMatchingObjective(toy_data(16), batch_size=1, coupling="ot"),
       ValueError, r"\bbatch_size\b", r"\b1\b", r">= 2"),
    _c("batch too small for OT (method)",
       lambda e: build_method("ft-ot", target_data=toy_data(16), pretrained_model=_identity, batch_size=1,
                              steps=2, device="cpu"),
       ValueError, r"\bbatch_size\b", r"\b1\b", r">= 2"),
    _c("x0 and x1 of different shapes", lambda e: Interpolant().sample(torch.zeros(4, 2), torch.zeros(4, 3),
                                                                      generator=_gen()),
       ValueError, r"x0 and x1", r"\(4, 2\) and \(4, 3\)", r"same shape"),
    _c("x0 and x1 of different batch sizes",
       lambda e: ExactOTCoupling()(torch.zeros(4, 2), torch.zeros(5, 2)),
       ValueError, r"x0 and x1", r"4 and 5", r"same batch size"),
    # --- data with NaN / Inf
    _c("NaN in target data", lambda e: FlowMatchingObjective(torch.tensor([[0.0, NAN], [1.0, 1.0]]),
                                                             batch_size=2),
       ValueError, r"\btarget_data\b", r"1 NaN/Inf", r"only finite values"),
    _c("Inf in sampler noise", lambda e: sample_ode(_identity, torch.tensor([[0.0, INF], [1.0, 1.0]])),
       ValueError, r"\bx0\b", r"1 NaN/Inf", r"only finite values"),
    _c("NaN in metric samples", lambda e: wasserstein2(torch.tensor([[NAN, 0.0]]), torch.zeros(3, 2)),
       ValueError, r"\bx\b", r"1 NaN/Inf", r"only finite values"),
    # --- interpolants and time
    _c("sigma < 0", lambda e: Interpolant(sigma=-0.1),
       ValueError, r"\bsigma\b", r"-0\.1", r">= 0"),
    _c("t_eps >= 0.5", lambda e: Interpolant(t_eps=0.5),
       ValueError, r"\bt_eps\b", r"0\.5", r"< 0\.5"),
    _c("t > 1 (float)", lambda e: Interpolant().mean(torch.zeros(4, 2), torch.ones(4, 2), 1.5),
       ValueError, r"\bt\b", r"1\.5", r">= 0 and <= 1"),
    _c("t outside [0, 1] (tensor)",
       lambda e: Interpolant().mean(torch.zeros(4, 2), torch.ones(4, 2), torch.tensor([0.1, 0.2, 0.3, 1.2])),
       ValueError, r"\bt\b", r"1\.2", r"\[0, 1\]"),
    _c("t at the end of a Brownian bridge",
       lambda e: Interpolant(sigma=0.5).sample(torch.zeros(4, 2), torch.ones(4, 2), t=1.0, generator=_gen()),
       ValueError, r"\bt\b", r"\[1, 1\]", r"strictly inside \(0, 1\)"),
    _c("SDE diffusion > 0 on a straight line",
       lambda e: Interpolant().sample(torch.zeros(4, 2), torch.ones(4, 2), t=0.5, diffusion=0.5),
       ValueError, r"\bdiffusion\b", r"0\.5", r"sigma > 0"),
    _c("SDE diffusion > 0 on a straight line (objective)",
       lambda e: FlowMatchingObjective(toy_data(16), batch_size=4, diffusion=0.5),
       ValueError, r"\bdiffusion\b", r"0\.5", r"sigma > 0"),
    _c("Girsanov diffusion = 0",
       lambda e: simulate_log_likelihood_ratios(_identity, [_identity], torch.zeros(4, 1), diffusion=0.0,
                                                steps=4, generator=_gen()),
       ValueError, r"\bdiffusion\b", r"0\.0", r"> 0"),
    # --- samplers: step counts / NFE
    _c("ODE steps = 0", lambda e: sample_ode(_identity, torch.zeros(4, 2), steps=0),
       ValueError, r"\bsteps\b", r"\b0\b", r">= 1"),
    _c("SDE steps < 0", lambda e: sample_sde(_identity, torch.zeros(4, 2), diffusion=0.5, steps=-3),
       ValueError, r"\bsteps\b", r"-3", r">= 1"),
    _c("NFE: Euler step count 0",
       lambda e: quality_vs_nfe(Task2D(), build_model("mlp", dim=2, hidden=4, depth=1), euler_steps=[0, 4]),
       ValueError, r"\beuler_steps", r"\b0\b", r">= 1"),
    _c("pretrained solver_steps = 0",
       lambda e: PretrainedCouplingCache(_identity, (2,), size=4, solver_steps=0),
       ValueError, r"\bsolver_steps\b", r"\b0\b", r">= 1"),
    _c("unknown ODE method", lambda e: sample_ode(_identity, torch.zeros(4, 2), method="heun"),
       ValueError, r"\bmethod\b", r"'heun'", r"'euler', 'midpoint', 'rk4', 'dopri5'"),
    _c("t0 >= t1", lambda e: sample_ode(_identity, torch.zeros(4, 2), t0=1.0, t1=0.5),
       ValueError, r"\bt0\b", r"t0=1\.0, t1=0\.5", r"< t1"),
    _c("negative SDE diffusion", lambda e: sample_sde(_identity, torch.zeros(4, 2), diffusion=-0.5),
       ValueError, r"\bdiffusion\b", r"-0\.5", r">= 0"),
    _c("drift-cache time grid not increasing",
       lambda e: PretrainedDriftCache(_identity, (2,), n_trajectories=4, time_grid=[0.5, 0.2]),
       ValueError, r"\btime_grid\b", r"\[0\.5, 0\.2\]", r"strictly increasing"),
    # --- training configuration
    _c("ema_decay >= 1", lambda e: TrainConfig(steps=1, ema_decay=1.0),
       ValueError, r"\bema_decay\b", r"1\.0", r">= 0 and < 1"),
    _c("training steps = 0", lambda e: TrainConfig(steps=0),
       ValueError, r"\bsteps\b", r"\b0\b", r">= 1"),
    _c("learning rate NaN", lambda e: TrainConfig(steps=1, lr=NAN),
       ValueError, r"\blr\b", r"\bnan\b", r"finite number > 0"),
    _c("unknown amp mode", lambda e: TrainConfig(steps=1, amp="fp16"),
       ValueError, r"\bamp\b", r"'fp16'", r"'none', 'bf16'"),
    _c("checkpoint_every without checkpoint_dir", lambda e: TrainConfig(steps=4, checkpoint_every=2),
       ValueError, r"\bcheckpoint_every\b", r"=2\b", r"needs checkpoint_dir"),
    _c("schedule length != steps",
       lambda e: train(_tiny(), ToyObjective(toy_data(64), 8), _train_cfg(steps=3),
                       schedule=make_schedule("cosine", 1.0, 5)),
       ValueError, r"\btotal_steps\b", r"total_steps=5", r"equal config\.steps"),
    _c("checkpoint with a mismatched config", _resume_mismatch,
       ValueError, r"\blr\b", r"now 0\.002", r"checkpoint 0\.001"),
    _c("beta > 0 without a pretrained term", _beta_without_pretrained,
       ValueError, r"\bbeta\b", r"beta=1\b", r"needs a pretrained term"),
    _c("batch_size not divisible by world_size", lambda e: BatchSampler(10, 8).set_rank(0, 3),
       ValueError, r"\bbatch_size\b", r"world_size=3", r"divisible"),
    _c("rank >= world_size", lambda e: BatchSampler(10, 8).set_rank(2, 2),
       ValueError, r"\brank\b", r"rank=2", r"\[0, 2\)"),
    _c("not a gftlib checkpoint",
       lambda e: (torch.save({"a": 1}, e.tmp / "x.pt"), load_checkpoint(e.tmp / "x.pt")),
       ValueError, r"checkpoint", r"x\.pt", r"format_version"),
    _c("corrupt checkpoint file", _corrupt_checkpoint,
       ValueError, r"checkpoint", r"ckpt_00000001\.pt", r"gftlib|torch"),
    # --- methods, experiments, profiles
    _c("unknown method name", lambda e: build_method("gft", target_data=toy_data(16), pretrained_model=None,
                                                     batch_size=4, steps=2, device="cpu"),
       ValueError, r"\bname\b", r"'gft'", r"'scratch'.*'gft-drift'.*'reflow'"),
    _c("unknown method name (finetune)", lambda e: finetune(Task2D(), "gft", 0, FinetuneConfig()),
       ValueError, r"\bmethod\b", r"'gft'", r"'scratch'.*'gft-coupling'"),
    _c("fine-tuning without pretrained model",
       lambda e: build_method("ft", target_data=toy_data(16), pretrained_model=None, batch_size=4, steps=2,
                              device="cpu"),
       ValueError, r"\bpretrained_model\b", r"got None", r"only 'scratch'"),
    _c("unknown schedule option (method)",
       lambda e: build_method("gft-drift", target_data=toy_data(16), pretrained_model=_identity, batch_size=4,
                              steps=2, schedule_options={"rat": 5.0}, device="cpu"),
       (TypeError, ValueError), r"\bschedule_options\b", r"'rat'", r"rate.*n_stages|n_stages.*rate"),
    _c("unknown schedule option (FinetuneConfig)",
       lambda e: FinetuneConfig(schedule_kind="exponential", schedule_options=(("rat", 5.0),)),
       (TypeError, ValueError), r"\bschedule_options\b", r"'rat'", r"rate.*n_stages|n_stages.*rate"),
    _c("schedule options not pairs (FinetuneConfig)",
       lambda e: FinetuneConfig(schedule_kind="exponential", schedule_options=(5.0,)),
       TypeError, r"\bschedule_options\b", r"\(5\.0,\)", r"pairs or a dict"),
    _c("schedule kind typo ignored by 'ft'",
       lambda e: build_method("ft", target_data=toy_data(16), pretrained_model=_identity, batch_size=4,
                              steps=2, schedule_kind="cosin", device="cpu"),
       ValueError, r"\bschedule_kind\b", r"'cosin'", r"'cosine'"),
    _c("target coupling typo ignored by 'ft'",
       lambda e: build_method("ft", target_data=toy_data(16), pretrained_model=_identity, batch_size=4,
                              steps=2, target_coupling="emd", device="cpu"),
       ValueError, r"target_coupling|\bcoupling\b", r"'emd'", r"'independent', 'ot', 'sinkhorn'"),
    _c("profile name typo", lambda e: resolve_parameters(_TABLE, profile="quik", seed=0, device="cpu"),
       ValueError, r"\bprofile\b", r"'quik'", r"'smoke', 'quick', 'paper'"),
    _c("knob without a profile default", lambda e: resolve_parameters(_TABLE, profile="smoke", seed=0,
                                                                       device="cpu", m=3),
       ValueError, r"parameters", r"\['m'\]", r"known: \['n'\]"),
    _c("notebook device typo", lambda e: resolve_parameters(_TABLE, profile="smoke", seed=0, device="gpu"),
       ValueError, r"\bdevice\b", r"'gpu'", r"'auto', 'cpu', 'cuda'"),
    _c("n_target larger than the pool", lambda e: Task2D(n_target=5000, n_target_pool=4096),
       ValueError, r"\bn_target\b", r"5000", r"\[2, n_target_pool=4096\]"),
    _c("papermill: unknown parameter", _unknown_notebook_parameter,
       ValueError, r"unknown parameter", r"'sede'", r"declares \[.*'seed'"),
    # --- data
    _c("unknown 2-D distribution", lambda e: make_2d("moon", 4),
       ValueError, r"\bname\b", r"'moon'", r"'moons'.*'checkerboard'"),
    _c("unknown image source", lambda e: image_patches("natura", n=2),
       ValueError, r"\bsource\b", r"'natura'", r"'natural', 'ihc', 'hubble', 'retina'"),
    _c("patch size too large", lambda e: image_patches("natural", size=200, n=2),
       ValueError, r"size \* downsample", r"size=200", r"<= 113"),
    _c("unknown patch split", lambda e: image_patches("natural", size=8, n=2, split="test"),
       ValueError, r"\bsplit\b", r"'test'", r"'train', 'heldout'"),
    _c("missing CIFAR-10 root", lambda e: load_image_dataset("cifar10", e.tmp / "no_data"),
       FileNotFoundError, r"\broot\b", r"no_data", r"cifar-10-python\.tar\.gz"),
    _c("missing WILDS root", lambda e: load_image_dataset("wilds-camelyon17", e.tmp / "no_data"),
       FileNotFoundError, r"\broot\b", r"no_data", r"camelyon17_v<version>/metadata\.csv"),
    _c("unknown image data set", lambda e: load_image_dataset("cifar", e.tmp),
       ValueError, r"\bname\b", r"'cifar'", r"'cifar10' or 'wilds-<dataset>'"),
    _c("missing Inception weights", lambda e: load_inception_features(e.tmp / "weights" / "inception.pt"),
       FileNotFoundError, r"Inception", r"weights/inception\.pt", r"https://\S+inception-2015-12-05\.pt"),
    # --- models
    _c("image size the UNet cannot take", lambda e: UNetVelocity(image_size=30),
       ValueError, r"image.size", r"\b30\b", r"multiple of 8"),
    _c("image of the wrong size for the UNet",
       lambda e: build_model("unet", config="tiny")(torch.zeros(2, 3, 8, 8), torch.zeros(2)),
       ValueError, r"image_size", r"8x8", r"16x16"),
    _c("attention at a resolution the UNet never visits",
       lambda e: UNetVelocity(image_size=16, channel_mult=(1, 2), attention_resolutions=(4,)),
       ValueError, r"\battention_resolutions\b", r"\b4\b", r"\(16, 8\)"),
    _c("UNet preset typo", lambda e: unet_config("tinny"),
       ValueError, r"UNet config", r"'tinny'", r"'tiny', 'small', 'cifar10'"),
    _c("unknown model argument", lambda e: build_model("mlp", dim=2, widht=3),
       TypeError, r"model argument", r"'widht'", r"'hidden'"),
    _c("dropout >= 1", lambda e: UNetVelocity(image_size=16, channel_mult=(1, 2), dropout=1.0),
       ValueError, r"\bdropout\b", r"1\.0", r"< 1"),
    _c("unknown activation", lambda e: MLPVelocity(2, activation="swish"),
       ValueError, r"\bactivation\b", r"'swish'", r"'silu'.*'relu'"),
    # --- metrics
    _c("W2 between different dimensions", lambda e: wasserstein2(torch.zeros(5, 2), torch.zeros(5, 3)),
       ValueError, r"x and y", r"2 and 3", r"same number of features"),
    _c("MMD with one sample", lambda e: mmd_rbf(torch.zeros(1, 2), torch.zeros(4, 2)),
       ValueError, r"\bx\b", r"got 1\b", r"at least 2"),
    _c("unknown Frechet method",
       lambda e: frechet_distance(torch.zeros(4, 2), torch.zeros(4, 2), method="sqrt"),
       ValueError, r"\bmethod\b", r"'sqrt'", r"'sqrtm', 'eigh'"),
    _c("sliced W2 with a non-generator", lambda e: sliced_wasserstein(torch.zeros(4, 2), torch.zeros(4, 2),
                                                                       generator=3),
       TypeError, r"\bgenerator\b", r"\b3\b|int", r"torch\.Generator"),
    # --- analytic mixtures
    _c("mixture weights do not sum to one",
       lambda e: GaussianMixture.from_dict({"weights": [0.5, 0.6], "means": [0.0, 1.0], "stds": [1.0, 1.0]}),
       ValueError, r"\bweights\b", r"sum 1\.1", r"sum to 1"),
    _c("mixture std not positive",
       lambda e: GaussianMixture.from_dict({"weights": [0.5, 0.5], "means": [0.0, 1.0], "stds": [1.0, 0.0]}),
       ValueError, r"\bstds\b", r"\[1\.0, 0\.0\]", r"> 0"),
    _c("mixture spec key typo",
       lambda e: GaussianMixture.from_dict({"weight": [1.0], "means": [0.0], "stds": [1.0]}),
       ValueError, r"\bspec\b", r"unknown \['weight'\]", r"'weights', 'means', 'stds'"),
    _c("mixture means of the wrong shape",
       lambda e: GaussianMixture(weights=[0.5, 0.5], means=[[0.0, 1.0, 2.0]], stds=[1.0, 1.0]),
       ValueError, r"\bmeans\b", r"\(1, 3\)", r"\(K, d\).*K = 2"),
    _c("projection direction not a unit vector",
       lambda e: GaussianMixture([1.0], [[0.0, 0.0]], [1.0]).cdf_projected(torch.zeros(3), [1.0, 1.0]),
       ValueError, r"\bdirection\b", r"norm 1\.41", r"unit vector"),
    # --- devices
    _c("device typo", lambda e: resolve_device("gpu"),
       ValueError, r"\bdevice\b", r"'gpu'", r"'auto', 'cpu', 'cuda' or 'cuda:N'"),
    _c("device='cuda' without a GPU", lambda e: resolve_device("cuda"),
       ValueError, r"\bdevice\b", r"'cuda'", r"'cpu' or 'auto'", needs_no_cuda=True),
    _c("TrainConfig device='cuda' without a GPU", lambda e: TrainConfig(steps=1, device="cuda"),
       ValueError, r"\bdevice\b", r"'cuda'", r"'cpu' or 'auto'", needs_no_cuda=True),
    _c("method device='cuda:0' without a GPU",
       lambda e: build_method("ft", target_data=toy_data(16), pretrained_model=_identity, batch_size=4,
                              steps=2, device="cuda:0"),
       ValueError, r"\bdevice\b", r"'cuda:0'", r"'cpu' or 'auto'", needs_no_cuda=True),
    _c("device index beyond the visible GPUs", _one_visible_gpu,
       ValueError, r"\bdevice\b", r"'cuda:3'", r"\b1\b.*(GPU|device)"),
    # --- command line
    _c("train_cli: missing --pretrained file", _cli_missing_pretrained,
       ValueError, r"--pretrained", r"missing_weights\.pt", r"--out|gftlib-weights-v1"),
]


def _param(case: Case) -> Any:
    marks = []
    if case.gap is not None:
        marks.append(pytest.mark.xfail(strict=True, reason=case.gap))
    if case.needs_no_cuda:
        marks.append(pytest.mark.skipif(HAS_CUDA, reason="the input is valid on a machine with a GPU"))
    return pytest.param(case, id=case.kind, marks=marks)


def test_catalogue_is_large_and_distinct() -> None:
    kinds = [c.kind for c in CASES]
    assert len(set(kinds)) == len(kinds)
    assert sum(c.gap is None for c in CASES) >= 20


@pytest.mark.parametrize("case", [_param(c) for c in CASES])
def test_bad_input_is_rejected_with_a_clear_message(case: Case, tmp_path: Path, monkeypatch) -> None:
    env = SimpleNamespace(tmp=tmp_path, monkeypatch=monkeypatch)
    with pytest.raises(case.exc) as info:
        case.trigger(env)
    message = str(info.value)
    for what, pattern in (("parameter", case.param), ("value", case.value), ("allowed", case.allowed)):
        assert re.search(pattern, message), f"message lacks the {what} ({pattern!r}): {message!r}"


# ----------------------------------------------------------------------------------------- before any work
def _snapshot(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _same(model: torch.nn.Module, snap: dict[str, torch.Tensor]) -> bool:
    now = model.state_dict()
    return now.keys() == snap.keys() and all(torch.equal(now[k], snap[k]) for k in snap)


def _files(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


def test_train_with_a_bad_schedule_writes_nothing_and_leaves_model_and_objective_untouched(tmp_path) -> None:
    model, objective = _tiny(), ToyObjective(toy_data(64), 8)
    snap = _snapshot(model)
    ckpt = tmp_path / "ckpt"
    cfg = _train_cfg(steps=3, checkpoint_dir=str(ckpt), checkpoint_every=1)
    with pytest.raises(ValueError, match=r"schedule\.total_steps must equal config\.steps"):
        train(model, objective, cfg, schedule=make_schedule("cosine", 1.0, 5))
    assert not ckpt.exists()
    assert objective.calls == 0
    assert _same(model, snap)


def test_train_refuses_a_mismatched_checkpoint_without_touching_it(tmp_path) -> None:
    ckpt = tmp_path / "ckpt"
    data = toy_data(64)
    train(_tiny(), ToyObjective(data, 8), _train_cfg(lr=1e-3, checkpoint_dir=str(ckpt)))
    before = _files(ckpt)
    assert before, "the first run must have written a checkpoint"
    model, objective = _tiny(seed=1), ToyObjective(data, 8)
    snap = _snapshot(model)
    with pytest.raises(ValueError, match=r"cannot resume from .*lr: checkpoint 0\.001 vs now 0\.002"):
        train(model, objective, _train_cfg(lr=2e-3, checkpoint_dir=str(ckpt)))
    assert _files(ckpt) == before
    assert objective.calls == 0
    assert _same(model, snap)


def test_train_at_beta_above_zero_without_pretrained_term_changes_nothing(tmp_path) -> None:
    model = MLPVelocity(2, hidden=8, depth=1)
    snap = _snapshot(model)
    objective = FlowMatchingObjective(toy_data(64), batch_size=8)
    sampler_state = objective.sampler.state_dict()
    ckpt = tmp_path / "ckpt"
    with pytest.raises(ValueError, match=r"beta=1 > 0 needs a pretrained term"):
        train(model, objective, _train_cfg(checkpoint_dir=str(ckpt)),
              schedule=make_schedule("constant", 1.0, 2))
    assert _same(model, snap)
    assert not ckpt.exists() or [p.name for p in ckpt.iterdir()] == [".gftlib.lock"]  # no checkpoint
    # the data order did not advance: the beta check comes before any draw
    assert objective.sampler.state_dict()["pos"] == sampler_state["pos"]
    assert torch.equal(objective.sampler.state_dict()["perm"], sampler_state["perm"])


@pytest.fixture
def no_kernel(monkeypatch) -> list[str]:
    """Replace papermill by a stub: records the notebooks it would have executed (no kernel starts)."""
    calls: list[str] = []
    monkeypatch.setitem(sys.modules, "papermill", _fake_papermill(calls))
    return calls


def test_unknown_notebook_parameter_fails_before_the_kernel_starts(tmp_path, no_kernel) -> None:
    nb = _notebook(tmp_path / "a.ipynb")
    with pytest.raises(ValueError, match=r"a\.ipynb: unknown parameter\(s\) \['sede'\]; the parameters cell "
                                         r"declares \['device', 'n', 'profile', 'seed'\]"):
        RN.run_notebook(nb, parameters={"sede": 1, "seed": 2}, build_dir=tmp_path / "build")
    assert no_kernel == []
    assert not (tmp_path / "build").exists()


def test_cli_rejects_a_parameter_typo_for_a_real_notebook(tmp_path, no_kernel, capsys) -> None:
    notebooks = sorted((REPO / "notebooks").glob("*.ipynb"))
    if not notebooks:
        pytest.skip("no notebooks yet")
    nb = notebooks[0]
    declared = RN.declared_parameters(nb)
    knob = sorted(set(declared) - {"seed", "profile", "device"} or declared)[0]
    typo = knob[:-1] if knob[:-1] not in declared else knob + "_"  # e.g. n_paths -> n_path
    rc = RN.main([str(nb), "--profile", "smoke", "--device", "cpu", "--build", str(tmp_path / "build"),
                  "-p", typo, "100"])
    assert rc == 1
    err = capsys.readouterr().err
    assert f"unknown parameter(s) [{typo!r}]" in err and repr(knob) in err
    assert no_kernel == []


def test_unknown_notebook_parameter_is_checked_before_papermill_is_imported(tmp_path, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "papermill", None)  # any `import papermill` now raises ImportError
    with pytest.raises(ValueError, match=r"unknown parameter\(s\) \['sede'\]"):
        RN.run_notebook(_notebook(tmp_path / "a.ipynb"), parameters={"sede": 1}, build_dir=tmp_path / "b")


def test_cli_rejects_a_device_typo_before_any_kernel(tmp_path, no_kernel, capsys) -> None:
    nb = _notebook(tmp_path / "a.ipynb")
    with pytest.raises(SystemExit):
        RN.main([str(nb), "--device", "gpu", "--build", str(tmp_path / "build")])
    assert "'gpu'" in capsys.readouterr().err
    assert no_kernel == []


def test_cli_checks_every_notebook_before_running_the_first(tmp_path, no_kernel, capsys) -> None:
    first = _notebook(tmp_path / "first.ipynb")
    second = _notebook(tmp_path / "second.ipynb", params="seed = 0\nprofile = 'quick'\ndevice = 'auto'")
    rc = RN.main([str(first), str(second), "--build", str(tmp_path / "build"), "-p", "n", "3"])
    assert rc == 1
    assert "second.ipynb: unknown parameter(s) ['n']" in capsys.readouterr().err
    assert no_kernel == []


def test_cli_rejects_a_missing_notebook_before_running_any(tmp_path, no_kernel, capsys) -> None:
    first = _notebook(tmp_path / "first.ipynb")
    rc = RN.main([str(first), str(tmp_path / "missing.ipynb"), "--build", str(tmp_path / "build")])
    assert rc == 1
    assert "missing.ipynb" in capsys.readouterr().err
    assert no_kernel == []
