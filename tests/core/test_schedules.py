"""Tests for gftlib.schedules: shapes, invariants, closed forms and rejected parameters."""

from __future__ import annotations

import math

import numpy as np
import pytest

from gftlib.schedules import SCHEDULES, CoolingSchedule, default_schedule_options, make_schedule, tv_move

KINDS = [
    ("constant", {}),
    ("linear", {}),
    ("cosine", {}),
    ("exponential", {"rate": 0.5}),
    ("exponential", {"rate": 8.0}),
    ("exponential", {"rate": 1e-9}),
    ("step", {"n_stages": 2}),
    ("step", {"n_stages": 5}),
]


@pytest.mark.parametrize("total_steps", [2, 3, 10, 101])
@pytest.mark.parametrize("beta_final", [0.0, 0.25])
@pytest.mark.parametrize("kind,kw", KINDS)
def test_invariants(kind, kw, total_steps, beta_final):
    beta0 = 3.0
    s = make_schedule(kind, beta0, total_steps, beta_final=beta_final, **kw)
    v = s.values()
    assert isinstance(s, CoolingSchedule) and v.shape == (total_steps,) and v.dtype == np.float64
    assert np.all(np.diff(v) <= 0), "non-increasing"
    assert np.all(v <= beta0) and np.all(v >= beta_final)
    assert v[0] == beta0
    final = beta0 if kind == "constant" else beta_final
    assert v[-1] == final and s.final == final
    assert [s(k) for k in range(total_steps)] == v.tolist()


@pytest.mark.parametrize("kind,kw", KINDS)
def test_single_step_gives_final_value(kind, kw):
    s = make_schedule(kind, 2.0, 1, beta_final=0.5, **kw)
    assert s.values().tolist() == [2.0 if kind == "constant" else 0.5]


def test_closed_forms():
    k = np.arange(11)
    u = k / 10
    np.testing.assert_allclose(make_schedule("linear", 4.0, 11).values(), 4 * (1 - u), rtol=0, atol=1e-15)
    np.testing.assert_allclose(make_schedule("cosine", 4.0, 11).values(), 2 * (1 + np.cos(np.pi * u)),
                               rtol=0, atol=1e-14)
    r = 3.0
    expected = 4 * (np.exp(-r * u) - np.exp(-r)) / (1 - np.exp(-r))
    np.testing.assert_allclose(make_schedule("exponential", 4.0, 11, rate=r).values(), expected, rtol=1e-13, atol=1e-15)
    # rate -> 0 limit of the normalised exponential is linear
    np.testing.assert_allclose(make_schedule("exponential", 4.0, 11, rate=1e-8).values(), 4 * (1 - u), atol=1e-7)
    # beta_final shifts and rescales
    np.testing.assert_allclose(make_schedule("linear", 4.0, 11, beta_final=1.0).values(), 1 + 3 * (1 - u), atol=1e-15)
    np.testing.assert_array_equal(make_schedule("constant", 4.0, 11).values(), np.full(11, 4.0))


def test_step_levels_and_stage_lengths():
    s = make_schedule("step", 6.0, 12, n_stages=4)
    v = s.values()
    np.testing.assert_allclose(s.stage_values(), [6.0, 4.0, 2.0, 0.0], atol=1e-15)
    # equal-length stages except the last, which also holds the final step: 12 steps, 4 stages
    runs = [int((v == lvl).sum()) for lvl in s.stage_values()]
    assert sum(runs) == 12 and max(runs) - min(runs) <= 2
    # total_steps == n_stages visits each level once
    np.testing.assert_allclose(make_schedule("step", 3.0, 4, n_stages=4).values(), [3, 2, 1, 0], atol=1e-15)


def test_custom_levels():
    s = make_schedule("custom", None, 4, values=[8, 2, 2, 0.5])
    assert s.values().tolist() == [8, 2, 2, 0.5]
    assert s.beta0 == 8 and s.final == 0.5
    long = make_schedule("custom", 8.0, 9, values=[8, 4, 0])
    v = long.values()
    assert v[0] == 8 and v[-1] == 0 and np.all(np.diff(v) <= 0)
    assert set(v.tolist()) == {8.0, 4.0, 0.0}
    assert make_schedule("custom", None, 1, values=[3, 1]).values().tolist() == [1.0]


def test_stage_moves_formula_and_telescoping():
    for kind, kw in KINDS[1:]:
        s = make_schedule(kind, 5.0, 50, **kw)
        sv = s.stage_values()
        moves = s.stage_moves()
        assert len(moves) == len(sv) - 1
        expected = [tv_move(a, b) for a, b in zip(sv[:-1], sv[1:])]
        np.testing.assert_allclose(moves, expected, rtol=1e-14, atol=0)
        # monotone schedule: the moves telescope to beta0/(1+beta0) - final/(1+final)
        assert math.isclose(moves.sum(), 5 / 6 - 0.0, rel_tol=1e-12)
        assert np.all(moves > 0)
    assert make_schedule("constant", 5.0, 10).stage_moves().size == 0
    assert tv_move(1.0, 0.0) == 0.5


def test_schedule_names():
    assert SCHEDULES == ("constant", "linear", "cosine", "exponential", "step", "custom")


def test_default_options_build_every_documented_kind():
    """What the walkthrough does with its `schedule_kind` parameter: every kind but custom builds from
    make_schedule(kind, beta0, steps, **default_schedule_options(kind)); exponential takes rate 5, step 4
    stages; only constant stops at beta0 > 0."""
    assert default_schedule_options("exponential") == {"rate": 5.0}
    assert default_schedule_options("step") == {"n_stages": 4}
    for kind in SCHEDULES[:-1]:
        sched = make_schedule(kind, 2.0, 300, **default_schedule_options(kind))
        assert sched.values()[0] == 2.0 and sched.final == (2.0 if kind == "constant" else 0.0)
    expo = make_schedule("exponential", 2.0, 300, **default_schedule_options("exponential"))
    np.testing.assert_array_equal(expo.values(), make_schedule("exponential", 2.0, 300, rate=5.0).values())
    with pytest.raises(ValueError, match="schedule_kind must be one of 'constant', 'linear'"):
        default_schedule_options("custom")


# ---------------------------------------------------------------- rejected parameters
def test_invalid_parameters_raise():
    with pytest.raises(ValueError, match="beta0 must be a finite number >= 0, got -1.0"):
        make_schedule("linear", -1.0, 10)
    with pytest.raises(ValueError, match="beta0 must be a finite number >= 0, got nan"):
        make_schedule("linear", float("nan"), 10)
    with pytest.raises(ValueError, match="beta0 must be a finite number >= 0, got inf"):
        make_schedule("cosine", float("inf"), 10)
    with pytest.raises(ValueError, match="total_steps must be an integer >= 1, got 0"):
        make_schedule("linear", 1.0, 0)
    with pytest.raises(TypeError, match="total_steps must be an integer >= 1"):
        make_schedule("linear", 1.0, 2.5)
    with pytest.raises(ValueError, match=r"kind must be one of 'constant', 'linear', 'cosine', 'exponential', "
                                         r"'step', 'custom'; got 'cosin'"):
        make_schedule("cosin", 1.0, 10)
    with pytest.raises(ValueError, match="rate must be a finite number > 0, got 0.0"):
        make_schedule("exponential", 1.0, 10, rate=0.0)
    with pytest.raises(ValueError, match="rate must be a finite number > 0, got -2.0"):
        make_schedule("exponential", 1.0, 10, rate=-2.0)
    with pytest.raises(ValueError, match="needs the option rate"):
        make_schedule("exponential", 1.0, 10)
    with pytest.raises(ValueError, match="n_stages must be an integer >= 2, got 1"):
        make_schedule("step", 1.0, 10, n_stages=1)
    with pytest.raises(ValueError, match="needs the option n_stages"):
        make_schedule("step", 1.0, 10)
    with pytest.raises(ValueError, match="option rate=1.0 does not apply to schedule kind 'linear'"):
        make_schedule("linear", 1.0, 10, rate=1.0)
    with pytest.raises(ValueError, match=r"beta_final must be a finite number >= 0 and <= 1, got 2.0"):
        make_schedule("linear", 1.0, 10, beta_final=2.0)
    with pytest.raises(ValueError, match=r"beta_final must be a finite number >= 0"):
        make_schedule("linear", 1.0, 10, beta_final=-0.5)


def test_invalid_custom_values_raise():
    with pytest.raises(ValueError, match=r"values must be non-increasing; values\[2\]=3 > values\[1\]=1"):
        make_schedule("custom", None, 10, values=[4, 1, 3, 0])
    with pytest.raises(ValueError, match=r"values\[1\] must be a finite number >= 0, got -1.0"):
        make_schedule("custom", None, 10, values=[4, -1.0])
    with pytest.raises(ValueError, match=r"values\[0\] must be a finite number >= 0, got nan"):
        make_schedule("custom", None, 10, values=[float("nan"), 0])
    with pytest.raises(ValueError, match=r"values must be a non-empty list"):
        make_schedule("custom", None, 10, values=[])
    with pytest.raises(ValueError, match=r"needs the option values"):
        make_schedule("custom", None, 10)
    with pytest.raises(ValueError, match=r"beta0 must equal values\[0\]=4"):
        make_schedule("custom", 5.0, 10, values=[4, 0])
    with pytest.raises(ValueError, match=r"beta_final must equal values\[-1\]=0"):
        make_schedule("custom", None, 10, values=[4, 0], beta_final=1.0)
    with pytest.raises(ValueError, match=r"beta0 must be a finite number >= 0 for kind 'linear', got None"):
        make_schedule("linear", None, 10)


def test_step_out_of_range_raises():
    s = make_schedule("linear", 1.0, 5)
    with pytest.raises(ValueError, match=r"step must be an integer in \[0, 4\] \(total_steps=5\), got 5"):
        s(5)
    with pytest.raises(ValueError, match="step must be an integer >= 0, got -1"):
        s(-1)
