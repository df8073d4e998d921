"""One figure style for every notebook: seaborn "paper" context, colour-blind palette."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import seaborn as sns

__all__ = ["set_style", "METHOD_COLORS", "method_color", "plot_mean_band"]

_PALETTE = sns.color_palette("colorblind", 10)

#: Fixed colours so that a method looks the same in every figure.
METHOD_COLORS: dict[str, tuple[float, float, float]] = {
    "scratch": _PALETTE[7],
    "ft": _PALETTE[0],
    "ft-ot": _PALETTE[9],
    "l2-reg": _PALETTE[4],
    "gft-drift": _PALETTE[3],
    "gft-coupling": _PALETTE[1],
    "reflow": _PALETTE[2],
    "pretrained": _PALETTE[5],
    "target": (0.2, 0.2, 0.2),
}


def method_color(name: str) -> tuple[float, float, float]:
    """Colour of a method (grey for names not in :data:`METHOD_COLORS`)."""
    return METHOD_COLORS.get(name, (0.5, 0.5, 0.5))


def set_style() -> None:
    """Apply the project's figure style (call once per notebook)."""
    sns.set_theme(context="paper", style="whitegrid", palette=_PALETTE, font_scale=1.1)
    plt.rcParams.update({
        "figure.dpi": 110,
        "savefig.dpi": 160,
        "savefig.bbox": "tight",
        "axes.titleweight": "bold",
        "legend.frameon": False,
        "pdf.fonttype": 42,
        "svg.hashsalt": "gft",
        "path.simplify": True,
    })


def plot_mean_band(ax: Any, x: Sequence[float], curves: Sequence[Sequence[float]], *, color: Any,
                   label: str | None = None, **kwargs: Any) -> None:
    """Mean over rows of ``curves`` (n_seeds, len(x)) as a line with a ± 1 std band (ddof = 1)."""
    c = np.asarray(curves, dtype=np.float64)
    mean = c.mean(axis=0)
    std = c.std(axis=0, ddof=1) if c.shape[0] > 1 else np.zeros_like(mean)
    ax.plot(x, mean, color=color, label=label, **kwargs)
    ax.fill_between(x, mean - std, mean + std, color=color, alpha=0.2, linewidth=0)
