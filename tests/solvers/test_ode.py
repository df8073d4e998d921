"""Tests of gftlib.solvers.ode against closed-form solutions: order, tolerance, NFE, path length."""

from __future__ import annotations

import math

import pytest
import torch

from gftlib.solvers.common import SampleResult
from gftlib.solvers.ode import EVALS_PER_STEP, ODE_METHODS, sample_ode

from solver_helpers import A, linear_field, linear_exact, Counting

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def x0_lin():
    return torch.randn(16, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)


@pytest.mark.parametrize("method,order,n", [("euler", 1, 64), ("midpoint", 2, 32), ("rk4", 4, 8)])
def test_convergence_order(method, order, n, x0_lin):
    exact = linear_exact(x0_lin)
    err = [float((sample_ode(linear_field, x0_lin, method=method, steps=s).x - exact).abs().max())
           for s in (n, 2 * n)]
    observed = math.log2(err[0] / err[1])
    assert abs(observed - order) < 0.3, (err, observed)


def test_dopri5_tolerance(x0_lin):
    exact = linear_exact(x0_lin)
    errs = []
    for tol in (1e-6, 1e-9):
        res = sample_ode(linear_field, x0_lin, method="dopri5", atol=tol, rtol=tol)
        err = float((res.x - exact).abs().max())
        # Local errors are controlled to tol * (1 + |x|); a handful of tens of steps accumulate them.
        scale = 1.0 + float(x0_lin.abs().max())
        assert err < 100 * tol * scale, (tol, err)
        errs.append(err)
    assert errs[1] < errs[0]


@pytest.mark.parametrize("method", ODE_METHODS)
def test_nfe_counts_match_calls(method, x0_lin):
    counting = Counting(linear_field)
    res = sample_ode(counting, x0_lin, method=method, steps=7)
    assert res.nfe == counting.calls
    if method in EVALS_PER_STEP:
        assert res.nfe == EVALS_PER_STEP[method] * 7
    else:
        assert res.nfe > 0


@pytest.mark.parametrize("method", ODE_METHODS)
def test_constant_field_length_and_straightness(method):
    v = torch.tensor([3.0, -4.0, 12.0], dtype=torch.float64)  # |v| = 13
    x0 = torch.randn(5, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    res = sample_ode(lambda x, t: v.expand_as(x), x0, method=method, steps=5, t0=0.25, t1=0.75)
    torch.testing.assert_close(res.path_length, torch.full((5,), 13.0 * 0.5, dtype=torch.float64))
    torch.testing.assert_close(res.x, x0 + 0.5 * v)
    torch.testing.assert_close(res.straightness, torch.ones(5, dtype=torch.float64))


def test_rotation_field_length_is_radius_times_angle():
    omega = 2.0  # angle swept over [0, 1]
    radius = torch.tensor([0.5, 1.0, 3.0], dtype=torch.float64)
    x0 = torch.stack([radius, torch.zeros(3, dtype=torch.float64)], dim=1)

    def rot(x, t):
        return omega * torch.stack([-x[:, 1], x[:, 0]], dim=1)

    res = sample_ode(rot, x0, method="rk4", steps=64)
    torch.testing.assert_close(res.path_length, radius * omega, rtol=1e-7, atol=0)
    chord_over_arc = 2 * math.sin(omega / 2) / omega
    torch.testing.assert_close(res.straightness, torch.full((3,), chord_over_arc, dtype=torch.float64),
                               rtol=1e-7, atol=0)
    res5 = sample_ode(rot, x0, method="dopri5", atol=1e-9, rtol=1e-9)
    torch.testing.assert_close(res5.path_length, radius * omega, rtol=1e-6, atol=0)


def test_zero_field_straightness_is_one():
    x0 = torch.randn(4, 2, generator=torch.Generator().manual_seed(2))
    res = sample_ode(lambda x, t: torch.zeros_like(x), x0, method="euler", steps=3)
    assert torch.equal(res.path_length, torch.zeros(4))
    assert torch.equal(res.straightness, torch.ones(4))


def test_images_dtype_and_trajectory():
    x0 = torch.randn(3, 2, 4, 4, generator=torch.Generator().manual_seed(3), dtype=torch.float32)
    res = sample_ode(lambda x, t: -t[:, None, None, None] * x, x0, method="midpoint", steps=4,
                     return_trajectory=True)
    assert isinstance(res, SampleResult)
    assert res.x.shape == x0.shape and res.x.dtype == torch.float32
    assert res.path_length.shape == (3,) and res.straightness.shape == (3,)
    assert res.trajectory.shape == (5, 3, 2, 4, 4)
    torch.testing.assert_close(res.times, torch.linspace(0, 1, 5))
    torch.testing.assert_close(res.trajectory[0], x0)
    torch.testing.assert_close(res.trajectory[-1], res.x)
    # dx/dt = -t x: x(1) = exp(-1/2) x0 (midpoint is second order: error ~ 1e-3 at 4 steps)
    torch.testing.assert_close(res.x, math.exp(-0.5) * x0, rtol=5e-3, atol=5e-3)
    assert res.x.requires_grad is False


def test_dopri5_trajectory_times(x0_lin):
    res = sample_ode(linear_field, x0_lin, method="dopri5", atol=1e-9, rtol=1e-9, trajectory_times=[0.5, 1.0])
    assert res.trajectory.shape == (2, 16, 2)
    exact_half = x0_lin @ torch.linalg.matrix_exp((0.5 + 0.125) * A).T  # int_0^0.5 (1 + t) dt
    torch.testing.assert_close(res.trajectory[0], exact_half, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(res.trajectory[1], res.x)
    with pytest.raises(ValueError, match="trajectory_times"):
        sample_ode(linear_field, x0_lin, method="dopri5", return_trajectory=True)


def test_grad_flag():
    w = torch.tensor(0.5, requires_grad=True)
    x0 = torch.ones(2, 2)
    res = sample_ode(lambda x, t: w * x, x0, method="euler", steps=2)
    assert not res.x.requires_grad
    res = sample_ode(lambda x, t: w * x, x0, method="euler", steps=2, grad=True)
    res.x.sum().backward()
    # x(1) = (1 + w/2)^2 x0 -> d/dw sum = 4 * 2 * (1 + w/2) * 1/2
    torch.testing.assert_close(w.grad, torch.tensor(4 * (1 + 0.25)))


@pytest.mark.parametrize(
    "kwargs,exc,match",
    [
        ({"method": "rk45"}, ValueError, "method must be one of"),
        ({"steps": 0}, ValueError, "steps must be an integer >= 1"),
        ({"atol": 0.0}, ValueError, "atol must be a finite number > 0"),
        ({"rtol": -1e-3}, ValueError, "rtol must be a finite number > 0"),
        ({"t0": 1.0, "t1": 0.0}, ValueError, "t0 must be < t1"),
        ({"trajectory_times": [0.5, 0.2]}, ValueError, "strictly increasing"),
        ({"trajectory_times": [0.5, 1.5]}, ValueError, r"lie in \[t0, t1\]"),
    ],
)
def test_sample_ode_rejects_bad_arguments(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        sample_ode(linear_field, torch.zeros(2, 2, dtype=torch.float64), **kwargs)


def test_sample_ode_rejects_bad_inputs():
    with pytest.raises(ValueError, match="at least 2 dimensions"):
        sample_ode(linear_field, torch.zeros(3))
    with pytest.raises(ValueError, match="finite"):
        sample_ode(linear_field, torch.tensor([[float("nan"), 0.0]]))
    with pytest.raises(ValueError, match="field must return a tensor of shape"):
        sample_ode(lambda x, t: x[:, :1], torch.zeros(2, 2))


@pytest.mark.parametrize("tol", [1e-4, 1e-5])
def test_dopri5_nfe_and_samples_equal_the_plain_solve_of_x(tol: float) -> None:
    """The path length rides along: step control, NFE and samples are those of solving x alone."""
    from torchdiffeq import odeint

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(3, 32), torch.nn.Tanh(), torch.nn.Linear(32, 2)).double()

    def field(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return net(torch.cat([x, t[:, None]], dim=1)) * 3.0 + torch.sin(4 * x)

    x0 = torch.randn(256, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    calls = [0]

    def rhs(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        calls[0] += 1
        return field(x, t.expand(x.shape[0]))

    with torch.no_grad():
        plain = odeint(rhs, x0, torch.tensor([0.0, 1.0], dtype=torch.float64), method="dopri5",
                       atol=tol, rtol=tol)[-1]
        res = sample_ode(field, x0, method="dopri5", atol=tol, rtol=tol)
    assert res.nfe == calls[0]
    assert torch.equal(res.x, plain)
    # the length is as accurate as the samples (against a fine fixed-step RK4 reference)
    ref = sample_ode(field, x0, method="rk4", steps=400)
    rel_len_err = ((res.path_length - ref.path_length).abs() / ref.path_length).max()
    assert rel_len_err <= (res.x - ref.x).abs().max()
