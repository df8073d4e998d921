"""The evaluation of E2's image task (gftlib.experiments.tasks.images_eval)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.stats
import torch

from gftlib.experiments.checks import difference_margin, gain_is_resolvable
from gftlib.experiments.tasks import images as TI
from gftlib.experiments.tasks import images_data as TD
from gftlib.experiments.tasks import images_eval as TE
from image_fakes import TINY


def test_paired_decrease_is_the_paired_t_statistic() -> None:
    rng = np.random.default_rng(1)
    before = rng.normal(10.0, 2.0, size=50)
    after = before - 0.3 + rng.normal(0.0, 1.0, size=50)
    test = TE.paired_decrease(before, after)
    assert test.mean == pytest.approx(float(np.mean(before - after)), rel=1e-12) and test.n == 50
    assert test.t == pytest.approx(scipy.stats.ttest_rel(before, after).statistic, rel=1e-10)
    assert TE.paired_decrease([2.0, 3.0], [1.0, 2.0]).t == math.inf  # constant positive decrease
    with pytest.raises(ValueError, match="same length >= 2"):
        TE.paired_decrease([1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="must be finite"):
        TE.paired_decrease([1.0, float("nan")], [1.0, 2.0])


def test_initial_heldout_loss() -> None:
    task = TD.ImageTask(**TINY)
    pre = TI.Generated(samples=torch.zeros(6, 3, 8, 8), path_length=np.zeros(6), straightness=np.ones(6),
                       heldout_loss=np.arange(4.0))
    np.testing.assert_array_equal(TE.initial_heldout_loss(task, "gft-drift", pre), np.arange(4.0))
    zero = TI.generate(task, task.build_model(seed=1)).heldout_loss  # zero-initialised UNet
    np.testing.assert_allclose(TE.initial_heldout_loss(task, "scratch", pre), zero, rtol=1e-6)
    with pytest.raises(ValueError, match="method must be one of"):
        TE.initial_heldout_loss(task, "nope", pre)


def test_reference_null_se_gives_the_margin_and_resolvability() -> None:
    ds = lambda sw: TE.DistanceSet(fd=sw, sw=sw, fid=None)  # noqa: E731
    ref = TE.DistanceReference(null=[ds(1.0), ds(1.2), ds(0.8)], train_ref=ds(1.1), source=ds(5.0),
                               noise=ds(4.0), pretrained=ds(3.0))
    assert ref.null_se("sw") == pytest.approx(0.2)
    margin = difference_margin(ref.null_se("sw"), z=5)
    assert margin == pytest.approx(5 * math.sqrt(2) * 0.2)
    assert gain_is_resolvable(ref.pretrained.sw - ref.train_ref.sw, margin, fraction=1.0)  # 1.9 > 1.414
    assert not gain_is_resolvable(ref.pretrained.sw - 2.0, margin, fraction=1.0)  # 1.0 < 1.414
    with pytest.raises(ValueError, match="metric 'fid' was not computed"):
        ref.null_values("fid")


def test_source_null_and_source_reference_check_fails_on_a_wrong_model() -> None:
    """The pretrained-resembles-source check: held-out source samples pass it, the target and the noise
    (an untrained model) fail it (sqrt FD against null bound + a quarter of the source-target distance)."""
    from gftlib.experiments.checks import null_upper_bound, separation_tolerance

    task = TD.ImageTask(**dict(TINY, image_size=16, n_heldout=64, n_eval=64, n_null=6, feature_width=8,
                               feature_depth=3, n_grid=4))
    assert task.source_null(0).shape == (64, 3, 16, 16)
    assert not torch.equal(task.source_null(0), task.source_null(1))
    assert not torch.equal(task.source_null(0), task.source_reference())
    with pytest.raises(ValueError, match="k must be < n_null=6"):
        task.source_null(6)

    def verdict(images: torch.Tensor) -> bool:
        fake = TI.Generated(samples=images, path_length=np.zeros(64), straightness=np.ones(64),
                            heldout_loss=np.zeros(4))
        src = TE.source_reference(task, fake)
        bound = null_upper_bound(np.sqrt(src.null_fd))
        tol = separation_tolerance([math.sqrt(src.target_fd) - bound])
        return math.sqrt(src.pretrained_fd) <= bound + tol

    fresh = task._patches("natural", 64, "heldout", "source_null", 99)   # another source sample: a perfect model
    assert verdict(fresh)
    assert not verdict(task.target_heldout())
    assert not verdict(task.eval_noise())


def test_image_grid_layout() -> None:
    imgs = torch.stack([torch.full((3, 2, 2), v) for v in (-1.0, 0.0, 1.0)])
    g = TE.image_grid(imgs, cols=2, pad=1, pad_value=0.5)
    assert g.shape == (2 * 3 + 1, 2 * 3 + 1, 3)
    assert np.all(g[1:3, 1:3] == 0.0) and np.all(g[1:3, 4:6] == 0.5) and np.all(g[4:6, 1:3] == 1.0)
    assert np.all(g[4:6, 4:6] == 0.5) and np.all(g[0] == 0.5)  # empty cell and padding
    assert TE.image_grid(imgs).shape == (7, 7, 3)  # ceil(sqrt(3)) = 2 columns
    with pytest.raises(ValueError, match="images must be a \\(n, 3, S, S\\) tensor"):
        TE.image_grid(torch.zeros(2, 1, 4, 4))


def test_feature_prdc_of_the_heldout_set_itself_is_perfect_and_a_collapsed_set_recalls_one_image() -> None:
    """H against itself: every point is its own nearest neighbour, so precision = recall = coverage = 1.
    A collapsed generator (one image of H repeated: k-NN radius 0 among the fakes) recalls only that
    image: recall = 1 / |H|, while its precision stays 1 (precision alone cannot see a collapse)."""
    task = TD.ImageTask(**TINY)
    held = task.target_heldout()
    same, collapsed = TE.feature_prdc(task, [held, held[:1].expand(16, -1, -1, -1).clone()])
    assert same["precision"] == same["recall"] == same["coverage"] == 1.0
    assert collapsed["recall"] == pytest.approx(1 / held.shape[0]) and collapsed["precision"] == 1.0
