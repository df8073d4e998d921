"""gftlib.eval.memorization: known cases, the null value 1/2 and bad input."""

from __future__ import annotations

import math

import pytest
import torch

from gftlib.eval.memorization import memorization


def test_copies_of_the_training_set_give_ratio_0_and_fraction_1() -> None:
    g = torch.Generator().manual_seed(0)
    train, held = torch.randn(32, 2, generator=g), torch.randn(96, 2, generator=g)
    m = memorization(train.clone(), train, held)
    assert m.train_distance == 0.0 and m.ratio == 0.0
    assert m.closer_to_train == 1.0 and m.n_heldout_sets == 3
    assert m.heldout_distance > 0


def test_hand_computed_case() -> None:
    # 1-D: T = {0}, H = {10}; samples 1, 2, 9 -> d_T = 4, d_H = 6, two of three nearer T
    m = memorization(torch.tensor([[1.0], [2.0], [9.0]]), torch.tensor([[0.0]]), torch.tensor([[10.0]]))
    assert m.train_distance == pytest.approx(4.0) and m.heldout_distance == pytest.approx(6.0)
    assert m.ratio == pytest.approx(2 / 3) and m.closer_to_train == pytest.approx(2 / 3)
    # a tie counts one half: sample 5, T = {0}; held-out sets {10} (tie), {-5}, {99} (T nearer)
    m = memorization(torch.tensor([[5.0]]), torch.tensor([[0.0]]), torch.tensor([[10.0], [-5.0], [99.0]]))
    assert m.closer_to_train == pytest.approx((0.5 + 1 + 1) / 3) and m.n_heldout_sets == 3
    # a held-out pool of 2.5 m points uses its first 2 m (k = 2)
    m = memorization(torch.tensor([[5.0]]), torch.tensor([[0.0], [1.0]]),
                     torch.tensor([[10.0], [20.0], [4.0], [30.0], [50.0]]))
    assert m.n_heldout_sets == 2 and m.closer_to_train == pytest.approx(0.5)  # nearer than {10,20}, not {4,30}


def test_independent_samples_have_fraction_one_half_and_ratio_one() -> None:
    # samples, T and H i.i.d.: E[closer_to_train] = 1/2 exactly (exchangeability of T and H);
    # tolerance: 5 standard errors of the mean over independent replicates
    fr, ratios = [], []
    for r in range(60):
        g = torch.Generator().manual_seed(100 + r)
        train, held, samples = (torch.randn(n, 2, generator=g) for n in (64, 256, 256))
        m = memorization(samples, train, held)
        fr.append(m.closer_to_train)
        ratios.append(m.ratio)
    fr_t, ra_t = torch.tensor(fr), torch.tensor(ratios)
    assert abs(fr_t.mean() - 0.5) <= 5 * fr_t.std() / math.sqrt(len(fr))
    assert abs(ra_t.mean() - 1.0) <= 5 * ra_t.std() / math.sqrt(len(ratios)) + 0.02  # ratio of means: O(1/n) bias


def test_samples_near_the_training_set_are_flagged() -> None:
    g = torch.Generator().manual_seed(1)
    train, held = torch.randn(32, 2, generator=g), torch.randn(320, 2, generator=g)
    jitter = train.repeat(8, 1) + 0.05 * torch.randn(256, 2, generator=g)
    m = memorization(jitter, train, held)
    assert m.closer_to_train > 0.9 and m.ratio < 0.3


@pytest.mark.parametrize("args, err, match", [
    ((torch.zeros(4, 2), torch.zeros(8, 2), torch.zeros(4, 2)), ValueError,
     r"heldout must hold at least as many points as train \(8\), got 4"),
    ((torch.zeros(4, 3), torch.zeros(2, 2), torch.zeros(4, 2)), ValueError, "same features per point"),
    (([[0.0]], torch.zeros(2, 1), torch.zeros(2, 1)), TypeError, "samples must be a torch.Tensor"),
    ((torch.zeros(3), torch.zeros(2, 1), torch.zeros(2, 1)), ValueError, r"samples must have shape \(n, ...\)"),
    ((torch.full((2, 1), float("nan")), torch.zeros(2, 1), torch.zeros(2, 1)), ValueError, "finite"),
])
def test_bad_input(args, err, match) -> None:
    with pytest.raises(err, match=match):
        memorization(*args)


def test_null_z_is_standard_normal_and_flags_copies() -> None:
    from gftlib.eval.memorization import closer_to_train_z

    zs = []
    for r in range(300):
        g = torch.Generator().manual_seed(1000 + r)
        train, held, samples = (torch.randn(n, 2, generator=g) for n in (32, 32, 256))
        zs.append(closer_to_train_z(samples, train, held)[1])
    z = torch.tensor(zs)
    # mean 0 and variance 1 within Monte Carlo error (SE of the mean 1/sqrt(300), of the variance ~ sqrt(2/300))
    assert abs(float(z.mean())) <= 4 / math.sqrt(len(zs))
    assert abs(float(z.var()) - 1.0) <= 4 * math.sqrt(2 / len(zs))
    g = torch.Generator().manual_seed(7)
    train, held = torch.randn(32, 2, generator=g), torch.randn(32, 2, generator=g)
    f, zc = closer_to_train_z(train.repeat(4, 1) + 0.01 * torch.randn(128, 2, generator=g), train, held)
    assert f == 1.0 and zc > 5
