"""Figures of ``notebooks/e1_domain_shift_2d.ipynb``: W2 curves, loss and beta, end-of-training measures, samples."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from gftlib.experiments.provenance import plotter
from gftlib.experiments.style import method_color, plot_mean_band

__all__ = ["w2_curves", "loss_beta", "paths", "samples", "PANELS"]

#: The end-of-training measures of :func:`paths`: (key of the unit metrics, axis label). The
#: ``seconds_to_level`` panel is a wall time (machine- and load-dependent, not reproducible).
PANELS = [("path_length", r"path length $\mathbb{E}\int|b|\,dt$"), ("dopri_nfe", "dopri5 NFE"),
          ("iv_loss", "IV of target loss"), ("spearman", r"Spearman $\rho$(step, $W_2$)"),
          ("steps_to_level", "steps to 1.05 × best baseline $W_2$"),
          ("seconds_to_level", "training seconds to 1.05 × best\nbaseline $W_2$ (this machine)"),
          ("w2", r"final $W_2$"), ("precision", "precision"), ("recall", "recall"), ("density", "density"),
          ("coverage", "coverage")]


@plotter
def w2_curves(units: Mapping[str, Sequence[Any]], per_pair: Mapping[str, Mapping[str, Any]],
              methods: Sequence[str], eval_steps: np.ndarray) -> Figure:
    """One panel per pair: W2 to the held-out target over training, mean +- 1 std over the pair's units
    (``units[pair][i].runs[method].w2`` at ``eval_steps``), with the noise floor and the pretrained model."""
    fig, axes = plt.subplots(1, len(units), figsize=(4.2 * len(units), 3.8), squeeze=False)
    for ax, (p, us) in zip(axes[0], units.items()):
        for m in methods:
            plot_mean_band(ax, eval_steps, [u.runs[m].w2 for u in us], color=method_color(m), label=m,
                           marker="o", markersize=3)
        ax.axhline(per_pair[p]["reference"]["floor"], color="k", ls="--", lw=1, label="noise floor")
        ax.axhline(per_pair[p]["reference"]["pretrained_target"], color=method_color("pretrained"), ls=":", lw=1.5,
                   label="pretrained")
        ax.set_xlabel("fine-tuning step")
        ax.set_ylabel(r"$W_2$ to held-out target (a.u.)")
        ax.set_title(f"{p} ({len(us)} seeds)")
    axes[0][0].legend(ncol=2, fontsize=7)
    fig.tight_layout()
    return fig


@plotter
def loss_beta(units: Mapping[str, Sequence[Any]], methods: Sequence[str], scheduled: Sequence[str],
              schedule_kind: str) -> Figure:
    """Per pair the target CFM term over training (mean +- 1 std over units); last panel: the logged beta
    of the first unit's first ``scheduled`` method."""
    fig, axes = plt.subplots(1, len(units) + 1, figsize=(4.2 * (len(units) + 1), 3.4), squeeze=False)
    for ax, (p, us) in zip(axes[0], units.items()):
        log_steps = us[0].runs[methods[0]].log_steps
        for m in methods:
            plot_mean_band(ax, log_steps, [u.runs[m].loss_target for u in us], color=method_color(m), label=m)
        ax.set_yscale("log")
        ax.set_xlabel("fine-tuning step")
        ax.set_ylabel("target CFM term (a.u.)")
        ax.set_title(p)
    axes[0][0].legend(ncol=2, fontsize=7)
    ax = axes[0][-1]
    if scheduled:
        r0 = units[next(iter(units))][0].runs[scheduled[0]]
        ax.plot(r0.log_steps, r0.beta, color="k", label="logged β (" + ", ".join(scheduled) + ")")
        ax.legend(fontsize=7)
    ax.set_xlabel("fine-tuning step")
    ax.set_ylabel(r"temperature $\beta$")
    ax.set_title(f"cooling schedule ({schedule_kind})")
    fig.tight_layout()
    return fig


@plotter
def paths(metrics: Mapping[str, Sequence[Mapping[str, Mapping[str, float]]]], methods: Sequence[str],
          jensen_bound: float) -> Figure:
    """Bars (mean over all units, pairs pooled) and dots (units) of every measure in :data:`PANELS`;
    ``metrics[pair][unit][method][key]``; the path-length panel shows T5's bound ``jensen_bound``."""
    ncols = -(-len(PANELS) // 2)
    fig, axes = plt.subplots(2, ncols, figsize=(3.4 * ncols, 6.4))
    xs = np.arange(len(methods))
    for ax in axes.ravel()[len(PANELS):]:
        ax.axis("off")
    for ax, (key, label) in zip(axes.ravel(), PANELS):
        for i, m in enumerate(methods):
            v = np.asarray([u[m][key] for p in metrics for u in metrics[p]])
            ax.bar(i, v.mean(), color=method_color(m), alpha=0.8)
            ax.scatter(np.full(v.size, i), v, color="k", s=5, zorder=3)
        ax.set_xticks(xs, methods, rotation=40, ha="right", fontsize=7)
        ax.set_ylabel(label)
    axes[0][0].axhline(jensen_bound, color="0.4", lw=1, ls="--", label=r"$\mathbb{E}|x_1-x_0|$, independent")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    return fig


@plotter
def samples(rows: Sequence[tuple[str, np.ndarray, Sequence[tuple[str, np.ndarray, Any]]]], ncols: int) -> Figure:
    """One row per ``(pair, held-out target (n, 2), [(title, samples (m, 2), colour), ...])``, ``ncols``
    panels each, every panel over the held-out target in grey."""
    fig, axes = plt.subplots(len(rows), ncols, figsize=(2.3 * ncols, 2.3 * len(rows)), squeeze=False)
    for row, (p, held, panels) in zip(axes, rows):
        for ax, (title, pts, color) in zip(row, panels):
            ax.scatter(held[:, 0], held[:, 1], s=1, color="0.8", rasterized=True)
            ax.scatter(pts[:, 0], pts[:, 1], s=1, color=color, rasterized=True)
            ax.set_title(title, fontsize=8)
            ax.set_xlim(-3.2, 3.2)
            ax.set_ylim(-3.2, 3.2)
            ax.set_aspect("equal")
            ax.set_xticks([])
            ax.set_yticks([])
        row[0].set_ylabel(p, fontsize=8)
    fig.tight_layout()
    return fig
