"""The 2-D domain-shift task shared by E1/E3/E4 (gftlib.experiments.tasks2d)."""

from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

from gftlib.experiments import tasks2d as T2  # noqa: E402
from gftlib.experiments.methods import METHODS  # noqa: E402
from gftlib.experiments.profiles import resolve_parameters  # noqa: E402
from gftlib.experiments.report import Report  # noqa: E402
from gftlib.eval.metrics import wasserstein2  # noqa: E402

TINY = dict(n_target=64, n_target_pool=128, n_heldout=64, n_eval=64, n_source=256, hidden=8, depth=2,
            time_features=4, pretrain_steps=15, pretrain_batch=32, eval_steps=4)


def tiny_task(**kw) -> T2.Task2D:
    return T2.Task2D(**{**TINY, **kw})


def tiny_config(**kw) -> T2.FinetuneConfig:
    base = dict(steps=6, batch_size=16, cache_size=32, n_trajectories=16, n_evals=3,
                dopri_fractions=(0.0, 1.0))
    return T2.FinetuneConfig(**{**base, **kw})


class LinearField(nn.Module):
    """b(x, t) = a x: the ODE solution is x0 exp(a t); Euler with N steps gives x0 (1 + a/N)^N."""

    def __init__(self, a: float) -> None:
        super().__init__()
        self.a = a

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.a * x


# ------------------------------------------------------------------------------------------ configs
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


@pytest.mark.parametrize("kw, err, match", [
    ({"schedule_kind": "custom"}, ValueError, "schedule_kind must be one of 'constant', 'linear'"),
    ({"beta0": -1.0}, ValueError, "beta0 must be a finite number >= 0"),
    ({"steps": 0}, ValueError, "steps must be an integer >= 1"),
    ({"batch_size": 1}, ValueError, "batch_size must be an integer >= 2"),
    ({"schedule_kind": "linear", "schedule_options": (("rate", 2.0),)}, ValueError,
     "option rate=2.0 does not apply to schedule kind 'linear'"),
    ({"ema_decay": 1.0}, ValueError, "ema_decay must be a finite number >= 0 and < 1"),
    ({"dopri_fractions": (1.5,)}, ValueError, "dopri_fractions"),
])
def test_config_rejects_bad_values(kw, err, match) -> None:
    with pytest.raises(err, match=match):
        tiny_config(**kw)


def test_config_schedule_defaults_and_eval_grid() -> None:
    cfg = tiny_config(steps=10, n_evals=3, schedule_kind="step", dopri_fractions=(0.0, 0.5, 1.0))
    assert dict(cfg.schedule_options) == T2.default_schedule_options("step") == {"n_stages": 4}
    assert cfg.schedule().values()[-1] == 0.0 and cfg.schedule().values()[0] == cfg.beta0
    ev = cfg.eval_steps()
    assert ev[0] == 0 and ev[-1] == 10 and np.all(np.diff(ev) > 0)
    assert set(cfg.dopri_steps()) <= set(ev.tolist()) and {0, 10} <= set(cfg.dopri_steps())
    # exponential gets a rate, constant stays at beta0
    assert dict(tiny_config(schedule_kind="exponential").schedule_options) == {"rate": 5.0}
    assert tiny_config(schedule_kind="constant").schedule().final == tiny_config().beta0
    # the key of unscheduled methods ignores the schedule
    a, b = tiny_config(beta0=1.0), tiny_config(beta0=3.0)
    assert a.key_for("ft") == b.key_for("ft") and a.key_for("gft-coupling") != b.key_for("gft-coupling")


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


# ------------------------------------------------------------------------------------------ metrics
def test_max_upward_jump_and_early_degradation() -> None:
    assert T2.max_upward_jump([3.0, 2.0, 1.0]) == 0.0
    assert T2.max_upward_jump([1.0, 0.5, 0.9, 0.7, 1.0]) == pytest.approx(0.4)
    steps = [0, 10, 20, 30, 40, 100]
    assert T2.early_degradation(steps, [1.0, 1.2, 0.9, 1.5, 2.0, 0.1]) == pytest.approx(0.2)  # steps <= 25
    assert T2.early_degradation(steps, [1.0, 1.2, 0.9, 1.5, 2.0, 0.1], fraction=0.3) == pytest.approx(0.5)
    assert T2.early_degradation(steps, [1.0, 0.8, 0.7, 0.6, 0.5, 0.1]) == pytest.approx(-0.2)
    # no evaluation inside the window: the first one after 0 is used
    assert T2.early_degradation([0, 50, 100], [1.0, 1.3, 0.2], fraction=0.25) == pytest.approx(0.3)
    with pytest.raises(ValueError, match="steps must start at 0"):
        T2.early_degradation([1, 2], [1.0, 2.0])
    with pytest.raises(ValueError, match="at least 2 finite numbers"):
        T2.max_upward_jump([1.0])
    with pytest.raises(ValueError, match="fraction must be a finite number > 0 and < 1"):
        T2.early_degradation([0, 1], [1.0, 2.0], fraction=1.0)


def _fake_run(w2, seed=0) -> T2.FinetuneRun:
    n = len(w2)
    z = np.zeros(n)
    return T2.FinetuneRun(method="ft", seed=seed, eval_steps=np.arange(n) * 10, w2=np.asarray(w2, float),
                          path_length=z, straightness=z, dopri_steps=z[:1], dopri_nfe=z[:1], dopri_w2=z[:1],
                          log_steps=z, beta=z, loss_total=z, loss_target=z, loss_pretrained=z,
                          schedule_final_beta=None, ema_state={})


def test_stability_spread_is_mean_across_seed_std() -> None:
    curves = np.array([[1.0, 0.8, 0.9, 0.5], [1.0, 0.6, 0.7, 0.6], [1.0, 0.7, 0.4, 0.4]])
    st = T2.stability([_fake_run(c, i) for i, c in enumerate(curves)])
    assert st.seed_spread == pytest.approx(curves[:, 1:].std(axis=0, ddof=1).mean())
    assert st.max_jump.tolist() == pytest.approx([0.1, 0.1, 0.0])
    assert T2.stability([_fake_run(curves[0])]).seed_spread == 0.0
    with pytest.raises(ValueError, match="at least one FinetuneRun"):
        T2.stability([])


def test_nfe_to_reach() -> None:
    c = T2.QualityCurve(euler_steps=np.array([1, 2, 4, 8]), euler_w2=np.array([0.9, 0.5, 0.3, 0.31]),
                        euler_path_length=np.zeros(4), euler_error=np.zeros(4), dopri_nfe=20, dopri_w2=0.3)
    assert T2.nfe_to_reach(c, 0.5) == 2.0
    assert T2.nfe_to_reach(c, 0.305) == 4.0
    assert math.isinf(T2.nfe_to_reach(c, 0.1))


def test_coverage_against_brute_force() -> None:
    g = torch.Generator().manual_seed(0)
    ref = torch.randn(80, 2, generator=g)
    smp = torch.randn(60, 2, generator=g) + 0.5
    k = 3
    expected = 0.0
    for i in range(ref.shape[0]):
        dists = sorted(float((ref[i] - ref[j]).norm()) for j in range(ref.shape[0]) if j != i)
        radius = dists[k - 1]
        expected += any(float((ref[i] - s).norm()) <= radius for s in smp)
    assert T2.coverage(smp, ref, k=k) == pytest.approx(expected / ref.shape[0])
    assert T2.coverage(ref, ref) == 1.0
    assert T2.coverage(ref + 100.0, ref) == 0.0
    with pytest.raises(ValueError, match="more than k=5 points"):
        T2.coverage(smp, ref[:5])


def test_quality_vs_nfe_euler_error_matches_closed_form() -> None:
    task = tiny_task()
    a = -0.7
    curve = T2.quality_vs_nfe(task, LinearField(a), euler_steps=(1, 2, 8, 32))
    x0 = task.eval_noise().double()
    mean_norm = float(x0.norm(dim=1).mean())
    for n, err in zip(curve.euler_steps, curve.euler_error):
        exact = abs(math.exp(a) - (1 + a / n) ** n) * mean_norm
        assert err == pytest.approx(exact, rel=1e-3, abs=1e-5)
    # W2 of Euler samples against the held-out set, recomputed directly
    x1 = x0.float() * (1 + a) ** 1
    assert curve.euler_w2[0] == pytest.approx(wasserstein2(x1, task.target_heldout()), rel=1e-5)
    # path length of the one-step Euler path is |a x0|
    assert curve.euler_path_length[0] == pytest.approx(abs(a) * mean_norm, rel=1e-5)


def test_margins_and_jensen_bound() -> None:
    ref = T2.Reference(floor=0.2, floor_se=0.03, source_floor=0.2, source_floor_se=0.03, source_target=0.7,
                       pretrained_target=0.65, pretrained_source=0.25)
    assert T2.closer_margin(ref) == pytest.approx(3.090232306 * math.sqrt(2) * 0.03)
    assert T2.shift_is_resolvable(ref)
    assert not T2.shift_is_resolvable(T2.Reference(**{**ref.__dict__, "pretrained_target": 0.25}))
    task = tiny_task()
    x0, x1 = task.eval_noise().double(), task.target_train().double()
    brute = np.mean([[float((a - b).norm()) for b in x1] for a in x0])
    assert T2.independent_coupling_distance(task) == pytest.approx(brute, rel=1e-9)


def test_record_claims_and_plot(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("GFT_RESULTS_DIR", str(tmp_path))
    r = Report("e0_demo", {"seed": 0})
    T2.record_claims(r, [{"claim": "x", "verdict": "inconclusive"}])
    assert r.numbers["claims"][0]["claim"] == "x"
    fig, ax = plt.subplots()
    T2.plot_mean_band(ax, [0, 1, 2], [[1, 2, 3], [1, 2, 5]], color="k", label="m")
    mean = ax.lines[0].get_ydata()
    assert list(mean) == [1.0, 2.0, 4.0]
    plt.close(fig)


# ------------------------------------------------------------------------------------------ training
def test_finetune_records_curves_and_is_cached(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("GFT_CACHE_DIR", str(tmp_path))
    task, cfg = tiny_task(), tiny_config()
    pre = T2.pretrain(task)
    ref = T2.reference_distances(task, pre, n_repeats=3)
    run = T2.finetune(task, "gft-coupling", 0, cfg)
    assert run.eval_steps.tolist() == cfg.eval_steps().tolist()
    assert run.dopri_steps.tolist() == list(cfg.dopri_steps())
    # step 0 is the pretrained model: the same noise and solver give exactly its W2
    assert run.w2[0] == pytest.approx(ref.pretrained_target, abs=1e-9)
    assert run.beta[-1] == 0.0 and run.schedule_final_beta == 0.0
    assert np.all(np.isfinite(run.loss_total)) and run.log_steps[-1] == cfg.steps
    assert np.all((run.straightness > 0) & (run.straightness <= 1))
    # a reloaded EMA model reproduces the last evaluation exactly
    model = T2.load_model(task, run.ema_state)
    x = T2.sample_model(task, model)
    assert wasserstein2(x, task.target_heldout()) == pytest.approx(run.final_w2, abs=1e-9)

    # second call: from the cache, no training
    def boom(*a, **k):
        raise AssertionError("retrained although cached")

    monkeypatch.setattr(T2, "_finetune_uncached", boom)
    again = T2.finetune(task, "gft-coupling", 0, cfg)
    assert np.array_equal(again.w2, run.w2)
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

    monkeypatch.setattr(T2, "_finetune_uncached", boom)
    # a different source changes the pretrained model but not the scratch run (same cache entry)
    same = T2.finetune(tiny_task(source="rings"), "scratch", 0, cfg)
    assert np.array_equal(same.w2, scratch.w2)
