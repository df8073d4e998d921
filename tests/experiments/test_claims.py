"""Claim rows stored in a report (gftlib.experiments.claims.record_claims)."""

from __future__ import annotations

from types import SimpleNamespace

from gftlib.experiments.claims import record_claims
from gftlib.experiments.report import Report


def test_record_claims_goes_to_the_reports_claims(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("GFT_RESULTS_DIR", str(tmp_path))
    r = Report("e0_demo", {"seed": 0})
    record_claims(r, [{"claim": "x", "verdict": "inconclusive"}])
    assert r.numbers["claims"][0]["claim"] == "x"
    with_list = SimpleNamespace(claims=[], numbers={})  # a report with a top-level claims list
    record_claims(with_list, [{"claim": "y"}])
    assert with_list.claims == [{"claim": "y"}] and with_list.numbers == {}
