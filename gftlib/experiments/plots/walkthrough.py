"""Figures of ``notebooks/00_walkthrough.ipynb``: samples of each model and the GFT loss terms."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from gftlib.experiments.provenance import plotter
from gftlib.experiments.style import method_color

__all__ = ["samples", "losses"]


@plotter
def samples(panels: Sequence[tuple[str, np.ndarray, str]]) -> Figure:
    """One scatter per ``(title, points (n, 2), method colour key)``, on shared axes [-3, 3]^2."""
    fig, axes = plt.subplots(1, 4, figsize=(13, 3.3), sharex=True, sharey=True)
    for ax, (title, pts, key) in zip(axes, panels):
        ax.scatter(pts[:, 0], pts[:, 1], s=2, alpha=0.5, color=method_color(key))
        ax.set_title(title)
        ax.set_xlabel("$x_1$ (a.u.)")
    axes[0].set_ylabel("$x_2$ (a.u.)")
    axes[0].set_xlim(-3, 3); axes[0].set_ylim(-3, 3)
    return fig


@plotter
def losses(history: Sequence[Mapping[str, float]], betas: Sequence[float]) -> Figure:
    """Target and pretrained loss terms per logged step of ``history`` (left axis) and the schedule
    ``betas`` (one value per fine-tuning step, right axis)."""
    fig, ax1 = plt.subplots(figsize=(5.5, 3.3))
    ax1.plot([h["step"] for h in history], [h["target"] for h in history], label="target (CFM) term",
             color=method_color("gft-coupling"))
    ax1.plot([h["step"] for h in history], [h["pretrained"] for h in history], label="pretrained term",
             color=method_color("pretrained"))
    ax1.set_xlabel("fine-tuning step"); ax1.set_ylabel("loss (squared velocity, a.u.)")
    ax2 = ax1.twinx()
    ax2.plot(range(len(betas)), betas, color="0.4", ls="--", label=r"$\beta$")
    ax2.set_ylabel(r"temperature $\beta$"); ax2.grid(False)
    ax1.legend(loc="upper right")
    return fig
