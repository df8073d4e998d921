"""Figures of ``notebooks/e2_image_shift.ipynb``: sample grids, end-of-training metrics, training curves."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from gftlib.experiments.provenance import plotter
from gftlib.experiments.style import method_color, plot_mean_band

__all__ = ["samples", "metrics", "training"]


@plotter
def samples(panels: Sequence[tuple[str, np.ndarray, Any]], methods: Sequence[str], title: str) -> Figure:
    """Up to four image grids per row, one per ``(title, grid image (H, W, 3), colour)``; models (``methods``
    and "pretrained") get a coloured title and a thick frame."""
    ncols = min(4, len(panels))
    nrows = int(np.ceil(len(panels) / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(2.5 * ncols, 2.7 * nrows))
    axes = np.atleast_1d(axes).ravel()
    for ax, (name, grid, color) in zip(axes, panels):
        model = name in methods or name == "pretrained"
        ax.imshow(grid, interpolation="nearest")
        ax.set_title(name, fontsize=10, color=color if model else "k")
        ax.set_xticks([])
        ax.set_yticks([])
        for spine in ax.spines.values():
            spine.set_edgecolor(color)
            spine.set_linewidth(2.5 if model else 1.0)
    for ax in axes[len(panels):]:
        ax.axis("off")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


@plotter
def metrics(final: Mapping[str, Mapping[str, Sequence[float]]], panels: Sequence[tuple[str, str]],
            references: Mapping[str, tuple[float, float, float]], pretrained_path_length: float,
            pretrained_straightness: float) -> Figure:
    """One panel per ``(key, axis label)``: per method (``final[m][key]``, per seed) bar = mean +- std and dots;
    a distance key in ``references`` gets its (null mean, training distribution, pretrained) lines."""
    methods = list(final)
    fig, axes = plt.subplots(1, len(panels), figsize=(3.3 * len(panels), 3.8))
    xs = np.arange(len(methods))
    for ax, (key, label) in zip(axes, panels):
        for i, m in enumerate(methods):
            vals = np.asarray(final[m][key], dtype=float)
            ax.bar(i, vals.mean(), color=method_color(m), alpha=0.85,
                   yerr=vals.std(ddof=1) if vals.size > 1 else None, capsize=3)
            ax.scatter(np.full(vals.size, i), vals, color="k", s=8, zorder=3)
        if key in references:
            null_mean, train, pretrained = references[key]
            ax.axhline(null_mean, color="k", ls="--", lw=1, label="null (held-out sample)")
            ax.axhline(train, color="0.45", ls="-.", lw=1, label="training distribution")
            ax.axhline(pretrained, color=method_color("pretrained"), ls=":", lw=1.8, label="pretrained")
        elif key == "path_length":
            ax.axhline(pretrained_path_length, color=method_color("pretrained"), ls=":", lw=1.8, label="pretrained")
        else:
            ax.axhline(pretrained_straightness, color=method_color("pretrained"), ls=":", lw=1.8,
                       label="pretrained")
            lo = min(min(np.min(final[m][key]) for m in methods), pretrained_straightness)
            ax.set_ylim(max(0.0, lo - 0.02), 1.0)
        ax.set_xticks(xs, methods, rotation=40, ha="right")
        ax.set_ylabel(label)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), fontsize=9, bbox_to_anchor=(0.5, -0.02))
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    return fig


@plotter
def training(runs: Mapping[str, Sequence[Any]], pretrained_loss: float, scheduled: Sequence[str]) -> Figure:
    """Over training, mean +- std over seeds (``runs[m][i]``): sliced W2 to H, held-out CFM loss (with the
    pretrained model's), and beta of the methods among ``scheduled`` (line styles in that order)."""
    methods = list(runs)
    eval_steps = runs[methods[0]][0].eval_steps
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    for m in methods:
        plot_mean_band(axes[0], eval_steps, [r.curve_sw for r in runs[m]], color=method_color(m), label=m,
                       marker="o", markersize=3)
        plot_mean_band(axes[1], eval_steps, [r.curve_loss for r in runs[m]], color=method_color(m), label=m,
                       marker="o", markersize=3)
        if m in scheduled:
            axes[2].plot(runs[m][0].log_steps, runs[m][0].beta, color=method_color(m), label=m,
                         ls=("-", "--", ":")[list(scheduled).index(m)], lw=2)
    axes[1].axhline(pretrained_loss, color=method_color("pretrained"), ls=":", lw=1.5, label="pretrained (init)")
    axes[1].set_yscale("log")
    for ax, ylabel, title in zip(axes, (r"sliced $W_2$ to $H$ (a.u.)", "held-out CFM loss (a.u.)",
                                        r"temperature $\beta$"),
                                 ("distance to the target", "held-out CFM loss (log scale)", "cooling schedule")):
        ax.set_xlabel("fine-tuning step")
        ax.set_ylabel(ylabel)
        ax.set_title(title)
    handles, labels = axes[1].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), fontsize=9, bbox_to_anchor=(0.5, -0.02))
    if any(m in scheduled for m in methods):
        axes[2].legend(fontsize=8)
    else:
        axes[2].text(0.5, 0.5, "no scheduled method selected", ha="center", va="center",
                     transform=axes[2].transAxes)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    return fig
