"""gftlib.eval.stability and gftlib.eval.diversity on curves and point sets with known answers."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from gftlib.eval.diversity import prdc
from gftlib.eval.stability import (
    early_degradation,
    instantaneous_variance,
    max_upward_jump,
    relative_level,
    seconds_to_reach,
    sliding_instantaneous_variance,
    spearman_rho,
    steps_to_reach,
)


def test_instantaneous_variance_known_curves() -> None:
    assert instantaneous_variance([2.0] * 10) == 0.0
    a = 0.3
    assert instantaneous_variance(a * np.arange(20)) == pytest.approx(a**2 / 2)  # trend: a^2 / 2
    rng = np.random.default_rng(0)
    n, s = 20000, 0.7
    iv = instantaneous_variance(5.0 - 0.001 * np.arange(n) + rng.normal(0, s, n))
    # E[IV] = s^2 + slope^2 / 2; sd of the estimator ~ s^2 sqrt(3 / n) for Gaussian noise
    assert abs(iv - (s**2 + 0.001**2 / 2)) <= 5 * s**2 * math.sqrt(3 / n)
    win = sliding_instantaneous_variance([0.0, 1.0, 1.0, 3.0], window=2)
    np.testing.assert_allclose(win, [0.5, 0.0, 2.0])
    np.testing.assert_allclose(sliding_instantaneous_variance(a * np.arange(6), 6),
                               [instantaneous_variance(a * np.arange(6))])
    with pytest.raises(ValueError, match="window must be in"):
        sliding_instantaneous_variance([0.0, 1.0], window=3)
    with pytest.raises(ValueError, match="curve must be a 1-D sequence of at least 2 finite numbers"):
        instantaneous_variance([1.0])


def test_spearman_rho_known_curves() -> None:
    steps = np.arange(10)
    assert spearman_rho(steps, 1.0 / (1 + steps)) == pytest.approx(-1.0)  # monotone improvement
    assert spearman_rho(steps, steps**2) == pytest.approx(1.0)  # monotone degradation
    assert spearman_rho(steps, np.ones(10)) == 0.0
    assert spearman_rho(steps, [5, 4, 3, 2, 1, 1.5, 2.5, 3.5, 4.5, 5.5]) > -0.5  # U-shaped: not monotone


def test_jump_degradation_and_speed() -> None:
    assert max_upward_jump([3.0, 2.0, 2.5, 1.0]) == pytest.approx(0.5)
    assert max_upward_jump([3.0, 2.0, 1.0]) == 0.0
    steps = [0, 10, 20, 30, 40]
    assert early_degradation(steps, [1.0, 1.4, 0.8, 0.7, 0.6], fraction=0.25) == pytest.approx(0.4)
    assert early_degradation(steps, [1.0, 0.9, 0.8, 0.7, 0.6], fraction=0.25) == pytest.approx(-0.1)
    curve = [1.0, 0.5, 0.31, 0.30, 0.29]
    assert relative_level(0.30) == pytest.approx(0.315)
    assert relative_level(0.8, better="higher") == pytest.approx(0.76)
    assert steps_to_reach(steps, curve, relative_level(0.30)) == 20.0
    assert steps_to_reach(steps, curve, 0.1) == math.inf
    assert steps_to_reach(steps, [0.1, 0.5, 0.9, 0.9, 0.9], 0.85, better="higher") == 20.0


def test_seconds_to_reach() -> None:
    seconds = [0.5, 2.0, 2.0, 7.5, 9.0]  # training seconds at each evaluation (ties allowed)
    curve = [1.0, 0.5, 0.31, 0.30, 0.29]
    assert seconds_to_reach(seconds, curve, relative_level(0.30)) == 2.0  # the third evaluation
    assert seconds_to_reach(seconds, curve, 0.5) == 2.0
    assert seconds_to_reach(seconds, curve, 1.0) == 0.5  # reached at the first evaluation
    assert seconds_to_reach(seconds, curve, 0.1) == math.inf  # never (as steps_to_reach)
    assert seconds_to_reach(seconds, [0.1, 0.5, 0.9, 0.9, 0.9], 0.85, better="higher") == 2.0
    assert seconds_to_reach([0.0, 3.0], [0.2, 0.4], 0.35, better="higher") == 3.0


@pytest.mark.parametrize("seconds, curve, level, match", [
    ([1.0, 0.5], [1.0, 0.5], 0.6, r"seconds must be non-decreasing .* got \[1.0, 0.5\]"),
    ([-1.0, 0.5], [1.0, 0.5], 0.6, "seconds must hold finite numbers >= 0"),
    ([0.0, math.nan], [1.0, 0.5], 0.6, "seconds must hold finite numbers >= 0"),
    ([0.0, math.inf], [1.0, 0.5], 0.6, "seconds must hold finite numbers >= 0"),
    ([], [], 0.6, "seconds must be a 1-D sequence of at least 1 number"),
    ([[0.0, 1.0]], [[1.0, 0.5]], 0.6, "seconds must be a 1-D sequence"),
    ([0.0, 1.0, 2.0], [1.0, 0.5], 0.6, "seconds and curve must have the same length, got 3 and 2"),
    ([0.0, 1.0], [1.0, math.nan], 0.6, "curve must be a 1-D sequence of at least 1 finite number"),
    ([0.0, 1.0], [1.0, 0.5], math.nan, "level must be a finite number"),
])
def test_seconds_to_reach_rejects_bad_input(seconds, curve, level, match) -> None:
    with pytest.raises(ValueError, match=match):
        seconds_to_reach(seconds, curve, level)
    with pytest.raises(ValueError, match="better must be one of"):
        seconds_to_reach([0.0], [1.0], 0.5, better="faster")


def _two_clusters(n: int, seed: int, only_first: bool = False) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    centre = torch.tensor([[-5.0, 0.0], [5.0, 0.0]])
    which = torch.zeros(n, dtype=torch.long) if only_first else torch.randint(2, (n,), generator=g)
    return centre[which] + 0.5 * torch.randn(n, 2, generator=g)


def test_prdc_known_cases() -> None:
    real = _two_clusters(1000, 0)
    same = prdc(real, real)
    assert same["precision"] == 1.0 and same["recall"] == 1.0 and same["coverage"] == 1.0
    fresh = prdc(real, _two_clusters(1000, 1))  # same law: density ~ 1, the others close to 1
    assert 0.9 <= fresh["density"] <= 1.1 and fresh["coverage"] > 0.9 and fresh["precision"] > 0.9
    collapsed = prdc(real, _two_clusters(1000, 2, only_first=True))  # mode collapse: half the modes
    assert collapsed["precision"] > 0.9
    frac_first = float((real[:, 0] < 0).double().mean())
    assert abs(collapsed["recall"] - frac_first) < 0.05 and abs(collapsed["coverage"] - frac_first) < 0.05
    far = prdc(real, real + 100.0)
    assert far == {"precision": 0.0, "recall": 0.0, "density": 0.0, "coverage": 0.0}
    feats = prdc(torch.randn(200, 3, 4, 4, generator=torch.Generator().manual_seed(3)),
                 torch.randn(200, 3, 4, 4, generator=torch.Generator().manual_seed(4)))
    assert set(feats) == {"precision", "recall", "density", "coverage"}  # images flattened to features
    with pytest.raises(ValueError, match="real and fake must have the same dimension"):
        prdc(real, torch.zeros(10, 3))
    with pytest.raises(ValueError, match="more than k=5 points"):
        prdc(real[:5], real)
