"""Every kind of notebook check fails on a wrong input (gftlib.experiments.checks, gftlib.theory.mixture_flows)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.stats
import torch

from gftlib.theory.analytic import GaussianMixture, GaussianMixturePath
from gftlib.experiments.checks import (
    Z_999,
    difference_margin,
    fit_check_prediction,
    fit_check_skip_reason,
    fits_target_from_pretrained,
    floor_tolerance_threshold,
    gain_is_resolvable,
    loss_decrease_skip_reason,
    mixture_pretrained_count,
    mixture_sample,
    mixture_w2_bound,
    null_upper_bound,
    separation_tolerance,
)
from gftlib.experiments.report import Report
from gftlib.eval.metrics import wasserstein2
from gftlib.theory.mixture_flows import (
    check_time_grid,
    ks_against,
    marginal_mixture,
    naive_l2_drift,
    ode_velocity_in_sde_drift,
    run_flows,
)


# ------------------------------------------------------------------------------------ null bounds
def test_null_bound_false_rejection_rate_is_nominal() -> None:
    """Under the null (a new draw from the replicates' normal law) the bound is exceeded at rate 1 - c."""
    rng = np.random.default_rng(0)
    conf, trials, n = 0.95, 4000, 16
    exceed = 0
    for _ in range(trials):
        v = rng.normal(1.0, 0.1, n + 1)
        exceed += v[-1] > null_upper_bound(v[:-1], confidence=conf)
    rate, se = exceed / trials, math.sqrt(0.05 * 0.95 / trials)
    assert abs(rate - 0.05) < 4 * se


def test_null_bound_rejects_a_shifted_statistic() -> None:
    """Wrong input: a statistic from a law shifted by 10 null standard deviations is above the bound."""
    rng = np.random.default_rng(1)
    null = rng.normal(1.0, 0.1, 16)
    assert 2.0 > null_upper_bound(null)          # the check "value <= bound" fails
    assert 1.0 <= null_upper_bound(null)


@pytest.mark.parametrize("values, match", [([1.0], "at least 2"), ([1.0, float("nan")], "finite")])
def test_null_bound_bad_input(values, match) -> None:
    with pytest.raises(ValueError, match=match):
        null_upper_bound(values)


# ------------------------------------------------------------------- floor + tolerance (W2 checks)
def _w2_check(x: torch.Tensor, mix: GaussianMixture, alternatives: list[GaussianMixture], n_null: int = 8):
    """The T2 learned-part check on samples x: (value, threshold)."""
    g = torch.Generator().manual_seed(7)
    ref = mix.sample(x.shape[0], g)
    null = [wasserstein2(ref, mix.sample(x.shape[0], g)) for _ in range(n_null)]
    bound = null_upper_bound(null)
    tol = separation_tolerance([wasserstein2(ref, a.sample(x.shape[0], g)) - bound for a in alternatives])
    return wasserstein2(x, ref), floor_tolerance_threshold(null, tol)


def test_floor_tolerance_check_passes_the_law_and_rejects_an_alternative() -> None:
    q = GaussianMixture.from_dict({"weights": [1.0], "means": [[-2.0, 0.0]], "stds": [0.4]})
    p = GaussianMixture.from_dict({"weights": [1.0], "means": [[2.0, 0.0]], "stds": [0.4]})
    m = q.mix(p, 1.0)
    g = torch.Generator().manual_seed(3)
    value, thr = _w2_check(m.sample(300, g), m, [q, p])
    assert value <= thr
    for wrong in (q, p, q.mix(p, 0.2)):          # the alternatives, and a wrong mixture weight
        value, thr = _w2_check(wrong.sample(300, g), m, [q, p])
        assert value > thr


def test_separation_tolerance_guarantee_and_errors() -> None:
    assert separation_tolerance([2.0, 4.0]) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="fraction must be < 0.5"):
        separation_tolerance([1.0], fraction=0.5)
    with pytest.raises(ValueError, match="must be > 0"):
        separation_tolerance([1.0, -0.1])
    with pytest.raises(ValueError, match="tolerance must be"):
        floor_tolerance_threshold([1.0, 1.1], -1.0)


# ----------------------------------------------------------------------- differences with a margin
def test_difference_margin_false_positive_rate_and_power() -> None:
    """Two evaluations with equal means: 'A < B - margin' at rate Phi(-z); a true gap of 6 SE is found."""
    rng = np.random.default_rng(2)
    se, z = 0.05, float(scipy.stats.norm.isf(0.05))
    margin = difference_margin(se, z=z)
    a, b = rng.normal(1.0, se, 20000), rng.normal(1.0, se, 20000)
    rate = float(np.mean(a < b - margin))
    assert abs(rate - 0.05) < 4 * math.sqrt(0.05 * 0.95 / a.size)
    assert np.mean(rng.normal(1.0 - 6 * se, se, 2000) < b[:2000] - margin) > 0.9
    assert difference_margin(1.0) == pytest.approx(Z_999 * math.sqrt(2))
    assert not gain_is_resolvable(0.1, margin=0.06) and gain_is_resolvable(0.13, margin=0.06)
    assert gain_is_resolvable(0.1, margin=0.06, fraction=1.0) and not gain_is_resolvable(0.05, 0.06, fraction=1.0)


def test_mixture_w2_bound_holds_and_fails_when_violated() -> None:
    """W2((q + beta p)/(1 + beta), q) <= sqrt(beta/(1+beta)) W2(p, q) (convexity); a law further away fails."""
    q = GaussianMixture.from_dict({"weights": [1.0], "means": [[0.0, 0.0]], "stds": [0.3]})
    p = GaussianMixture.from_dict({"weights": [1.0], "means": [[3.0, 0.0]], "stds": [0.3]})
    g = torch.Generator().manual_seed(0)
    xq, xp = q.sample(400, g), p.sample(400, g)
    for beta in (0.25, 1.0, 4.0):
        xm = q.mix(p, beta).sample(400, g)
        bound = mixture_w2_bound(wasserstein2(xp, xq), beta)
        assert wasserstein2(xm, xq) <= bound + 0.1          # 0.1: a generous sampling allowance at n = 400
    wrong = q.mix(p, 9.0).sample(400, g)                    # beta = 9 is not beta = 1
    assert wasserstein2(wrong, xq) > mixture_w2_bound(wasserstein2(xp, xq), 1.0) + 0.1


# ------------------------------------------------------------------------- which checks apply
def test_fits_target_from_pretrained() -> None:
    assert fits_target_from_pretrained("ft") and fits_target_from_pretrained("ft-ot")
    assert fits_target_from_pretrained("gft-coupling", 0.0)
    assert not fits_target_from_pretrained("gft-coupling", 2.0)      # constant schedule
    assert not fits_target_from_pretrained("scratch") and not fits_target_from_pretrained("reflow")
    with pytest.raises(ValueError, match="schedule_final is required"):
        fits_target_from_pretrained("l2-reg")
    with pytest.raises(ValueError, match="method must be one of"):
        fits_target_from_pretrained("gft")


def test_fit_check_prediction_follows_where_the_schedule_ends() -> None:
    """The walkthrough's numbers (smoke, seed 0): W2(p_pre, q) 0.563, floor 0.149, margin 0.124. A cooling
    schedule (beta_final = 0) predicts the floor and has power; a constant schedule at beta0 = 2 predicts
    sqrt(2/3) 0.563 = 0.459, a gain below the margin, so its check is not asserted; at beta0 = 0.25 it is."""
    assert fit_check_prediction(0.563, 0.149, 0.0, 0.124) == (0.149, True)
    pred, powered = fit_check_prediction(0.563, 0.149, 2.0, 0.124)
    assert pred == pytest.approx(math.sqrt(2 / 3) * 0.563) and not powered
    pred, powered = fit_check_prediction(0.563, 0.149, 0.25, 0.124)
    assert pred == pytest.approx(math.sqrt(0.2) * 0.563) and powered
    # a model at the prediction passes the check "W2 <= W2_pre - margin" whenever the check is asserted
    for beta in (0.0, 0.1, 0.25, 0.5, 1.0, 2.0, 8.0):
        pred, powered = fit_check_prediction(0.563, 0.149, beta, 0.124)
        assert powered == (pred <= 0.563 - 0.124)
    with pytest.raises(ValueError, match="beta must be a finite number >= 0"):
        fit_check_prediction(0.563, 0.149, -1.0, 0.124)
    with pytest.raises(ValueError, match="floor must be a finite number >= 0"):
        fit_check_prediction(0.563, float("nan"), 0.0, 0.124)


@pytest.mark.parametrize("method, final, match", [
    ("scratch", None, "random init"), ("reflow", None, "no target term"),
    ("gft-coupling", 2.0, "ends at beta = 2 > 0"), ("gft-drift", 0.5, "T2's mixture"), ("l2-reg", 1e-3, "beta = 0.001"),
])
def test_fit_check_skip_reason_names_the_failed_premise(method, final, match) -> None:
    assert match in fit_check_skip_reason(method, final)
    assert not fits_target_from_pretrained(method, final)


def test_fit_check_applies_to_every_finetuning_method_that_ends_at_zero() -> None:
    for m in ("ft", "ft-ot", "l2-reg", "gft-drift", "gft-coupling"):
        assert fit_check_skip_reason(m, 0.0) is None
    assert fit_check_skip_reason("ft", 3.0) is None          # unscheduled: the schedule does not matter
    with pytest.raises(ValueError, match="schedule_final must be a finite number >= 0"):
        fit_check_skip_reason("gft-drift", -1.0)


def test_loss_decrease_check_applies_to_every_run_with_a_target_term_that_ends_at_zero() -> None:
    for m in ("scratch", "ft", "ft-ot"):                      # unscheduled (scratch: from the zero-output init)
        assert loss_decrease_skip_reason(m) is None and loss_decrease_skip_reason(m, 2.0) is None
    for m in ("l2-reg", "gft-drift", "gft-coupling"):
        assert loss_decrease_skip_reason(m, 0.0) is None
        assert "ends at beta = 2 > 0" in loss_decrease_skip_reason(m, 2.0)    # constant schedule
    assert "no target term" in loss_decrease_skip_reason("reflow")
    with pytest.raises(ValueError, match="schedule_final is required"):
        loss_decrease_skip_reason("gft-drift")
    with pytest.raises(ValueError, match="method must be one of"):
        loss_decrease_skip_reason("gft")


def test_mixture_sample_is_the_mixture_and_a_wrong_weight_is_rejected() -> None:
    """T2's mixture check (E4, constant schedule): a model at m_1 is resolvably closer to mixture_sample(q, p, 1)
    than to q; a model at q (plain fine-tuning, which a constant schedule cannot reach) is not. (The check
    tells "at the mixture" from "at the target" only: a law between m_1 and p passes it too.)"""
    q = GaussianMixture.from_dict({"weights": [1.0], "means": [[0.0, 0.0]], "stds": [0.3]})
    p = GaussianMixture.from_dict({"weights": [1.0], "means": [[3.0, 0.0]], "stds": [0.3]})
    g = torch.Generator().manual_seed(0)
    n = 400
    ref = mixture_sample(q.sample(n, g), p.sample(n, g), 1.0)
    assert ref.shape == (n, 2) and mixture_pretrained_count(n, 1.0) == 200
    assert int((ref[:, 0] > 1.5).sum()) == 200                 # exactly k points from p
    held = q.sample(n, g)
    floors = [wasserstein2(q.sample(n, g), held) for _ in range(8)]
    margin = difference_margin(float(np.std(floors, ddof=1)))
    at_mix, at_q = q.mix(p, 1.0).sample(n, g), q.sample(n, g)
    assert wasserstein2(at_mix, ref) <= wasserstein2(at_mix, held) - margin
    assert not wasserstein2(at_q, ref) <= wasserstein2(at_q, held) - margin


def test_mixture_sample_bad_input() -> None:
    x = torch.zeros(10, 2)
    assert mixture_pretrained_count(10, 0.0) == 0 and torch.equal(mixture_sample(x, x[:0], 0.0), x)
    with pytest.raises(ValueError, match="pretrained must hold at least 9 points"):
        mixture_sample(x, torch.ones(3, 2), 8.0)
    with pytest.raises(ValueError, match="pretrained must have dimension 2"):
        mixture_sample(x, torch.ones(10, 3), 1.0)
    with pytest.raises(ValueError, match="beta must be a finite number >= 0"):
        mixture_pretrained_count(10, -1.0)
    with pytest.raises(TypeError, match="n must be an integer >= 1"):
        mixture_pretrained_count(2.5, 1.0)


def test_report_check_records_a_failed_bound() -> None:
    r = Report("t0_demo", {})
    assert not r.check("bound", 2.0, 1.0, reason="x").passed
    assert r.check("rejected control", 2.0, 1.0, op=">", reason="x").passed
    assert not r.check("non-finite", float("nan"), 1.0, reason="x").passed


# ---------------------------------------------------------------------------- mixture flows (T2)
Q = GaussianMixture.from_dict({"weights": [0.35, 0.65], "means": [-2.0, 1.5], "stds": [0.35, 0.5]})
P = GaussianMixture.from_dict({"weights": [0.5, 0.5], "means": [-0.5, 3.0], "stds": [0.5, 0.4]})
TP, PP = GaussianMixturePath(Q), GaussianMixturePath(P)


def _ks_crit(n: int, alpha: float = 1e-3) -> float:
    return float(scipy.stats.kstwo.isf(alpha, n))


def test_run_flows_reaches_the_mixture_and_ks_rejects_a_wrong_law(single_thread) -> None:
    n, beta = 3000, 1.0
    out = run_flows(TP, PP, beta, n, torch.Generator().manual_seed(0), diffusion=1.0, ode_steps=16,
                    sde_steps=200)
    assert set(out) == {("ode", 0.5), ("ode", 1.0), ("sde", 0.5), ("sde", 1.0)}
    for (proc, t), x in out.items():
        assert x.shape == (n, 1) and x.dtype == torch.float64
        assert ks_against(x, marginal_mixture(TP, PP, t, beta)) < _ks_crit(n)
    # wrong input: the same particles against the target alone, or another temperature
    assert ks_against(out[("ode", 1.0)], Q) > _ks_crit(n)
    assert ks_against(out[("ode", 1.0)], marginal_mixture(TP, PP, 1.0, 0.25)) > _ks_crit(n)


def test_negative_controls_fail_the_mixture_test(single_thread) -> None:
    n, beta = 3000, 1.0
    naive = run_flows(TP, PP, beta, n, torch.Generator().manual_seed(1), diffusion=1.0, ode_steps=16,
                      sde_steps=200, times=(1.0,), processes=("ode",), ode_field=naive_l2_drift(TP, PP, beta))
    assert ks_against(naive[("ode", 1.0)], marginal_mixture(TP, PP, 1.0, beta)) > _ks_crit(n)
    wrong = run_flows(TP, PP, 3.0, n, torch.Generator().manual_seed(2), diffusion=1.5, ode_steps=16,
                      sde_steps=400, times=(1.0,), processes=("sde",),
                      drift=ode_velocity_in_sde_drift(TP, PP, 3.0, 1.5))
    assert set(wrong) == {("sde", 1.0)}
    assert ks_against(wrong[("sde", 1.0)], marginal_mixture(TP, PP, 1.0, 3.0)) > _ks_crit(n)


@pytest.mark.parametrize("kwargs, match", [
    ({"processes": ("ode", "pde")}, "processes must be"),
    ({"times": (0.5, 0.25)}, "increasing"),
    ({"ode_steps": 3}, "ode_steps=3 puts no grid point at t=0.5"),
])
def test_run_flows_bad_input(kwargs, match) -> None:
    base = dict(diffusion=1.0, ode_steps=4, sde_steps=4)
    base.update(kwargs)
    with pytest.raises(ValueError, match=match):
        run_flows(TP, PP, 1.0, 10, torch.Generator().manual_seed(0), **base)
    with pytest.raises(TypeError, match="tpath must be a GaussianMixturePath"):
        run_flows(Q, PP, 1.0, 10, torch.Generator(), diffusion=1.0, ode_steps=4, sde_steps=4)
    assert check_time_grid((0.5, 1.0), 4) == (0.5, 1.0)
