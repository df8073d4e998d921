"""E5's scenario runners (gftlib.experiments.scenarios) and setup (gftlib.experiments.scenario_setup)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from gftlib.experiments import scenarios as SC
from gftlib.experiments.checks import Z_999, difference_margin
from gftlib.experiments.claims import apply_holm
from gftlib.experiments.profiles import resolve_parameters
from gftlib.experiments.scenario_setup import PROFILE_TABLE, claim_rows, resolve_setup
from gftlib.experiments.tasks import toy2d as T2

TINY = dict(n_target=16, n_target_pool=64, n_heldout=32, n_eval=32, n_source=128, hidden=8, depth=2,
            time_features=4, pretrain_steps=10, pretrain_batch=32, eval_steps=4)


def tiny_task(seed: int = 0, **kw) -> T2.Task2D:
    return T2.Task2D(**{**TINY, **kw, "seed": seed})


def tiny_budget(**kw) -> SC.Budget:
    base = dict(steps=6, batch_size=16, cache_size=32, n_trajectories=16, refresh_every=3, em_steps=8)
    return SC.Budget(**{**base, **kw})


@pytest.mark.parametrize("kw, match", [
    ({"steps": 0}, "steps must be an integer >= 1"),
    ({"n_evals": 7}, r"n_evals must be an integer in \[1, steps=6\]"),
    ({"lr": -1.0}, "lr must be a finite number > 0"),
    ({"diffusion": -0.5}, "diffusion must be a finite number >= 0"),
    ({"diffusion": 0.5, "t_eps": 0.0}, "t_eps must be > 0 when diffusion > 0"),
    ({"schedule_kind": "cosin"}, "schedule_kind must be one of"),
    ({"batch_size": 1}, "batch_size must be an integer >= 2"),
])
def test_budget_rejects_bad_values(kw, match) -> None:
    with pytest.raises(ValueError, match=match):
        tiny_budget(**kw)


def test_budget_ends_at_zero_only_for_cooling_schedules() -> None:
    assert tiny_budget().ends_at_zero("gft-drift") and tiny_budget().ends_at_zero("ft")
    const = tiny_budget(schedule_kind="constant")
    assert not const.ends_at_zero("gft-coupling") and not const.ends_at_zero("l2-reg") and const.ends_at_zero("ft-ot")
    assert tiny_budget(schedule_kind="constant", beta0=0.0).ends_at_zero("gft-drift")


def test_budget_eval_steps_and_interpolant() -> None:
    assert tiny_budget().eval_steps().tolist() == [6]
    assert tiny_budget(n_evals=3).eval_steps().tolist() == [0, 2, 4, 6]
    assert tiny_budget().interpolant().sigma == 0.0
    it = tiny_budget(diffusion=0.5).interpolant()
    assert it.sigma == 0.5 and it.t_eps > 0


def test_run_scenario_refuses_methods_outside_the_scenarios(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("GFT_CACHE_DIR", str(tmp_path))
    with pytest.raises(ValueError, match="method must be one of"):
        SC.run_scenario(tiny_task(), "reflow", tiny_budget())
    with pytest.raises(ValueError, match="methods\\[\\] must be one of"):
        SC.run_scenario(tiny_task(), "gft", tiny_budget())


@pytest.mark.parametrize("diffusion, method", [(0.0, "gft-coupling"), (0.0, "l2-reg"), (0.5, "gft-drift"),
                                              (0.5, "gft-coupling")])
def test_run_scenario_records_final_metrics_and_is_cached(tmp_path, monkeypatch, single_thread,
                                                          diffusion, method) -> None:
    monkeypatch.setenv("GFT_CACHE_DIR", str(tmp_path))
    task, budget = tiny_task(), tiny_budget(diffusion=diffusion, n_evals=2)
    run = SC.run_scenario(task, method, budget)
    assert run.eval_steps.tolist() == [0, 3, 6] and run.w2.shape == (3,)
    assert run.final["w2"] == pytest.approx(run.w2[-1])
    keys = {"w2", "path_length", "straightness", "mem_closer_to_train", "mem_ratio", "mem_z"}
    assert keys <= set(run.final)
    assert ("dopri_nfe" in run.final) == (diffusion == 0)
    assert all(math.isfinite(v) for k, v in run.final.items() if k != "mem_z")
    assert run.samples.shape == (task.n_eval, 2)
    assert run.log_steps.size == run.loss_target.size == run.beta.size > 0
    n_files = len(list(tmp_path.glob("*.pt")))
    again = SC.run_scenario(task, method, budget)
    assert len(list(tmp_path.glob("*.pt"))) == n_files  # loaded, not rebuilt
    assert np.array_equal(again.w2, run.w2)
    stab = SC.curve_stability([run])
    assert set(stab) == set(SC.STABILITY_KEYS) and stab["max_jump"][0] >= 0 and stab["w2_iv"][0] >= 0
    assert -1 <= stab["spearman"][0] <= 1
    level, speed = SC.steps_to_level({method: [run]})
    assert level == pytest.approx(1.05 * run.w2[-1]) and speed[method][0] <= 6


def test_runs_are_deterministic_without_the_cache(tmp_path, monkeypatch, single_thread) -> None:
    task, budget = tiny_task(seed=3), tiny_budget(diffusion=0.5)
    finals = []
    for sub in ("a", "b"):
        monkeypatch.setenv("GFT_CACHE_DIR", str(tmp_path / sub))
        finals.append(SC.run_scenario(task, "ft-ot", budget).final)
    assert finals[0] == finals[1]


def test_sde_sampling_uses_common_noise_per_task(tmp_path, monkeypatch, single_thread) -> None:
    monkeypatch.setenv("GFT_CACHE_DIR", str(tmp_path))
    task, budget = tiny_task(), tiny_budget(diffusion=0.5)
    model = SC.pretrain_scenario(task, diffusion=0.5)
    a, b = SC.sample(task, model, budget).x, SC.sample(task, model, budget).x
    assert torch.equal(a, b)
    other = SC.sample(tiny_task(seed=1), model, budget).x
    assert not torch.equal(a, other)


def test_curve_stability_needs_a_step_zero_evaluation(tmp_path, monkeypatch, single_thread) -> None:
    monkeypatch.setenv("GFT_CACHE_DIR", str(tmp_path))
    run = SC.run_scenario(tiny_task(), "ft", tiny_budget())
    with pytest.raises(ValueError, match="needs W2 curves evaluated at step 0"):
        SC.curve_stability([run])


def test_reference_and_null_memorization(tmp_path, monkeypatch, single_thread) -> None:
    monkeypatch.setenv("GFT_CACHE_DIR", str(tmp_path))
    task = tiny_task()
    ref = SC.pretrained_reference(task, tiny_budget(), n_repeats=3)
    assert ref.floor > 0 and ref.floor_se >= 0 and "dopri_nfe" in ref.metrics
    f, z = SC.null_memorization(task)
    assert 0 <= f <= 1 and math.isfinite(z)
    assert SC.pooled_floor_se([ref]) == pytest.approx(ref.floor_se)
    assert difference_margin(SC.pooled_floor_se([ref])) == Z_999 * math.sqrt(2) * ref.floor_se
    sde = SC.pretrained_reference(task, tiny_budget(diffusion=0.5), n_repeats=3)
    assert sde.floor == ref.floor and sde.metrics["w2"] != ref.metrics["w2"]  # shared floors, own model
    other = type(ref)(**{**ref.__dict__, "floor_se": 2 * ref.floor_se})
    assert SC.pooled_floor_se([ref, other]) == pytest.approx(ref.floor_se * math.sqrt(2.5))
    with pytest.raises(ValueError, match="at least one PretrainedReference"):
        SC.pooled_floor_se([])


# ------------------------------------------------------------------------------------------ setup
def _params(**kw):
    return resolve_parameters(PROFILE_TABLE, profile="smoke", seed=2, device="cpu", **kw)


def test_resolve_setup_builds_nested_tasks_per_seed() -> None:
    setup = resolve_setup(_params())
    sizes = sorted(setup.tasks)
    assert sizes == PROFILE_TABLE["smoke"]["n_targets"] and setup.seeds == (2, 3)
    small, large = setup.tasks[sizes[0]][1], setup.tasks[sizes[-1]][1]
    assert small.seed == large.seed == 3
    assert torch.equal(small.target_train(), large.target_train()[: sizes[0]])
    assert setup.sde.diffusion > 0 and setup.stress.n_evals > 1 and setup.base.n_evals == 1


@pytest.mark.parametrize("kw, match", [
    ({"n_targets": []}, "n_targets must be a non-empty list"),
    ({"n_targets": [32, 32]}, "n_targets must be distinct sizes"),
    ({"n_targets": [4096]}, "n_targets must be distinct sizes in"),
    ({"n_targets": [512]}, "n_targets must not exceed n_heldout=256"),
    ({"methods": ["ft", "reflow"]}, r"methods must be fine-tuning methods, each one of ft, ft-ot, l2-reg, gft-drift, "
                                    r"gft-coupling .*got \['ft', 'reflow'\], refused \['reflow'\]"),
    ({"methods": ["scratch", "gft-drift"]}, r"'scratch' does not start from it.*refused \['scratch'\]"),
    ({"diffusion": 0.0}, "diffusion must be a finite number > 0"),
    ({"stress_lr": 0.0}, "lr must be a finite number > 0"),
])
def test_resolve_setup_rejects_bad_values(kw, match) -> None:
    with pytest.raises(ValueError, match=match):
        resolve_setup(_params(**kw))


def test_claim_rows_pair_every_gft_form_with_every_baseline() -> None:
    rng = np.random.default_rng(0)
    values = {m: rng.normal(size=5).tolist() for m in ("ft", "ft-ot", "l2-reg", "gft-drift", "gft-coupling")}
    rows = claim_rows("c", "w2", "lower", values, scenario="s", figure="f", seeds=range(5))
    assert [(r["gft_method"], r["baseline_method"]) for r in rows] == [
        (g, b) for g in ("gft-drift", "gft-coupling") for b in ("ft", "ft-ot", "l2-reg")]
    assert all(r["paired"] and r["test"] == "paired t" for r in rows)
    assert len(apply_holm(rows)) == 6
    only = claim_rows("c", "w2", "lower", {"ft-ot": [1, 2], "gft-drift": [1, 3]}, scenario="s", figure="f",
                      seeds=[0, 1])
    assert len(only) == 1 and only[0]["diff"] == pytest.approx(0.5)
