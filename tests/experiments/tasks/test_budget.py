"""The fine-tuning budget shared by the 2-D and image tasks (gftlib.experiments.tasks.budget)."""

from __future__ import annotations

import numpy as np
import pytest

from gftlib.experiments.tasks.budget import SCHEDULED_METHODS, FinetuneConfig, ends_at_zero
from gftlib.schedules import default_schedule_options


def tiny_config(**kw) -> FinetuneConfig:
    base = dict(steps=6, batch_size=16, cache_size=32, n_trajectories=16, n_evals=3,
                dopri_fractions=(0.0, 1.0))
    return FinetuneConfig(**{**base, **kw})


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
    assert dict(cfg.schedule_options) == default_schedule_options("step") == {"n_stages": 4}
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


def test_ends_at_zero_only_for_unscheduled_methods_or_cooling_schedules() -> None:
    assert ends_at_zero("ft", tiny_config(schedule_kind="constant"))
    for m in SCHEDULED_METHODS:
        assert ends_at_zero(m, tiny_config()) and not ends_at_zero(m, tiny_config(schedule_kind="constant"))
    with pytest.raises(ValueError, match="method must be one of"):
        ends_at_zero("gft", tiny_config())
