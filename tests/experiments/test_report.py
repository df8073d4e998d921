"""Report/profile/verdict/summary utilities shared by every notebook."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gftlib.experiments.profiles import resolve_parameters
from gftlib.experiments.report import MACHINE_DEPENDENT_KEY, ChecksFailed, Report, machine_independent
from gftlib.experiments.claims import compare_claim
from gftlib.experiments.summary import README_END, README_START, build_summary, update_readme
from gftlib.experiments.verdict import claim_entry, verdict

TABLE = {"smoke": {"n": 10, "betas": [1.0]}, "quick": {"n": 100, "betas": [1.0]}, "paper": {"n": 1000, "betas": [1.0]}}


def test_profile_defaults_and_explicit_override() -> None:
    p = resolve_parameters(TABLE, profile="quick", seed=3, device="cpu", n=None, betas=[0.5])
    assert p == {"seed": 3, "profile": "quick", "device": "cpu", "dry_run": False, "n": 100, "betas": [0.5]}


@pytest.mark.parametrize("kwargs, err, match", [
    ({"profile": "quik"}, ValueError, "profile must be one of 'smoke', 'quick', 'paper'; got 'quik'"),
    ({"seed": -1}, ValueError, "seed must be an integer >= 0, got -1"),
    ({"device": "gpu"}, ValueError, "device must be one of"),
    ({"typo": 1}, ValueError, r"parameters \['typo'\] have no profile default"),
])
def test_profile_errors(kwargs, err, match) -> None:
    base = {"profile": "quick", "seed": 0, "device": "cpu"}
    base.update(kwargs)
    with pytest.raises(err, match=match):
        resolve_parameters(TABLE, **base)


def test_report_writes_json_and_raises_on_failed_check(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("GFT_RESULTS_DIR", str(tmp_path))
    monkeypatch.setenv("GFT_FIGURES_DIR", str(tmp_path / "fig"))
    r = Report("t0_demo", {"seed": 0})
    r.check("ok", 0.1, 0.2, reason="bound")
    r.numbers["x"] = 1.23456789012345
    assert r.finalize() == tmp_path / "t0_demo.json"
    r.check("bad", 0.3, 0.2, reason="bound")
    with pytest.raises(ChecksFailed, match="bad: 0.3 <= 0.2 is false"):
        r.finalize()
    doc = json.loads((tmp_path / "t0_demo.json").read_text())
    assert doc["all_checks_passed"] is False
    assert [c["passed"] for c in doc["checks"]] == [True, False]
    nan_check = r.check("nan", float("nan"), 1.0, reason="x")
    assert not nan_check.passed


def test_verdict_rule() -> None:
    assert verdict([1.0, 1.1, 0.9], [2.0, 2.1, 1.9], "lower") == "reproduced"
    assert verdict([1.0, 1.1, 0.9], [2.0, 2.1, 1.9], "higher") == "not reproduced"
    assert verdict([1.0, 1.5, 0.5], [1.2, 1.4, 1.0], "lower") == "inconclusive"
    assert verdict([1.0], [2.0], "lower") == "inconclusive"  # a single seed has no spread
    with pytest.raises(ValueError, match="better must be one of"):
        verdict([1.0], [2.0], "smaller")


def test_summary_lists_claims(tmp_path: Path) -> None:
    rows = [compare_claim("shorter paths", "path length", "lower", [1.0, 1.1, 0.9, 1.05, 0.97],
                          [2.0, 2.2, 1.9, 2.1, 2.05], gft_method="gft-coupling", baseline_method=b,
                          scenario="pooled", figure="e1_x", paired=True) for b in ("ft", "ft-ot")]
    legacy = claim_entry("old", "w2", [1.0, 1.1], [1.0, 1.2], better="lower", figure="e2_x")
    (tmp_path / "e1_demo.json").write_text(json.dumps({
        "numbers": {"claims": rows}, "checks": [{"name": "c", "passed": True}],
        "parameters": {"profile": "quick"}, "environment": {"device_name": "cpu"}}))
    (tmp_path / "e2_demo.json").write_text(json.dumps({
        "numbers": {"claims": [legacy]}, "checks": [], "parameters": {}, "environment": {}}))
    text = build_summary(tmp_path)
    assert "| shorter paths | pooled | path length (lower better) | gft-coupling | ft-ot |" in text
    assert text.count("**reproduced**") == 2
    assert "3 claim rows, 3 tested hypotheses in the Holm family." in text
    assert "| e1_demo | shorter paths | coupling: reproduced | coupling: reproduced |" in text
    assert "| e2_demo | old | coupling: inconclusive | - |" in text  # legacy row: Welch, baseline ft
    assert "| e1_demo | 1/1 | - |" in text
    assert "rows against `ft-ot`, Holm-corrected): *reproduced*: shorter paths (coupling, e1_demo" in text
    readme = "intro\n" + README_START + "\nstale\n" + README_END + "\nrest\n"
    new = update_readme(readme, "TABLE")
    assert new == "intro\n" + README_START + "\nTABLE\n" + README_END + "\nrest\n"
    with pytest.raises(ValueError, match="README must contain"):
        update_readme("no markers", "TABLE")


def _rows(machine_values):
    steps = compare_claim("speed: steps", "steps_to_level", "lower", [10.0, 12.0, 9.0, 11.0, 10.0],
                          [20.0, 21.0, 19.0, 22.0, 20.0], gft_method="gft-coupling", baseline_method="ft-ot",
                          scenario="pooled", figure="e1_x", paired=True)
    wall = compare_claim("speed: wall time", "seconds_to_level", "lower", machine_values,
                         [2.0, 2.1, 1.9, 2.2, 2.0], gft_method="gft-coupling", baseline_method="ft-ot",
                         scenario="pooled", figure="e1_x", paired=True, machine_dependent=True)
    return steps, wall


def test_machine_dependent_rows_are_marked_and_in_the_holm_family(tmp_path: Path) -> None:
    steps, wall = _rows([1.0, 1.2, 0.9, 1.1, 1.0])
    assert wall["machine_dependent"] is True and "machine_dependent" not in steps
    with pytest.raises(ValueError, match="machine_dependent must be True or False, got 'yes'"):
        compare_claim("c", "m", "lower", [1.0, 2.0], [1.0, 2.0], gft_method="g", baseline_method="b",
                      scenario="s", figure="f", paired=True, machine_dependent="yes")
    (tmp_path / "e1_demo.json").write_text(json.dumps({
        "numbers": {"claims": [steps, wall]}, "checks": [], "parameters": {"profile": "quick"},
        "environment": {"device_name": "cpu"}}))
    text = build_summary(tmp_path)
    assert "2 claim rows, 2 tested hypotheses in the Holm family." in text  # the wall-time row included
    assert text.count("; wall time, machine-dependent") == 1
    assert "| speed: wall time | pooled | seconds_to_level (lower better); wall time, machine-dependent |" in text
    assert "Wall-time rows (1, marked" in text
    (tmp_path / "e1_demo.json").write_text(json.dumps({"numbers": {"claims": [steps]}, "checks": []}))
    assert "machine-dependent" not in build_summary(tmp_path)


def test_machine_independent_drops_exactly_the_wall_times() -> None:
    doc = {"notebook": "e1", "numbers": {"per_pair": {"a": 1}, "wall_time": {"per_pair": {"a": 3.2}},
                                         "claims": list(_rows([1.0, 1.2, 0.9, 1.1, 1.0]))},
           "checks": [{"name": "c"}], "claims": [{"claim": "top", "machine_dependent": True}, {"claim": "k"}]}
    other = json.loads(json.dumps(doc))  # the same run on another machine: other wall times
    other["numbers"]["wall_time"]["per_pair"]["a"] = 5.0
    other["numbers"]["claims"][1] = _rows([3.0, 3.1, 2.8, 3.3, 3.0])[1]
    kept = machine_independent(doc)
    assert kept == machine_independent(other) and doc != other
    assert set(kept["numbers"]) == {"per_pair", "claims"}
    assert [r["claim"] for r in kept["numbers"]["claims"]] == ["speed: steps"]
    assert kept["claims"] == [{"claim": "k"}] and kept["checks"] == doc["checks"]
    assert "wall_time" in doc["numbers"] and len(doc["numbers"]["claims"]) == 2  # the input is not changed
    assert MACHINE_DEPENDENT_KEY == "wall_time"
    assert machine_independent({"checks": []}) == {"checks": []}


def _tiny_figure():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(1, 1))
    ax.plot([0, 1], [0, 1])
    return fig


@pytest.mark.parametrize("setting, written", [(None, ["png", "pdf"]), ("png", ["png"]), ("svg, PDF", ["svg", "pdf"])])
def test_savefig_writes_exactly_the_selected_formats(setting, written, tmp_path: Path, monkeypatch) -> None:
    import matplotlib.pyplot as plt

    from gftlib.experiments.report import figure_formats

    monkeypatch.setenv("GFT_FIGURES_DIR", str(tmp_path))
    if setting is None:
        monkeypatch.delenv("GFT_FIGURE_FORMATS", raising=False)
    else:
        monkeypatch.setenv("GFT_FIGURE_FORMATS", setting)
    assert list(figure_formats()) == written
    fig = _tiny_figure()
    paths = Report("t0_demo", {"seed": 0}).savefig(fig, "demo", by=_tiny_figure)
    plt.close(fig)
    assert [p.suffix[1:] for p in paths] == written
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(f"t0_demo_demo.{ext}" for ext in written)


@pytest.mark.parametrize("bad", ["", "jpg", "png,png", "png,", "png;pdf"])
def test_bad_figure_formats_fail_when_the_report_is_made(bad: str, monkeypatch) -> None:
    monkeypatch.setenv("GFT_FIGURE_FORMATS", bad)
    with pytest.raises(ValueError, match=rf"GFT_FIGURE_FORMATS must be a comma-separated list of distinct "
                                         rf"formats from png, pdf, svg, got {bad!r}"):
        Report("t0_demo", {"seed": 0})


def test_run_notebook_refuses_bad_figure_formats_before_the_kernel_starts(tmp_path: Path) -> None:
    from gftlib.experiments.run_notebooks import run_notebook

    nb = Path(__file__).resolve().parents[2] / "notebooks" / "t1_girsanov.ipynb"
    with pytest.raises(ValueError, match="figure_formats must be .* got 'png,eps'"):
        run_notebook(nb, parameters={"profile": "smoke"}, build_dir=tmp_path, figure_formats=["png", "eps"])
    assert not (tmp_path / "notebooks").exists()
