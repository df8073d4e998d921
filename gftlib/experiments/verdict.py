"""Verdicts for the paper's empirical claims: compare GFT with standard fine-tuning over seeds.

A claim is *reproduced* when GFT is better and the mean ± std intervals over seeds do not overlap,
*not reproduced* when FT is better with non-overlapping intervals, and *inconclusive* otherwise, and always with fewer than two seeds per method.
The rule is fixed in advance; it is never tuned to a result.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from gftlib.validation import check_choice

__all__ = ["VERDICTS", "verdict", "claim_entry"]

VERDICTS = ("reproduced", "not reproduced", "inconclusive")


def _stats(values: Sequence[float]) -> tuple[float, float]:
    arr = np.asarray(values, dtype=float)
    if arr.size == 0 or not np.all(np.isfinite(arr)):
        raise ValueError(f"values must be a non-empty list of finite numbers, got {list(values)}")
    std = float(arr.std(ddof=1)) if arr.size > 1 else 0.0
    return float(arr.mean()), std


def verdict(gft: Sequence[float], ft: Sequence[float], better: str) -> str:
    """``"reproduced" | "not reproduced" | "inconclusive"`` for per-seed values of one metric."""
    check_choice("better", better, ("lower", "higher"))
    (mg, sg), (mf, sf) = _stats(gft), _stats(ft)
    if len(gft) < 2 or len(ft) < 2:
        return "inconclusive"  # one seed gives no spread: no interval to compare
    overlap = (mg - sg) <= (mf + sf) and (mf - sf) <= (mg + sg)
    if overlap:
        return "inconclusive"
    gft_better = mg < mf if better == "lower" else mg > mf
    return "reproduced" if gft_better else "not reproduced"


def claim_entry(claim: str, metric: str, gft: Sequence[float], ft: Sequence[float], *, better: str,
                figure: str, gft_method: str = "gft-coupling", ft_method: str = "ft") -> dict[str, Any]:
    """One row of ``results/summary.md``, stored in an experiment's results JSON under ``claims``."""
    (mg, sg), (mf, sf) = _stats(gft), _stats(ft)
    return {
        "claim": claim, "metric": metric, "better": better, "figure": figure,
        "gft_method": gft_method, "ft_method": ft_method,
        "gft": {"mean": mg, "std": sg, "values": [float(v) for v in gft]},
        "ft": {"mean": mf, "std": sf, "values": [float(v) for v in ft]},
        "verdict": verdict(gft, ft, better),
    }
