"""gftlib.theory.quadrature: exact TV of 1-D mixtures from CDFs at the density crossings, and the trapezoid
error bound at the kinks of |a - b|."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from gftlib.theory.analytic import GaussianMixture, tv_distance_quadrature
from gftlib.theory.quadrature import (density_crossings, exact_tv_by_crossings, mixture_1d, mixture_density,
                               quadrature_range, trapezoid_kink_tolerance)
from gftlib.validation import check_finite_number, check_list


def gm(weights, means, stds) -> GaussianMixture:
    return GaussianMixture.from_dict({"weights": weights, "means": means, "stds": stds})


def test_tv_of_two_gaussians_with_one_std_is_closed_form() -> None:
    # N(-d/2, s^2) vs N(d/2, s^2): one crossing at 0, TV = 2 Phi(d / (2 s)) - 1
    for d, s in ((1.0, 1.0), (3.0, 0.5), (0.1, 2.0)):
        a, b = gm([1.0], [-d / 2], [s]), gm([1.0], [d / 2], [s])
        tv, cross = exact_tv_by_crossings(a, b)
        assert cross.shape == (1,) and abs(cross[0]) < 1e-12
        assert tv == pytest.approx(math.erf(d / (2 * s) / math.sqrt(2)), abs=1e-14)


def test_tv_with_two_crossings_matches_closed_form() -> None:
    # N(0, 1) vs N(0, s^2), s > 1: crossings at +/- c, c^2 = 2 s^2 log(s) / (s^2 - 1);
    # TV = [2 Phi(c) - 1] - [2 Phi(c / s) - 1]
    s = 2.0
    c = math.sqrt(2 * s * s * math.log(s) / (s * s - 1))
    tv, cross = exact_tv_by_crossings(gm([1.0], [0.0], [1.0]), gm([1.0], [0.0], [s]))
    assert np.allclose(cross, [-c, c], atol=1e-12)
    assert tv == pytest.approx(math.erf(c / math.sqrt(2)) - math.erf(c / s / math.sqrt(2)), abs=1e-14)


def test_tv_is_symmetric_zero_for_equal_laws_and_in_unit_interval() -> None:
    q = gm([0.4, 0.6], [-2.0, 2.0], [0.35, 0.5])
    p = gm([1.0], [0.0], [1.0])
    tv_qp, c_qp = exact_tv_by_crossings(q, p)
    tv_pq, c_pq = exact_tv_by_crossings(p, q)
    assert tv_qp == pytest.approx(tv_pq, abs=1e-14) and np.allclose(c_qp, c_pq, atol=1e-12)
    assert 0.0 < tv_qp < 1.0
    tv_qq, c_qq = exact_tv_by_crossings(q, q)
    assert tv_qq == 0.0 and c_qq.size == 0


@pytest.mark.parametrize("n", [2001, 8001])
def test_trapezoid_error_stays_within_the_kink_bound(n: int) -> None:
    # the tolerance T3 uses is a bound from the Euler–Maclaurin analysis, so it must hold at any grid
    pairs = [(gm([0.4, 0.6], [-2.0, 2.0], [0.35, 0.5]), gm([1.0], [0.0], [1.0])),
             (gm([1.0], [0.0], [1.0]), gm([1.0], [0.3], [1.4])),
             (gm([0.5, 0.5], [-1.0, 1.5], [0.6, 0.3]), gm([0.2, 0.8], [0.0, 2.0], [1.0, 0.8]))]
    for a, b in pairs:
        lo, hi = quadrature_range(a, b)
        h = (hi - lo) / (n - 1)
        tv, cross = exact_tv_by_crossings(a, b, lo=lo, hi=hi, n=4 * n)
        tol = trapezoid_kink_tolerance(a, b, cross, h, n)
        err = abs(tv_distance_quadrature(a, b, lo=lo, hi=hi, n=n) - tv)
        assert err <= tol
        assert tol < 0.05 * tv     # and the bound is not vacuous


def test_density_range_and_crossings_helpers() -> None:
    q = gm([0.4, 0.6], [-2.0, 2.0], [0.35, 0.5])
    x = np.array([-2.0, 0.0, 2.0])
    ref = sum(w * np.exp(-0.5 * ((x - m) / s) ** 2) / (s * math.sqrt(2 * math.pi))
              for w, m, s in ((0.4, -2.0, 0.35), (0.6, 2.0, 0.5)))
    assert np.allclose(mixture_density(q, x), ref, rtol=1e-13)
    assert mixture_density(q, 0.5).shape == (1,)
    lo, hi = quadrature_range(q, gm([1.0], [0.0], [1.0]), width=5.0)
    assert (lo, hi) == pytest.approx((-5.0, 5.0))   # p_pre's N(0, 1) +/- 5 covers q's components ± 5 std
    cross = density_crossings(gm([1.0], [0.0], [1.0]), gm([1.0], [1.0], [1.0]), -5.0, 5.0, 11)
    assert cross == pytest.approx([0.5], abs=1e-13)   # bracketed by grid points 0 and 1 (a crossing between)


def test_mixture_1d_and_check_list_name_the_bad_input() -> None:
    assert mixture_1d("q", {"weights": [1.0], "means": [0.0], "stds": [1.0]}).dim == 1
    with pytest.raises(ValueError, match=r"target_mixture must be a 1-D mixture \(the OT map is 1-D\), got dimension 2"):
        mixture_1d("target_mixture", {"weights": [1.0], "means": [[0.0, 1.0]], "stds": [1.0]},
                   why="the OT map is 1-D")
    with pytest.raises(TypeError, match="a must be a 1-D GaussianMixture"):
        exact_tv_by_crossings("q", gm([1.0], [0.0], [1.0]))
    with pytest.raises(ValueError, match="hi must be > lo"):
        density_crossings(gm([1.0], [0.0], [1.0]), gm([1.0], [1.0], [1.0]), 1.0, 0.0, 10)
    num = lambda name, v: check_finite_number(name, v, minimum=0.0)  # noqa: E731
    assert check_list("betas", (0, 1.5), num) == [0.0, 1.5]
    with pytest.raises(ValueError, match="betas must be a non-empty list, got \\[\\]"):
        check_list("betas", [], num)
    with pytest.raises(ValueError, match=r"betas\[1\] must be a finite number >= 0"):
        check_list("betas", [1.0, -2.0], num)
    with pytest.raises(ValueError, match="non-empty list"):
        check_list("betas", torch.tensor([1.0]), num)
