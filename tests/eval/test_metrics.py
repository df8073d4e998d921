"""Tests of gftlib.eval.metrics against closed forms and reference implementations."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.linalg
import scipy.stats
import torch

from gftlib.eval.metrics import (
    frechet_distance,
    ks_statistic,
    ks_two_sample,
    mean_path_length,
    mean_straightness,
    mmd_rbf,
    sliced_wasserstein,
    wasserstein2,
)
from gftlib.solvers.common import SampleResult

torch.set_num_threads(1)


def gen(seed):
    return torch.Generator().manual_seed(seed)


# ------------------------------------------------------------------------------- Wasserstein

def test_w2_of_shifted_copy_is_the_shift():
    # cost |x_i - x_j - v|^2: the identity pairing is optimal, so W2 = |v| exactly.
    x = torch.randn(120, 5, generator=gen(0), dtype=torch.float64)
    v = torch.tensor([0.3, -1.0, 2.0, 0.0, 0.5], dtype=torch.float64)
    assert wasserstein2(x, x + v) == pytest.approx(float(v.norm()), rel=1e-9)
    # unequal sizes: y = every point of x twice, shifted -> still |v|
    assert wasserstein2(x, torch.cat([x, x]) + v) == pytest.approx(float(v.norm()), rel=1e-9)


def test_w2_of_scaled_copy():
    # y = c x (c > 0): identity pairing optimal (rearrangement), W2^2 = (1 - c)^2 mean |x|^2.
    x = torch.randn(100, 3, generator=gen(1), dtype=torch.float64)
    expected = abs(1 - 2.5) * math.sqrt(float((x ** 2).sum(1).mean()))
    assert wasserstein2(x, 2.5 * x) == pytest.approx(expected, rel=1e-9)


def test_w2_flattens_images():
    x = torch.randn(30, 2, 3, 3, generator=gen(2), dtype=torch.float64)
    v = torch.randn(2, 3, 3, generator=gen(3), dtype=torch.float64)
    assert wasserstein2(x, x + v) == pytest.approx(float(v.norm()), rel=1e-9)


def test_w2_gaussians_closed_form():
    # Brenier map between N(m1, I) and N(m2, S): T(x) = m2 + S^{1/2}(x - m1), the gradient of a convex
    # function, so pairing x_i with T(x_i) is optimal for the empirical measures too:
    # W2^2(X, T(X)) = mean |x_i - T x_i|^2 exactly, and that mean -> W2^2(mu, nu) with a CLT error.
    n = 400
    m1, m2 = np.array([0.0, 0.0]), np.array([3.0, -1.0])
    s2 = np.array([[2.0, 0.6], [0.6, 0.5]])
    root = scipy.linalg.sqrtm(s2).real
    x = torch.randn(n, 2, generator=gen(4), dtype=torch.float64).numpy() + m1
    y = m2 + (x - m1) @ root.T
    w2 = wasserstein2(torch.from_numpy(x), torch.from_numpy(y))
    per_point = ((x - y) ** 2).sum(1)
    assert w2 ** 2 == pytest.approx(per_point.mean(), rel=1e-9)
    closed = np.sum((m1 - m2) ** 2) + np.trace(np.eye(2) + s2 - 2 * root)
    se = per_point.std(ddof=1) / math.sqrt(n)
    assert abs(w2 ** 2 - closed) < 4 * se


def test_w2_1d_matches_sorted_formula():
    x = torch.randn(200, generator=gen(5), dtype=torch.float64)
    y = 2 * torch.randn(200, generator=gen(6), dtype=torch.float64) + 1
    ref = math.sqrt(float(((torch.sort(x)[0] - torch.sort(y)[0]) ** 2).mean()))
    assert wasserstein2(x[:, None], y[:, None]) == pytest.approx(ref, rel=1e-9)


@pytest.mark.parametrize("m", [150, 77])
def test_sliced_equals_exact_in_1d(m):
    x = torch.randn(150, 1, generator=gen(7), dtype=torch.float64)
    y = 1.5 * torch.randn(m, 1, generator=gen(8), dtype=torch.float64) - 0.5
    assert sliced_wasserstein(x, y, n_projections=4) == pytest.approx(wasserstein2(x, y), rel=1e-9)


def test_sliced_shift_closed_form_and_determinism():
    # For y = x + v, each 1-D slice is a shift by theta.v, so SW^2 = mean_theta (theta.v)^2 -> |v|^2 / d.
    d = 4
    x = torch.randn(300, d, generator=gen(9), dtype=torch.float64)
    v = torch.tensor([2.0, 0.0, 0.0, 0.0], dtype=torch.float64)
    sw = sliced_wasserstein(x, x + v, n_projections=2000, generator=gen(10))
    # (theta_1)^2 ~ Beta(1/2, (d-1)/2): mean 1/d, var 2(d-1)/(d^2 (d+2)); 4 standard errors of the mean.
    var_c = 2 * (d - 1) / (d * d * (d + 2))
    assert abs(sw ** 2 - 4.0 / d) < 4 * 4.0 * math.sqrt(var_c / 2000)
    assert sliced_wasserstein(x, x + v, n_projections=50, generator=gen(1)) == \
        sliced_wasserstein(x, x + v, n_projections=50, generator=gen(1))
    assert sliced_wasserstein(x, x) == 0.0


# ------------------------------------------------------------------------------------- MMD

def _permutation_std(x, y, reps=30, seed=0):
    pooled = torch.cat([x, y])
    g = gen(seed)
    vals = []
    for _ in range(reps):
        p = torch.randperm(pooled.shape[0], generator=g)
        vals.append(mmd_rbf(pooled[p[: x.shape[0]]], pooled[p[x.shape[0]:]]))
    return float(np.std(vals, ddof=1))


def test_mmd_same_distribution_is_small_and_shift_is_positive():
    x = torch.randn(250, 2, generator=gen(11), dtype=torch.float64)
    y = torch.randn(250, 2, generator=gen(12), dtype=torch.float64)
    null_std = _permutation_std(x, y)
    assert abs(mmd_rbf(x, y)) < 4 * null_std
    shifted = y + torch.tensor([1.0, 0.0], dtype=torch.float64)
    assert mmd_rbf(x, shifted) > 10 * null_std


def test_mmd_unbiased_formula_single_bandwidth():
    x = torch.randn(6, 3, generator=gen(13), dtype=torch.float64)
    y = torch.randn(5, 3, generator=gen(14), dtype=torch.float64) + 0.5
    h = 1.3

    def k(a, b):
        return math.exp(-float(((a - b) ** 2).sum()) / (2 * h * h))

    kxx = sum(k(x[i], x[j]) for i in range(6) for j in range(6) if i != j) / 30
    kyy = sum(k(y[i], y[j]) for i in range(5) for j in range(5) if i != j) / 20
    kxy = sum(k(x[i], y[j]) for i in range(6) for j in range(5)) / 30
    assert mmd_rbf(x, y, bandwidths=[h]) == pytest.approx(kxx + kyy - 2 * kxy, rel=1e-10)


def test_mmd_rejects_bad_bandwidth():
    x = torch.zeros(3, 2)
    with pytest.raises(ValueError, match=r"bandwidths\[i\] must be a finite number > 0"):
        mmd_rbf(x, x, bandwidths=[1.0, 0.0])
    with pytest.raises(ValueError, match="at least 2 samples"):
        mmd_rbf(torch.zeros(1, 2), x)


# -------------------------------------------------------------------------------------- KS

def test_ks_statistic_matches_scipy():
    x = torch.randn(500, generator=gen(15), dtype=torch.float64) * 1.1 + 0.1
    ref = scipy.stats.kstest(x.numpy(), scipy.stats.norm.cdf).statistic
    assert ks_statistic(x, lambda t: torch.special.ndtr(t)) == pytest.approx(ref, abs=1e-12)
    assert ks_statistic(x, scipy.stats.norm.cdf) == pytest.approx(ref, abs=1e-12)


def test_ks_statistic_small_for_correct_cdf():
    n = 4000
    x = torch.rand(n, generator=gen(16), dtype=torch.float64)
    # P(sqrt(n) D > 1.95) ~ 0.001 (Kolmogorov distribution)
    assert ks_statistic(x, lambda t: t.clamp(0, 1)) < 1.95 / math.sqrt(n)
    assert ks_statistic(x, lambda t: t.clamp(0, 1) ** 2) > 0.2  # sup |u - u^2| = 1/4


def test_ks_two_sample():
    a = torch.randn(300, generator=gen(17), dtype=torch.float64)
    b = torch.randn(200, generator=gen(18), dtype=torch.float64) + 0.3
    assert ks_two_sample(a, b) == pytest.approx(scipy.stats.ks_2samp(a.numpy(), b.numpy()).statistic)
    assert ks_two_sample(a, a) == 0.0
    with pytest.raises(ValueError, match="non-empty 1-D"):
        ks_two_sample(torch.zeros(3, 2), a)


# ---------------------------------------------------------------------------------- Fréchet

def _with_exact_moments(n, mu, cov, seed):
    """Samples whose sample mean and sample covariance (ddof=1) equal mu and cov exactly."""
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((n, len(mu)))
    z = z - z.mean(0)
    z = z @ np.linalg.inv(np.linalg.cholesky(np.cov(z, rowvar=False))).T  # whiten exactly
    return mu + z @ np.linalg.cholesky(cov).T


@pytest.mark.parametrize("method", ["sqrtm", "eigh"])
def test_frechet_matches_closed_form(method):
    mu1, mu2 = np.array([0.0, 1.0, -1.0]), np.array([0.5, 0.0, 2.0])
    b1 = np.array([[1.0, 0.2, 0.0], [0.0, 1.0, 0.3], [0.1, 0.0, 0.8]])
    b2 = np.array([[2.0, 0.0, 0.5], [0.3, 0.7, 0.0], [0.0, 0.1, 1.5]])
    s1, s2 = b1 @ b1.T, b2 @ b2.T
    r1 = scipy.linalg.sqrtm(s1).real
    closed = np.sum((mu1 - mu2) ** 2) + np.trace(s1 + s2 - 2 * scipy.linalg.sqrtm(r1 @ s2 @ r1).real)
    fa, fb = _with_exact_moments(50, mu1, s1, 0), _with_exact_moments(70, mu2, s2, 1)
    assert frechet_distance(torch.from_numpy(fa), fb, method=method) == pytest.approx(closed, rel=1e-8)


@pytest.mark.parametrize("method", ["sqrtm", "eigh"])
def test_frechet_identical_is_zero(method):
    f = torch.randn(100, 8, generator=gen(19), dtype=torch.float64)
    assert frechet_distance(f, f, method=method) == pytest.approx(0.0, abs=1e-8)
    # singular covariance (fewer samples than features) still works
    g = torch.randn(5, 8, generator=gen(20), dtype=torch.float64)
    assert frechet_distance(g, g, method=method) == pytest.approx(0.0, abs=1e-4)


def test_frechet_methods_agree_on_singular_covariances():
    a = torch.randn(10, 20, generator=gen(21), dtype=torch.float64)
    b = 1.5 * torch.randn(12, 20, generator=gen(22), dtype=torch.float64) + 0.2
    assert frechet_distance(a, b, method="sqrtm") == pytest.approx(frechet_distance(a, b, method="eigh"),
                                                                    rel=1e-4)


def test_frechet_rejects_mismatch():
    with pytest.raises(ValueError, match="same feature dimension"):
        frechet_distance(torch.zeros(4, 3), torch.zeros(4, 2))
    with pytest.raises(ValueError, match="finite"):
        frechet_distance(torch.full((4, 3), float("nan")), torch.zeros(4, 3))
    with pytest.raises(ValueError, match="method must be one of"):
        frechet_distance(torch.zeros(4, 3), torch.zeros(4, 3), method="svd")


# ------------------------------------------------------------------------- sampler summaries

def test_path_summaries():
    r = SampleResult(x=torch.zeros(3, 2), nfe=1, path_length=torch.tensor([1.0, 2.0, 3.0]),
                     straightness=torch.tensor([1.0, 0.5, 0.0]))
    assert mean_path_length(r) == pytest.approx(2.0)
    assert mean_straightness(r) == pytest.approx(0.5)
    with pytest.raises(TypeError, match="SampleResult"):
        mean_path_length(torch.zeros(3))


def test_input_validation():
    with pytest.raises(ValueError, match="same number of features"):
        wasserstein2(torch.zeros(3, 2), torch.zeros(3, 3))
    with pytest.raises(ValueError, match="n_projections must be an integer >= 1"):
        sliced_wasserstein(torch.zeros(3, 2), torch.zeros(3, 2), n_projections=0)
    with pytest.raises(TypeError, match="torch.Tensor or numpy array"):
        wasserstein2([[0.0]], torch.zeros(1, 1))
    with pytest.raises(ValueError, match="finite"):
        wasserstein2(torch.tensor([[float("inf")]]), torch.zeros(1, 1))
