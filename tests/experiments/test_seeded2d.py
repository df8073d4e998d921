"""gftlib.experiments.seeded2d: pairs, speed levels and claim rows (no training)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from gftlib.experiments import seeded2d as S2


def test_parse_pairs() -> None:
    assert S2.parse_pairs([["checkerboard", "moons"], ("gaussians8", "rings")]) == [
        ("checkerboard", "moons"), ("gaussians8", "rings")]
    with pytest.raises(ValueError, match="pairs must be a non-empty list"):
        S2.parse_pairs([])
    with pytest.raises(ValueError, match=r"pairs must hold \[source, target\] pairs"):
        S2.parse_pairs([["moons"]])
    with pytest.raises(ValueError, match="source must be one of"):
        S2.parse_pairs([["moon", "rings"]])
    with pytest.raises(ValueError, match="must not repeat"):
        S2.parse_pairs([["moons", "rings"], ["moons", "rings"]])


def _run(w2, seconds=(1.0, 4.0, 6.0)):
    return SimpleNamespace(final_w2=w2[-1], eval_steps=np.arange(len(w2)) * 10, w2=np.asarray(w2),
                           train_seconds_at_eval=np.asarray(seconds))


def test_add_speed_level_is_five_percent_above_the_best_baseline() -> None:
    runs = {"ft": _run([1.0, 0.5, 0.40], (0.5, 3.0, 5.5)), "ft-ot": _run([1.0, 0.45, 0.30]),
            "gft-coupling": _run([1.0, 0.31, 0.29], (2.0, 9.0, 16.0)), "gft-drift": _run([1.0, 0.9, 0.8])}
    unit = SimpleNamespace(runs=runs)
    metrics = {m: {} for m in runs}
    level = S2.add_speed(unit, metrics)
    assert level == pytest.approx(0.315)
    assert metrics["gft-coupling"]["steps_to_level"] == 10.0
    assert metrics["gft-coupling"]["seconds_to_level"] == 9.0  # fewer steps, yet more seconds
    assert metrics["ft-ot"]["steps_to_level"] == 20.0 and metrics["ft-ot"]["seconds_to_level"] == 6.0
    assert metrics["ft"]["steps_to_level"] == 20.0 and metrics["ft"]["censored"] == 1.0  # never: budget
    assert metrics["ft"]["seconds_to_level"] == 5.5  # censored at the last evaluation's seconds
    assert metrics["gft-drift"]["censored"] == 1.0
    assert set(S2.WALL_TIME_KEYS) >= {"seconds_to_level"}


def test_claim_rows_one_per_form_and_baseline() -> None:
    vals = {m: {"x": list(np.arange(5.0) + i)} for i, m in enumerate(["ft", "ft-ot", "l2-reg", "gft-coupling"])}
    claims = [{"claim": "c", "metric": "x", "better": "lower", "figure": "f"},
              {"claim": "q", "metric": "x", "better": "lower", "figure": "f", "kind": "equivalence", "margin": 0.5}]
    rows = S2.claim_rows(claims, vals, scenario="pooled", seeds=[0, 1, 2, 3, 4], figure_prefix="e1_")
    assert [(r["claim"], r["baseline_method"]) for r in rows] == [
        ("c", "ft"), ("c", "ft-ot"), ("c", "l2-reg"), ("q", "ft"), ("q", "ft-ot"), ("q", "l2-reg")]
    assert all(r["gft_method"] == "gft-coupling" and r["paired"] and r["figure"] == "e1_f" for r in rows)
    assert rows[1]["diff"] == pytest.approx(2.0)
    assert rows[1]["p_raw"] == pytest.approx(2 / 2**5)  # constant paired shift: exact sign-flip p
    assert not any("machine_dependent" in r for r in rows)
    timed = [{"claim": "t", "metric": "x", "better": "lower", "figure": "f", "machine_dependent": True}]
    rows = S2.claim_rows(timed, vals, scenario="pooled", seeds=[0, 1, 2, 3, 4], figure_prefix="e1_")
    assert len(rows) == 3 and all(r["machine_dependent"] is True for r in rows)
