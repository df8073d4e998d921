"""The image domain-shift task of E2 (gftlib.experiments.tasks.images).

The real-data path (CIFAR-10 source, WILDS target, Inception FID) runs on small fake files built in
tmp_path (image_fakes), with tiny sizes.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from gftlib.eval.features import INCEPTION_URL
from gftlib.eval.metrics import frechet_distance
from gftlib.experiments.methods import METHODS
from gftlib.experiments.profiles import resolve_parameters
from gftlib.experiments.tasks import images as TI
from gftlib.experiments.tasks import images_data as TD
from gftlib.experiments.tasks import images_eval as TE
from image_fakes import TINY, fake_camelyon, fake_cifar, smoke_params, tiny_config


def test_profiles_resolve_and_paper_model_constructs() -> None:
    smoke = TI.resolve_setup(smoke_params())
    assert smoke.task.image_size == 8 and smoke.task.downsample == 8 and smoke.methods == METHODS
    assert smoke.seeds == (0,) and smoke.inception is None and smoke.config.solver_steps == smoke.task.nfe
    quick = TI.resolve_setup(resolve_parameters(TI.PROFILE_TABLE, profile="quick", seed=3, device="cpu"))
    assert quick.task.image_size == 16 and quick.task.downsample == 4 and quick.seeds[0] == 3
    paper = TI.resolve_setup(resolve_parameters(TI.PROFILE_TABLE, profile="paper", seed=0, device="cpu",
                                                pretrained_checkpoint="pretrain"))
    assert paper.n_parameters == 35_746_307  # torchcfm's OT-CFM CIFAR-10 UNet, torchcfm's own class
    assert paper.task.model_kind == "torchcfm" and paper.config.loss_reduction == "sum"  # pretrained here
    assert paper.task.image_size == 32 and paper.task.image_size * paper.task.downsample <= 113
    assert paper.task.amp == "none"  # bf16 only on a GPU
    assert len(paper.seeds) == 3 and paper.config.steps == 20_000


@pytest.mark.parametrize("over, err, match", [
    ({"dataset": "imagenet"}, ValueError, "dataset must be 'skimage', 'cifar10' or 'wilds-<name>'"),
    ({"data_root": "/somewhere"}, ValueError, "data_root is only used with dataset"),
    ({"dataset": "wilds-camelyon17"}, ValueError, "needs data_root"),
    ({"methods": ["ft", "gft"]}, ValueError, "methods\\[\\] must be one of"),
    ({"methods": []}, ValueError, "methods must name at least one"),
    ({"methods": ["ft", "ft"]}, ValueError, "must not repeat"),
    ({"methods": "ft"}, TypeError, "methods must be a list"),
    ({"batch_size": 65}, ValueError, "batch_size must be <= n_target=64"),
    ({"n_seeds": 0}, ValueError, "n_seeds must be an integer >= 1"),
    ({"nfe": 0}, ValueError, "nfe must be an integer >= 1"),
    ({"steps": -1}, ValueError, "steps must be an integer >= 1"),
    ({"beta0": -1.0}, ValueError, "beta0 must be a finite number >= 0"),
    ({"schedule_kind": "sigmoid"}, ValueError, "schedule_kind must be one of"),
    ({"n_target": 1}, ValueError, "n_target must be an integer >= 2"),
    ({"image_size": 2}, ValueError, "image_size must be an integer >= 4"),
    ({"image_size": 128, "model_config": {"config": "tiny", "attention_resolutions": [64]}}, ValueError,
     "size \\* downsample must be <= 113"),
])


def test_bad_parameters_get_the_library_message(over, err, match) -> None:
    with pytest.raises(err, match=match):
        TI.resolve_setup(smoke_params(**over))


def test_bad_device_is_refused() -> None:
    with pytest.raises(ValueError, match="device must be one of"):
        resolve_parameters(TI.PROFILE_TABLE, profile="smoke", seed=0, device="tpu")


def test_missing_paths_raise_file_not_found_naming_them(tmp_path: Path) -> None:
    missing = tmp_path / "no_wilds"
    with pytest.raises(FileNotFoundError, match=re.escape(str(missing))):
        TI.resolve_setup(smoke_params(dataset="wilds-camelyon17", data_root=str(missing)))
    no_cifar = tmp_path / "no_cifar"
    with pytest.raises(FileNotFoundError, match=re.escape(str(no_cifar))):
        TI.resolve_setup(smoke_params(pretrain_root=str(no_cifar)))
    no_weights = tmp_path / "inception.pt"
    with pytest.raises(FileNotFoundError, match=re.escape(str(no_weights))) as info:
        TI.resolve_setup(smoke_params(inception_weights=str(no_weights)))
    assert INCEPTION_URL in str(info.value)
    with pytest.raises(ValueError, match="no domain shift"):
        TI.resolve_setup(smoke_params(dataset="cifar10", data_root=str(tmp_path), pretrain_root=str(tmp_path)))
    with pytest.raises(TypeError, match="inception_weights must be None or a local path"):
        TI.resolve_setup(smoke_params(inception_weights=3))


def test_too_small_local_set_is_refused(tmp_path: Path) -> None:
    fake_cifar(tmp_path, n_per_batch=4)  # 20 training images < 512 pretraining images of smoke
    with pytest.raises(ValueError, match="n must be <= 20"):
        TI.resolve_setup(smoke_params(pretrain_root=str(tmp_path)))


def test_finetune_config_key_drops_unused_fields() -> None:
    cfg = tiny_config()
    assert "time_grid" in cfg.key_for("gft-drift") and "solver_steps" in cfg.key_for("gft-drift")
    assert "time_grid" not in cfg.key_for("gft-coupling") and "solver_steps" in cfg.key_for("reflow")
    ft = cfg.key_for("ft")
    assert not {"time_grid", "solver_steps", "beta0", "cache_size"} & set(ft)
    assert cfg.dopri_steps() == ()
    with pytest.raises(ValueError, match="amp must be one of"):
        tiny_config(amp="fp8")
    with pytest.raises(ValueError, match="n_curve must be an integer >= 2"):
        tiny_config(n_curve=1)


def test_generate_with_an_untrained_unet_is_the_identity() -> None:
    """A zero-initialised UNet outputs 0: Euler leaves the noise unchanged, path length 0,
    straightness 1, and the held-out CFM loss is |x1 - x0|^2 exactly."""
    task = TD.ImageTask(**TINY)
    g = TI.generate(task, task.build_model(seed=0))
    torch.testing.assert_close(g.samples, task.eval_noise())
    assert np.all(g.path_length == 0) and np.all(g.straightness == 1)
    x0, x1, _ = task.loss_batch()
    np.testing.assert_allclose(g.heldout_loss, ((x1 - x0) ** 2).flatten(1).sum(1).double().numpy(), rtol=1e-6)


def test_generate_path_length_matches_a_constant_field() -> None:
    """For b(x, t) = c, the Euler path length is |c| and the samples are x0 + c, in any chunking."""
    task = TD.ImageTask(**{**TINY, "eval_chunk": 4})
    c = torch.full((3, 8, 8), 0.25)

    class Const(nn.Module):
        def forward(self, x, t):
            return c.expand_as(x)

    g = TI.generate(task, Const())
    torch.testing.assert_close(g.samples, task.eval_noise() + c)
    np.testing.assert_allclose(g.path_length, float(c.norm()), rtol=1e-5)
    assert g.mean_straightness == pytest.approx(1.0, abs=1e-6)


def test_real_data_path_end_to_end_with_fake_files(tmp_path: Path, inception_file: Path) -> None:
    """CIFAR-10 pretraining -> WILDS Camelyon17 fine-tuning with FID, tiny sizes, through the task
    functions the notebook calls."""
    cifar, wilds = fake_cifar(tmp_path / "cifar"), tmp_path / "wilds"
    task = TD.ImageTask(**{**TINY, "dataset": "wilds-camelyon17", "data_root": str(wilds),
                           "pretrain_root": str(cifar), "n_source": 40})
    fake_camelyon(wilds, task.n_pool)
    params = smoke_params(dataset="wilds-camelyon17", data_root=str(wilds), pretrain_root=str(cifar),
                          inception_weights=str(inception_file))
    with pytest.raises(ValueError, match="n must be <= 40"):  # the smoke profile needs 512 source images
        TI.resolve_setup(params)
    from gftlib.eval.features import load_inception_features
    inception = load_inception_features(inception_file)
    assert task.source_name == "cifar10" and task.target_name == "wilds-camelyon17"
    assert task.source_train().shape == (40, 3, 8, 8) and task.source_reference().shape == (6, 3, 8, 8)
    config = tiny_config()
    pre = TI.generate_pretrained(task)
    ref = TE.reference_metrics(task, pre, inception=inception)
    assert ref.null_values("fid").shape == (2,) and ref.pretrained.fid is not None
    runs = TI.run_methods(task, ("ft", "gft-coupling"), (0, 1), config)
    for m, rs in runs.items():
        for r in rs:
            assert r.final.samples.shape == (6, 3, 8, 8) and bool(torch.isfinite(r.final.samples).all())
            assert r.eval_steps.tolist() == [0, 2] and r.curve_sw.shape == (2,)
            assert r.curve_loss[0] == pytest.approx(float(pre.heldout_loss.mean()), rel=1e-6)
    assert runs["gft-coupling"][0].schedule_final_beta == 0.0 and runs["ft"][0].schedule_final_beta is None
    d = TE.distances(task, [runs["ft"][0].final.samples, task.target_heldout()], inception=inception)
    assert d[1].fd == pytest.approx(0.0, abs=1e-8) and d[1].sw == pytest.approx(0.0, abs=1e-12)
    assert d[1].fid == pytest.approx(0.0, abs=1e-8) and d[0].fid > 0
    # FID is the Fréchet distance of the Inception features of the clamped images
    from gftlib.eval.features import extract_features
    x = runs["ft"][0].final.samples.clamp(-1, 1)
    fid = frechet_distance(extract_features(x, inception), extract_features(task.target_heldout(), inception),
                           method="eigh")
    assert d[0].fid == pytest.approx(fid, rel=1e-9)
    # cached: a second call returns the same run without training
    again = TI.finetune(task, "ft", 0, config)
    torch.testing.assert_close(again.final.samples, runs["ft"][0].final.samples)


def test_scratch_and_pretrained_runs_differ_and_reflow_has_no_schedule() -> None:
    task = TD.ImageTask(**TINY)
    config = tiny_config()
    scratch = TI.finetune(task, "scratch", 0, config)
    reflow = TI.finetune(task, "reflow", 0, config)
    assert reflow.schedule_final_beta is None and np.all(reflow.beta == 0)
    # scratch starts from a zero-output UNet: its first curve loss is |x1 - x0|^2 on the fixed pairs
    x0, x1, _ = task.loss_batch()
    assert scratch.curve_loss[0] == pytest.approx(float(((x1 - x0) ** 2).flatten(1).sum(1).mean()), rel=1e-6)
    with pytest.raises(ValueError, match="method must be one of"):
        TI.finetune(task, "gft", 0, config)
    with pytest.raises(TypeError, match="config must be an ImageFinetuneConfig"):
        TI.finetune(task, "ft", 0, object())
    with pytest.raises(TypeError, match="task must be an ImageTask"):
        TI.finetune(object(), "ft", 0, config)
