"""The image domain-shift task of E2 (gftlib.experiments.tasks_images).

The real-data path (CIFAR-10 source, WILDS target, Inception FID) runs on small fake files built in
tmp_path, with tiny sizes; the statistical helpers are checked against their definitions.
"""

from __future__ import annotations

import math
import pickle
import re
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import scipy.stats
import skimage.io
import torch
from torch import Tensor, nn

from gftlib.experiments import tasks_images as TI
from gftlib.experiments.methods import METHODS
from gftlib.experiments.profiles import resolve_parameters
from gftlib.eval.features import INCEPTION_URL
from gftlib.eval.metrics import frechet_distance


# --------------------------------------------------------------------------------------------- fakes
def fake_cifar(root: Path, *, n_per_batch: int = 8, n_test: int = 8, seed: int = 0) -> Path:
    """root/cifar-10-batches-py with 5 training batches and a test batch of random uint8 images."""
    rng = np.random.default_rng(seed)
    d = root / "cifar-10-batches-py"
    d.mkdir(parents=True)
    for name, n in [(f"data_batch_{i}", n_per_batch) for i in range(1, 6)] + [("test_batch", n_test)]:
        data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
        with open(d / name, "wb") as fh:
            pickle.dump({b"data": data, b"labels": rng.integers(0, 10, size=n).tolist()}, fh)
    return root


def fake_camelyon(root: Path, n: int) -> Path:
    """root/camelyon17_v1.0 with n single-colour 12x12 patches (colour i identifies image i), all
    in the official 'train' split (split 0, centres 0/3/4)."""
    d = root / "camelyon17_v1.0"
    lines = [",patient,node,x_coord,y_coord,tumor,slide,center,split"]
    for i in range(n):
        p, nd, x, y = f"{i:03d}", "1", str(32 * i), "64"
        lines.append(f"{i},{p},{nd},{x},{y},{i % 2},{i},{(0, 3, 4)[i % 3]},0")
        folder = d / "patches" / f"patient_{p}_node_{nd}"
        folder.mkdir(parents=True, exist_ok=True)
        colour = np.array([i % 256, (7 * i) % 256, 255 - i % 256], dtype=np.uint8)
        img = np.broadcast_to(colour, (12, 12, 3)).copy()
        skimage.io.imsave(folder / f"patch_patient_{p}_node_{nd}_x_{x}_y_{y}.png", img, check_contrast=False)
    (d / "metadata.csv").write_text("\n".join(lines) + "\n")
    return root


class FakeInception(nn.Module):
    """model(uint8 NCHW, return_features=True) -> (n, 6) like NVlabs' Inception (6 features, cheap)."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("proj", torch.linspace(-1, 1, 3 * 6).reshape(3, 6))

    def forward(self, x: Tensor, return_features: bool = False) -> Tensor:
        if x.dtype != torch.uint8 or not return_features:
            raise RuntimeError("expected uint8 images and return_features=True")
        return x.float().mean(dim=(2, 3)) @ self.proj


@pytest.fixture
def inception_file(tmp_path: Path) -> Path:
    """A TorchScript file with the NVlabs calling convention (torch.jit.script is deprecated, not gone)."""
    path = tmp_path / "inception-2015-12-05.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.script(FakeInception()).save(str(path))
    return path


@pytest.fixture(autouse=True)
def _cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GFT_CACHE_DIR", str(tmp_path / "cache"))


TINY = dict(image_size=8, n_target=8, n_source=16, n_heldout=6, n_eval=6, n_null=2, n_loss=4, n_grid=4,
            pretrain_steps=2, pretrain_batch=4, nfe=2, feature_width=4, feature_depth=2, n_projections=16,
            model_config=(), eval_chunk=4)


def tiny_config(**kw) -> TI.ImageFinetuneConfig:
    base = dict(steps=2, batch_size=4, lr=1e-3, beta0=1.0, cache_size=4, n_trajectories=2, n_evals=1,
                time_grid=2, solver_steps=2, n_curve=3)
    base.update(kw)
    return TI.ImageFinetuneConfig(**base)


def smoke_params(**over) -> dict:
    return resolve_parameters(TI.PROFILE_TABLE, profile="smoke", seed=0, device="cpu", **over)


# --------------------------------------------------------------------------------------------- setup
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


def test_model_config_dict_and_errors() -> None:
    s = TI.resolve_setup(smoke_params(model_config={"config": "tiny", "base_channels": 8}))
    assert s.task.model_kwargs()["base_channels"] == 8 and s.task.model_kwargs()["image_size"] == 8
    with pytest.raises(ValueError, match="model_config must be one of 'tiny', 'small', 'cifar10', 'torchcfm'; "
                                         "got 'huge'"):
        TI.resolve_setup(smoke_params(model_config="huge"))
    with pytest.raises(ValueError, match=r"model_config\['config'\] must be one of .*; got 'huge'"):
        TI.resolve_setup(smoke_params(model_config={"config": "huge"}))
    with pytest.raises(TypeError, match="model_config must be a UNet config name"):
        TI.resolve_setup(smoke_params(model_config=3))
    with pytest.raises(ValueError, match="conflicts with image_size=8"):
        TI.resolve_setup(smoke_params(model_config={"config": "tiny", "image_size": 16}))
    with pytest.raises(ValueError, match="in_channels must be 3"):
        TI.resolve_setup(smoke_params(model_config={"config": "tiny", "in_channels": 1}))
    with pytest.raises(ValueError, match="attention_resolutions contains 8"):  # the library's UNet message
        TI.resolve_setup(smoke_params(image_size=10))


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


def test_task_validation_messages() -> None:
    with pytest.raises(ValueError, match="n_loss must be <= n_heldout=6"):
        TI.ImageTask(**{**TINY, "n_loss": 7})
    with pytest.raises(ValueError, match="n_grid must be <= n_eval=6"):
        TI.ImageTask(**{**TINY, "n_grid": 7})
    with pytest.raises(ValueError, match="feature_depth=5 needs images of at least 16 pixels"):
        TI.ImageTask(**{**TINY, "feature_depth": 5})
    with pytest.raises(ValueError, match="pretrain_coupling must be one of"):
        TI.ImageTask(**{**TINY, "pretrain_coupling": "sinkhorn"})
    with pytest.raises(ValueError, match="n_null must be an integer >= 2"):
        TI.ImageTask(**{**TINY, "n_null": 1})
    with pytest.raises(TypeError, match="data_root must be None or a local path"):
        TI.ImageTask(**{**TINY, "dataset": "cifar10", "data_root": 5})


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


# --------------------------------------------------------------------------------------------- data
def test_skimage_data_roles_are_deterministic_and_independent() -> None:
    task = TI.ImageTask(**TINY)
    assert task.target_train().shape == (8, 3, 8, 8) and task.target_heldout().shape == (6, 3, 8, 8)
    torch.testing.assert_close(task.target_heldout(), task.target_heldout())
    torch.testing.assert_close(task.eval_noise(), task.eval_noise())
    assert not torch.equal(task.target_null(0), task.target_null(1))
    assert task.source_train().shape == (16, 3, 8, 8) and task.source_reference().shape == (6, 3, 8, 8)
    assert not torch.equal(task.eval_noise(), replace(task, seed=1).eval_noise())
    with pytest.raises(ValueError, match="k must be < n_null=2"):
        task.target_null(2)
    x0, x1, t = task.loss_batch()
    assert x0.shape == x1.shape == (4, 3, 8, 8)
    torch.testing.assert_close(t, (torch.arange(4) + 0.5) / 4)
    torch.testing.assert_close(x1, task.target_heldout()[:4])


def test_patches_are_chunked_deterministically(monkeypatch: pytest.MonkeyPatch) -> None:
    task = TI.ImageTask(**TINY)
    monkeypatch.setattr(TI, "_PATCH_CHUNK", 5)
    x = task.source_train()
    assert x.shape == (16, 3, 8, 8)
    torch.testing.assert_close(x, task.source_train())
    assert x.min() >= -1 and x.max() <= 1


def test_local_target_pool_is_split_into_disjoint_parts(tmp_path: Path) -> None:
    task = TI.ImageTask(**{**TINY, "dataset": "wilds-camelyon17", "data_root": str(tmp_path)})
    fake_camelyon(tmp_path, task.n_pool)
    parts = [task.target_train(), task.target_heldout(), task.target_train_reference(),
             task.target_null(0), task.target_null(1)]
    assert [p.shape[0] for p in parts] == [8, 6, 6, 6, 6]
    ids = [tuple(np.round(((img[:, 0, 0] + 1) * 127.5).numpy()).astype(int)) for p in parts for img in p]
    assert len(set(ids)) == task.n_pool  # every image used once: the parts are disjoint
    task.check_data()
    too_big = replace(task, n_target=task.n_target + 1)
    with pytest.raises(ValueError, match=f"n must be <= {task.n_pool}"):
        too_big.check_data()


# --------------------------------------------------------------------------------------------- evaluation
def test_generate_with_an_untrained_unet_is_the_identity() -> None:
    """A zero-initialised UNet outputs 0: Euler leaves the noise unchanged, path length 0,
    straightness 1, and the held-out CFM loss is |x1 - x0|^2 exactly."""
    task = TI.ImageTask(**TINY)
    g = TI.generate(task, task.build_model(seed=0))
    torch.testing.assert_close(g.samples, task.eval_noise())
    assert np.all(g.path_length == 0) and np.all(g.straightness == 1)
    x0, x1, _ = task.loss_batch()
    np.testing.assert_allclose(g.heldout_loss, ((x1 - x0) ** 2).flatten(1).sum(1).double().numpy(), rtol=1e-6)


def test_generate_path_length_matches_a_constant_field() -> None:
    """For b(x, t) = c, the Euler path length is |c| and the samples are x0 + c, in any chunking."""
    task = TI.ImageTask(**{**TINY, "eval_chunk": 4})
    c = torch.full((3, 8, 8), 0.25)

    class Const(nn.Module):
        def forward(self, x, t):
            return c.expand_as(x)

    g = TI.generate(task, Const())
    torch.testing.assert_close(g.samples, task.eval_noise() + c)
    np.testing.assert_allclose(g.path_length, float(c.norm()), rtol=1e-5)
    assert g.mean_straightness == pytest.approx(1.0, abs=1e-6)


def test_independent_coupling_distance_is_the_mean_over_all_pairs() -> None:
    task = TI.ImageTask(**TINY)
    x0, x1 = task.eval_noise().flatten(1).double(), task.target_train().flatten(1).double()
    brute = np.mean([float((a - b).norm()) for a in x0 for b in x1])
    assert task.independent_coupling_distance() == pytest.approx(brute, rel=1e-10)


def test_null_bound_is_the_student_t_prediction_bound_and_covers() -> None:
    v = [1.0, 1.2, 0.9, 1.1]
    expected = np.mean(v) + scipy.stats.t.ppf(0.999, 3) * np.std(v, ddof=1) * math.sqrt(1 + 1 / 4)
    assert TI.null_bound(v) == pytest.approx(expected, rel=1e-12)
    # coverage: a new normal draw exceeds the 75 % bound of 4 draws with probability 0.25 exactly
    rng = np.random.default_rng(0)
    draws = rng.normal(size=(3000, 5))
    exceed = np.mean([d[4] > TI.null_bound(d[:4], confidence=0.75) for d in draws])
    assert abs(exceed - 0.25) < 4 * math.sqrt(0.25 * 0.75 / 3000)
    with pytest.raises(ValueError, match="values must be at least 2 finite numbers"):
        TI.null_bound([1.0])
    with pytest.raises(ValueError, match="confidence must be a finite number > 0.5 and < 1"):
        TI.null_bound(v, confidence=1.0)


def test_paired_decrease_is_the_paired_t_statistic() -> None:
    rng = np.random.default_rng(1)
    before = rng.normal(10.0, 2.0, size=50)
    after = before - 0.3 + rng.normal(0.0, 1.0, size=50)
    test = TI.paired_decrease(before, after)
    assert test.mean == pytest.approx(float(np.mean(before - after)), rel=1e-12) and test.n == 50
    assert test.t == pytest.approx(scipy.stats.ttest_rel(before, after).statistic, rel=1e-10)
    assert TI.paired_decrease([2.0, 3.0], [1.0, 2.0]).t == math.inf  # constant positive decrease
    with pytest.raises(ValueError, match="same length >= 2"):
        TI.paired_decrease([1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="must be finite"):
        TI.paired_decrease([1.0, float("nan")], [1.0, 2.0])


def test_initial_heldout_loss() -> None:
    task = TI.ImageTask(**TINY)
    pre = TI.Generated(samples=torch.zeros(6, 3, 8, 8), path_length=np.zeros(6), straightness=np.ones(6),
                       heldout_loss=np.arange(4.0))
    np.testing.assert_array_equal(TI.initial_heldout_loss(task, "gft-drift", pre), np.arange(4.0))
    zero = TI.generate(task, task.build_model(seed=1)).heldout_loss  # zero-initialised UNet
    np.testing.assert_allclose(TI.initial_heldout_loss(task, "scratch", pre), zero, rtol=1e-6)
    with pytest.raises(ValueError, match="method must be one of"):
        TI.initial_heldout_loss(task, "nope", pre)


def test_reference_margin_and_resolvability() -> None:
    ds = lambda sw: TI.DistanceSet(fd=sw, sw=sw, fid=None)  # noqa: E731
    ref = TI.Reference(null=[ds(1.0), ds(1.2), ds(0.8)], train_ref=ds(1.1), source=ds(5.0), noise=ds(4.0),
                       pretrained=ds(3.0))
    assert ref.closer_margin("sw", k=5) == pytest.approx(5 * math.sqrt(2) * 0.2)
    assert ref.resolvable("sw")  # 3.0 - 1.1 = 1.9 > 1.414
    assert not TI.Reference(null=ref.null, train_ref=ds(2.0), source=ds(5.0), noise=ds(4.0),
                            pretrained=ds(3.0)).resolvable("sw")
    with pytest.raises(ValueError, match="metric 'fid' was not computed"):
        ref.null_values("fid")


def test_source_null_and_source_reference_check_fails_on_a_wrong_model() -> None:
    """The pretrained-resembles-source check: held-out source samples pass it, the target and the noise
    (an untrained model) fail it (sqrt FD against null bound + a quarter of the source-target distance)."""
    from gftlib.experiments.checks import null_upper_bound, separation_tolerance

    task = TI.ImageTask(**dict(TINY, image_size=16, n_heldout=64, n_eval=64, n_null=6, feature_width=8,
                               feature_depth=3, n_grid=4))
    assert task.source_null(0).shape == (64, 3, 16, 16)
    assert not torch.equal(task.source_null(0), task.source_null(1))
    assert not torch.equal(task.source_null(0), task.source_reference())
    with pytest.raises(ValueError, match="k must be < n_null=6"):
        task.source_null(6)

    def verdict(images: torch.Tensor) -> bool:
        fake = TI.Generated(samples=images, path_length=np.zeros(64), straightness=np.ones(64),
                            heldout_loss=np.zeros(4))
        src = TI.source_reference(task, fake)
        bound = null_upper_bound(np.sqrt(src.null_fd))
        tol = separation_tolerance([math.sqrt(src.target_fd) - bound])
        return math.sqrt(src.pretrained_fd) <= bound + tol

    fresh = task._patches("natural", 64, "heldout", "source_null", 99)   # another source sample: a perfect model
    assert verdict(fresh)
    assert not verdict(task.target_heldout())
    assert not verdict(task.eval_noise())


def test_image_grid_layout() -> None:
    imgs = torch.stack([torch.full((3, 2, 2), v) for v in (-1.0, 0.0, 1.0)])
    g = TI.image_grid(imgs, cols=2, pad=1, pad_value=0.5)
    assert g.shape == (2 * 3 + 1, 2 * 3 + 1, 3)
    assert np.all(g[1:3, 1:3] == 0.0) and np.all(g[1:3, 4:6] == 0.5) and np.all(g[4:6, 1:3] == 1.0)
    assert np.all(g[4:6, 4:6] == 0.5) and np.all(g[0] == 0.5)  # empty cell and padding
    assert TI.image_grid(imgs).shape == (7, 7, 3)  # ceil(sqrt(3)) = 2 columns
    with pytest.raises(ValueError, match="images must be a \\(n, 3, S, S\\) tensor"):
        TI.image_grid(torch.zeros(2, 1, 4, 4))


# --------------------------------------------------------------------------------------------- end to end
def test_real_data_path_end_to_end_with_fake_files(tmp_path: Path, inception_file: Path) -> None:
    """CIFAR-10 pretraining -> WILDS Camelyon17 fine-tuning with FID, tiny sizes, through the task
    functions the notebook calls."""
    cifar, wilds = fake_cifar(tmp_path / "cifar"), tmp_path / "wilds"
    task = TI.ImageTask(**{**TINY, "dataset": "wilds-camelyon17", "data_root": str(wilds),
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
    ref = TI.reference_metrics(task, pre, inception=inception)
    assert ref.null_values("fid").shape == (2,) and ref.pretrained.fid is not None
    runs = TI.run_methods(task, ("ft", "gft-coupling"), (0, 1), config)
    for m, rs in runs.items():
        for r in rs:
            assert r.final.samples.shape == (6, 3, 8, 8) and bool(torch.isfinite(r.final.samples).all())
            assert r.eval_steps.tolist() == [0, 2] and r.curve_sw.shape == (2,)
            assert r.curve_loss[0] == pytest.approx(float(pre.heldout_loss.mean()), rel=1e-6)
    assert runs["gft-coupling"][0].schedule_final_beta == 0.0 and runs["ft"][0].schedule_final_beta is None
    d = TI.distances(task, [runs["ft"][0].final.samples, task.target_heldout()], inception=inception)
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
    task = TI.ImageTask(**TINY)
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
