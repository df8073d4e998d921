"""The 2-D domain-shift task shared by E1/E3/E4 (gftlib.experiments.tasks.toy2d)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gftlib.eval.metrics import wasserstein2
from gftlib.experiments.methods import METHODS
from gftlib.experiments.profiles import resolve_parameters
from gftlib.experiments.tasks import toy2d as T2
from gftlib.experiments.tasks.budget import FinetuneConfig
from gftlib.experiments.tasks.toy2d_eval import reference_distances

TINY = dict(n_target=64, n_target_pool=128, n_heldout=64, n_eval=64, n_source=256, hidden=8, depth=2,
            time_features=4, pretrain_steps=15, pretrain_batch=32, eval_steps=4)


def tiny_task(**kw) -> T2.Task2D:
    return T2.Task2D(**{**TINY, **kw})


def tiny_config(**kw) -> FinetuneConfig:
    base = dict(steps=6, batch_size=16, cache_size=32, n_trajectories=16, n_evals=3,
                dopri_fractions=(0.0, 1.0))
    return FinetuneConfig(**{**base, **kw})



@pytest.mark.parametrize("kw, match", [
    ({"source": "mooons"}, "source must be one of"),
    ({"target": 3}, "target must be one of"),
    ({"n_target": 200}, r"n_target must be an integer in \[2, n_target_pool=128\]"),
    ({"n_target": 1}, "n_target must be an integer >= 2"),
    ({"eval_method": "dopri5"}, "eval_method must be one of 'euler', 'midpoint', 'rk4'"),
    ({"pretrain_lr": -1.0}, "pretrain_lr must be a finite number > 0"),
    ({"time_scale": 0.0}, "time_scale must be a finite number > 0"),
])
def test_task_rejects_bad_values(kw, match) -> None:
    with pytest.raises(ValueError, match=match):
        tiny_task(**kw)


def _params(**kw):
    return resolve_parameters(T2.PROFILE_TABLE, profile="smoke", seed=3, device="cpu", **kw)


def test_resolve_setup_from_profile_and_errors() -> None:
    setup = T2.resolve_setup(_params())
    assert setup.seeds == (3, 4) and setup.task.seed == 3
    assert set(setup.methods) <= set(METHODS) and setup.device == torch.device("cpu")
    for p in ("smoke", "quick", "paper"):
        assert set(T2.PROFILE_TABLE[p]) == set(T2.PROFILE_TABLE["quick"])
    with pytest.raises(ValueError, match="methods\\[\\] must be one of"):
        T2.resolve_setup(_params(methods=["ft", "gtf"]))
    with pytest.raises(ValueError, match="must not repeat"):
        T2.resolve_setup(_params(methods=["ft", "ft"]))
    with pytest.raises(TypeError, match="methods must be a list"):
        T2.resolve_setup(_params(methods="ft"))
    with pytest.raises(ValueError, match="n_seeds must be an integer >= 1"):
        T2.resolve_setup(_params(n_seeds=0))
    with pytest.raises(ValueError, match="target must be one of"):
        T2.resolve_setup(_params(target="nope"))


# ------------------------------------------------------------------------------------------ data
def test_data_is_nested_deterministic_and_independent() -> None:
    small, large = tiny_task(n_target=16), tiny_task(n_target=64)
    assert torch.equal(small.target_train(), large.target_train()[:16])
    assert torch.equal(large.target_train(), large.target_pool()[:64])
    assert torch.equal(small.target_heldout(), tiny_task().target_heldout())
    other = tiny_task(seed=1)
    assert not torch.equal(other.target_heldout(), small.target_heldout())
    # held-out points are never training points (continuous distribution: no exact ties)
    d = torch.cdist(large.target_pool(), large.target_heldout())
    assert float(d.min()) > 0
    assert large.eval_noise().shape == (64, 2) and large.source_train().shape == (256, 2)


# ------------------------------------------------------------------------------------------ training
def test_finetune_records_curves_and_is_cached(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("GFT_CACHE_DIR", str(tmp_path))
    task, cfg = tiny_task(), tiny_config()
    pre = T2.pretrain(task)
    ref = reference_distances(task, pre, n_repeats=3)
    run = T2.finetune(task, "gft-coupling", 0, cfg)
    assert run.eval_steps.tolist() == cfg.eval_steps().tolist()
    assert run.dopri_steps.tolist() == list(cfg.dopri_steps())
    # step 0 is the pretrained model: the same noise and solver give exactly its W2
    assert run.w2[0] == pytest.approx(ref.pretrained_target, abs=1e-9)
    assert run.beta[-1] == 0.0 and run.schedule_final_beta == 0.0
    assert np.all(np.isfinite(run.loss_total)) and run.log_steps[-1] == cfg.steps
    assert np.all((run.straightness > 0) & (run.straightness <= 1))
    # wall times (values: tests/experiments/test_walltime.py): one per evaluation, with the run's totals
    assert run.train_seconds_at_eval.shape == run.eval_steps.shape
    assert run.train_seconds_at_eval[0] >= run.setup_seconds and run.evaluation_seconds > 0
    # a reloaded EMA model reproduces the last evaluation exactly
    model = T2.load_model(task, run.ema_state)
    x = T2.sample_model(task, model)
    assert wasserstein2(x, task.target_heldout()) == pytest.approx(run.final_w2, abs=1e-9)

    # second call: from the cache, no training
    def boom(*a, **k):
        raise AssertionError("retrained although cached")

    monkeypatch.setattr(T2.RUNNER, "finetune_uncached", boom)
    again = T2.finetune(task, "gft-coupling", 0, cfg)
    assert np.array_equal(again.w2, run.w2)
    # a cached run keeps the wall times of its first computation
    assert np.array_equal(again.train_seconds_at_eval, run.train_seconds_at_eval)
    assert (again.setup_seconds, again.train_seconds) == (run.setup_seconds, run.train_seconds)
    with pytest.raises(AssertionError, match="retrained"):
        T2.finetune(task, "gft-coupling", 1, cfg)  # another seed is another run
    with pytest.raises(ValueError, match="method must be one of"):
        T2.finetune(task, "gft", 0, cfg)


def test_scratch_ignores_pretraining_and_ft_starts_from_pretrained(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("GFT_CACHE_DIR", str(tmp_path))
    task, cfg = tiny_task(), tiny_config(steps=3, n_evals=1, dopri_fractions=(1.0,))
    scratch = T2.finetune(task, "scratch", 0, cfg)

    def boom(*a, **k):
        raise AssertionError("rerun")

    monkeypatch.setattr(T2.RUNNER, "finetune_uncached", boom)
    # a different source changes the pretrained model but not the scratch run (same cache entry)
    same = T2.finetune(tiny_task(source="rings"), "scratch", 0, cfg)
    assert np.array_equal(same.w2, scratch.w2)


def test_run_methods_is_the_per_method_loop_of_finetune(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("GFT_CACHE_DIR", str(tmp_path))
    task, cfg = tiny_task(), tiny_config(steps=2, n_evals=1, dopri_fractions=(1.0,))
    runs = T2.run_methods(task, ["ft", "scratch"], [0, 1], cfg)
    assert list(runs) == ["ft", "scratch"] and [r.seed for r in runs["ft"]] == [0, 1]
    assert np.array_equal(runs["scratch"][1].w2, T2.finetune(task, "scratch", 1, cfg).w2)
    with pytest.raises(TypeError, match="task must be a Task2D, got dict"):
        T2.finetune({}, "ft", 0, cfg)
    with pytest.raises(TypeError, match="config must be a FinetuneConfig, got dict"):
        T2.finetune(task, "ft", 0, {})
