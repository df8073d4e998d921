"""E2's independent replicates (gftlib.experiments.tasks.images_units): one unit per seed."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from gftlib.experiments.checks import null_upper_bound, separation_tolerance
from gftlib.experiments.tasks import images as TI
from gftlib.experiments.tasks import images_data as TD
from gftlib.experiments.tasks import images_eval as TE
from gftlib.experiments.tasks import images_units as TU
from image_fakes import TINY, tiny_config


def test_a_seeded_task_draws_every_random_part_from_its_seed() -> None:
    """The three sources of seed-to-seed randomness of issue 11 differ between units: the target
    sample, the pretraining data (and init) and, through the run's seed, the training; so do H and
    the evaluation noise. Everything else is the task's."""
    base = TD.ImageTask(**TINY)
    a, b = TU.seeded_task(base, 3), TU.seeded_task(base, 4)
    assert a.seed == 3 and b.seed == 4 and TU.seeded_task(base, 0) == base
    for draw in ("target_train", "target_heldout", "source_train", "eval_noise", "source_reference"):
        assert not torch.equal(getattr(a, draw)(), getattr(b, draw)()), draw
    assert torch.equal(a.target_train(), TU.seeded_task(base, 3).target_train())  # a function of the seed
    assert a.pretrain_key()["seed"] != b.pretrain_key()["seed"]  # its own pretrained model
    assert {k: v for k, v in a.as_dict().items() if k != "seed"} == {k: v for k, v in b.as_dict().items() if k != "seed"}
    with pytest.raises(ValueError, match="seed must be"):
        TU.seeded_task(base, -1)


def _fake_src(null: list[float], pretrained: float, target: float) -> TE.SourceReference:
    return TE.SourceReference(null_fd=np.asarray(null) ** 2, pretrained_fd=pretrained**2, target_fd=target**2)


def test_source_check_is_the_null_bound_plus_the_triangle_tolerance() -> None:
    src = _fake_src([0.2, 0.25, 0.18, 0.22], pretrained=0.5, target=2.0)
    c = TU.source_check(src)
    bound = null_upper_bound([0.2, 0.25, 0.18, 0.22])
    assert c.null_bound == pytest.approx(bound)
    assert c.tolerance == pytest.approx(separation_tolerance([2.0 - bound]))
    assert c.bound == pytest.approx(bound + (2.0 - bound) / 4) and c.value == pytest.approx(0.5)
    assert c.value <= c.bound  # a model close to the source passes
    far = TU.source_check(_fake_src([0.2, 0.25, 0.18, 0.22], pretrained=1.5, target=2.0))
    assert far.value > far.bound  # a model nearer the target than the source fails


def _ds(v: float) -> TE.DistanceSet:
    return TE.DistanceSet(fd=v, sw=v / 10, fid=None)


def _unit(seed: int, null: list[float], pretrained: float, heldout_loss: np.ndarray) -> TU.ImageUnit:
    ref = TE.DistanceReference(null=[_ds(v) for v in null], train_ref=_ds(1.0 + seed), source=_ds(5.0 + seed),
                               noise=_ds(9.0), pretrained=_ds(pretrained))
    gen = TI.Generated(samples=torch.zeros(2, 3, 8, 8), path_length=np.full(2, 3.0 + seed),
                       straightness=np.ones(2), heldout_loss=heldout_loss)
    return TU.ImageUnit(seed=seed, task=TU.seeded_task(TD.ImageTask(**TINY), seed), pretrained=gen, ref=ref,
                        src=_fake_src([0.2, 0.3, 0.25, 0.22], 0.4, 2.0))


def test_pooled_reference_means_over_units() -> None:
    units = [_unit(0, [1.0, 1.2, 0.8], 3.0, np.zeros(4)), _unit(1, [2.0, 2.4, 1.6], 4.0, np.zeros(4))]
    pooled = TU.pooled_reference(units, "fd")
    assert pooled["null_mean"] == pytest.approx(1.5)
    assert pooled["null_std"] == pytest.approx(math.sqrt((0.2**2 + 0.4**2) / 2))  # RMS of the units' stds
    assert pooled["source"] == pytest.approx(5.5) and pooled["pretrained"] == pytest.approx(3.5)
    assert pooled["train_distribution"] == pytest.approx(1.5) and pooled["noise"] == pytest.approx(9.0)
    assert TU.pooled_reference(units, "sw")["pretrained"] == pytest.approx(0.35)
    with pytest.raises(ValueError, match="units must not be empty"):
        TU.pooled_reference([], "fd")
    numbers = TU.reference_numbers(units[1], ("fd",))
    assert numbers["fd"]["null_values"] == [2.0, 2.4, 1.6] and numbers["pretrained_path_length"] == 4.0
    assert numbers["source_check"]["sqrt_fd_pretrained_to_source"] == pytest.approx(0.4)


def test_heldout_decrease_pairs_each_unit_with_its_own_initial_model() -> None:
    before = [np.array([5.0, 6.0, 7.0, 8.0]), np.array([9.0, 9.5, 10.0, 11.0])]
    units = [_unit(s, [1.0, 1.1], 3.0, before[s]) for s in (0, 1)]
    after = [np.array([4.0, 5.5, 6.0, 7.5]), np.array([8.0, 9.0, 9.0, 10.0])]
    runs = [type("Run", (), {"final": TI.Generated(samples=torch.zeros(1), path_length=np.zeros(1),
                                                   straightness=np.ones(1), heldout_loss=a)})() for a in after]
    test = TU.heldout_decrease(units, runs, "ft")
    expected = TE.paired_decrease((before[0] + before[1]) / 2, (after[0] + after[1]) / 2)
    assert test == expected
    with pytest.raises(ValueError, match="one run per unit"):
        TU.heldout_decrease(units, runs[:1], "ft")


def test_units_pretrain_and_run_independently_and_are_cached(tmp_path, monkeypatch) -> None:
    """Two units: different pretrained models, every method run once per unit with the unit's seed;
    distances and diversity come back per unit; duplicate seeds are refused."""
    monkeypatch.setenv("GFT_CACHE_DIR", str(tmp_path / "cache"))
    base = TD.ImageTask(**TINY)
    units = TU.build_units(base, [0, 1])
    assert [u.seed for u in units] == [0, 1] and [u.task.seed for u in units] == [0, 1]
    assert not torch.equal(units[0].pretrained.samples, units[1].pretrained.samples)
    runs = TU.run_units(units, ["ft", "gft-coupling"], tiny_config())
    assert [r.seed for r in runs["ft"]] == [0, 1]
    again = TU.run_units(units, ["ft"], tiny_config())  # cached: the same runs
    assert all(torch.equal(a.final.samples, b.final.samples) for a, b in zip(runs["ft"], again["ft"]))
    dist = TU.unit_distances(units, runs)
    assert set(dist) == {"ft", "gft-coupling"} and len(dist["ft"]) == 2
    direct = TE.distances(units[1].task, [runs["gft-coupling"][1].final.samples])[0]
    assert dist["gft-coupling"][1] == direct  # measured against its own unit's H
    div = TU.unit_prdc(units, runs)
    assert set(div["ft"][0]) == {"precision", "recall", "density", "coverage"}
    refs = TU.diversity_references(units)
    assert set(refs) == {"null_sample", "pretrained"}
    with pytest.raises(ValueError, match="distinct integers"):
        TU.build_units(base, [1, 1])
