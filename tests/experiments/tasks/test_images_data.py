"""The data of E2's image task (gftlib.experiments.tasks.images_data)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from gftlib.experiments.tasks import images as TI
from gftlib.experiments.tasks import images_data as TD
from image_fakes import TINY, fake_camelyon, smoke_params


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


def test_task_validation_messages() -> None:
    with pytest.raises(ValueError, match="n_loss must be <= n_heldout=6"):
        TD.ImageTask(**{**TINY, "n_loss": 7})
    with pytest.raises(ValueError, match="n_grid must be <= n_eval=6"):
        TD.ImageTask(**{**TINY, "n_grid": 7})
    with pytest.raises(ValueError, match="feature_depth=5 needs images of at least 16 pixels"):
        TD.ImageTask(**{**TINY, "feature_depth": 5})
    with pytest.raises(ValueError, match="pretrain_coupling must be one of"):
        TD.ImageTask(**{**TINY, "pretrain_coupling": "sinkhorn"})
    with pytest.raises(ValueError, match="n_null must be an integer >= 2"):
        TD.ImageTask(**{**TINY, "n_null": 1})
    with pytest.raises(TypeError, match="data_root must be None or a local path"):
        TD.ImageTask(**{**TINY, "dataset": "cifar10", "data_root": 5})


def test_skimage_data_roles_are_deterministic_and_independent() -> None:
    task = TD.ImageTask(**TINY)
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
    task = TD.ImageTask(**TINY)
    monkeypatch.setattr(TD, "_PATCH_CHUNK", 5)
    x = task.source_train()
    assert x.shape == (16, 3, 8, 8)
    torch.testing.assert_close(x, task.source_train())
    assert x.min() >= -1 and x.max() <= 1


def test_local_target_pool_is_split_into_disjoint_parts(tmp_path: Path) -> None:
    task = TD.ImageTask(**{**TINY, "dataset": "wilds-camelyon17", "data_root": str(tmp_path)})
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


def test_independent_coupling_distance_is_the_mean_over_all_pairs() -> None:
    task = TD.ImageTask(**TINY)
    x0, x1 = task.eval_noise().flatten(1).double(), task.target_train().flatten(1).double()
    brute = np.mean([float((a - b).norm()) for a in x0 for b in x1])
    assert task.independent_coupling_distance() == pytest.approx(brute, rel=1e-10)
