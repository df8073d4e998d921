"""Claim rows: one comparison of a GFT form with a named baseline on one metric and one scenario.

A notebook builds rows with :func:`compare_claim` and stores the list in
``report.numbers["claims"]`` (:func:`record_claims`). Each row holds the
per-seed values, means, the difference GFT - baseline with its 95 % CI, an effect size and the raw
p-value (:mod:`gftlib.eval.statistics`). The verdict is *not* decided per notebook:
:mod:`gftlib.experiments.summary` collects the rows of every results JSON, applies Holm's
correction across all of them (:func:`apply_holm`) and only then assigns verdicts.
:func:`apply_holm` on one notebook's rows gives a preview (a smaller family, so it can only be
more permissive than the summary's).

Seeds and pairing: the experiment runners give every method of one seed the same target sample,
pretrained model and training randomness, so their values are paired by seed (``paired=True``,
paired t-test on per-seed differences). Pass ``paired=False`` (Welch) when the runs share nothing.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from gftlib.eval import statistics as S
from gftlib.validation import check_choice

__all__ = ["compare_claim", "apply_holm", "claim_hypotheses", "row_key", "record_claims"]


def _stat(values: np.ndarray) -> dict[str, Any]:
    return {"values": [float(v) for v in values], "mean": float(values.mean()),
            "std": float(values.std(ddof=1)) if values.size > 1 else 0.0}


def _check_str(name: str, value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{name} must be a non-empty string, got {value!r}")
    return value


def compare_claim(claim: str, metric: str, better: str, gft_values: Sequence[float],
                  baseline_values: Sequence[float], *, gft_method: str, baseline_method: str,
                  scenario: str, figure: str, paired: bool, kind: str = "difference",
                  margin: float | None = None, margin_reason: str = "",
                  seeds: Sequence[int] | None = None, machine_dependent: bool = False) -> dict[str, Any]:
    """A JSON-able claim row (see the module docstring); ``kind="equivalence"`` needs ``margin > 0``.
    ``machine_dependent=True`` (a wall-time metric: its values depend on the machine and its load)
    adds ``"machine_dependent": True`` to the row (the key is absent otherwise); such a row is
    tested and Holm-corrected like every other.

    ``gft_values[i]`` and ``baseline_values[i]`` are the metric of seed ``seeds[i]`` (paired design).
    Keys: claim, metric, better, kind, scenario, figure, gft_method, baseline_method, paired, seeds,
    gft / baseline (values, mean, std), test, n_a, n_b, diff, se, df, ci, effect_size,
    effect_size_kind, p_raw, for equivalence rows margin, margin_reason, p_raw_worse, and
    machine_dependent (only when True).
    """
    for name, v in (("claim", claim), ("metric", metric), ("gft_method", gft_method),
                    ("baseline_method", baseline_method), ("scenario", scenario)):
        _check_str(name, v)
    check_choice("better", better, ("lower", "higher"))
    check_choice("kind", kind, S.KINDS)
    for name, flag in (("paired", paired), ("machine_dependent", machine_dependent)):
        if not isinstance(flag, bool):
            raise ValueError(f"{name} must be True or False, got {flag!r}")
    a = np.asarray(gft_values, dtype=float)
    b = np.asarray(baseline_values, dtype=float)
    if seeds is not None and paired and len(seeds) != a.size:
        raise ValueError(f"seeds must have one entry per value ({a.size}), got {list(seeds)!r}")
    test = S.two_sample(a, b, paired=paired)
    row: dict[str, Any] = {
        "claim": claim, "metric": metric, "better": better, "kind": kind, "scenario": scenario,
        "figure": figure, "gft_method": gft_method, "baseline_method": baseline_method,
        "paired": paired, "seeds": [int(s) for s in seeds] if seeds is not None else None,
        "gft": _stat(a), "baseline": _stat(b),
        "test": test["test"], "n_a": test["n_a"], "n_b": test["n_b"], "diff": test["diff"],
        "se": test["se"], "df": test["df"], "ci": test["ci"], "effect_size": test["effect_size"],
        "effect_size_kind": test["effect_size_kind"], "p_raw": test["p"],
    }
    if kind == "equivalence":
        if margin is None:
            raise ValueError("kind='equivalence' needs margin (> 0, stated in advance)")
        eq = S.tost(a, b, margin=float(margin), better=better, paired=paired)
        row.update(margin=float(margin), margin_reason=margin_reason, p_raw=eq["p_equivalent"],
                   p_raw_worse=eq["p_worse"], p_difference=test["p"])
    elif margin is not None:
        raise ValueError(f"margin is only used with kind='equivalence', got kind={kind!r}")
    if machine_dependent:
        row["machine_dependent"] = True
    return row


def claim_hypotheses(rows: Sequence[dict[str, Any]]) -> list[tuple[int, str, float | None]]:
    """The family: ``(row index, "p" or "p_worse", raw p)`` for every hypothesis of every row."""
    out: list[tuple[int, str, float | None]] = []
    for i, r in enumerate(rows):
        out.append((i, "p", r.get("p_raw")))
        if r.get("kind") == "equivalence":
            out.append((i, "p_worse", r.get("p_raw_worse")))
    return out


def apply_holm(rows: Sequence[dict[str, Any]], *, alpha: float = 0.05) -> list[dict[str, Any]]:
    """Copies of ``rows`` with ``p_holm`` (and ``p_worse_holm``), ``family_size``, ``alpha`` and
    ``verdict``, Holm-corrected over every hypothesis of every row (:func:`claim_hypotheses`)."""
    hyps = claim_hypotheses(rows)
    adjusted = S.holm([p for _, _, p in hyps])
    family = sum(p is not None for _, _, p in hyps)
    out = [dict(r) for r in rows]
    for (i, which, _), padj in zip(hyps, adjusted):
        out[i]["p_holm" if which == "p" else "p_worse_holm"] = padj
    for r in out:
        r["family_size"] = family
        r["alpha"] = alpha
        r["verdict"] = S.verdict(kind=r.get("kind", "difference"), better=r["better"], diff=r["diff"],
                                 p_adjusted=r.get("p_holm"), p_worse_adjusted=r.get("p_worse_holm"),
                                 alpha=alpha)
    return out


def row_key(row: dict[str, Any]) -> tuple[str, str, str, str]:
    """``(claim, scenario, GFT form, baseline)``: one summary row each."""
    return (row["claim"], row["scenario"], row["gft_method"], row["baseline_method"])


def fmt_p(p: float | None) -> str:
    """A p-value for tables ("-" when the row has none)."""
    if p is None or (isinstance(p, float) and math.isnan(p)):
        return "-"
    return f"{p:.2g}" if p >= 1e-4 else "<1e-4"


def record_claims(report: Any, entries: Sequence[Mapping[str, Any]]) -> None:
    """Store claim entries (:func:`gftlib.experiments.verdict.claim_entry`) in the report: in its
    ``claims`` list when the Report has one (written at the top level of the results JSON, where
    :mod:`gftlib.experiments.summary` reads them), otherwise under ``numbers["claims"]``."""
    entries = [dict(e) for e in entries]
    if isinstance(getattr(report, "claims", None), list):
        report.claims.extend(entries)
    else:
        report.numbers.setdefault("claims", []).extend(entries)
