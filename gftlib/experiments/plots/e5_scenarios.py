"""Figures of ``notebooks/e5_scenarios.ipynb``: limited data, its samples, stress, efficiency, stochastic flows."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from gftlib.experiments.provenance import plotter
from gftlib.experiments.style import method_color, plot_mean_band

__all__ = ["limited_data", "limited_samples", "stress", "efficiency", "sde"]

#: ``{method: per-seed values}``.
PerSeed = Mapping[str, Sequence[float]]


def _bars(ax: Any, values: PerSeed, label: str, ref: float | None = None, ref_label: str = "") -> None:
    """Mean over seeds (bar), seeds (dots) per method; an optional dotted reference line."""
    for i, (m, v) in enumerate(values.items()):
        ax.bar(i, np.mean(v), color=method_color(m), alpha=0.8)
        ax.scatter(np.full(len(v), i), v, color="k", s=8, zorder=3)
    ax.set_xticks(range(len(values)), list(values), rotation=35, ha="right")
    ax.set_ylabel(label)
    if ref is not None:
        ax.axhline(ref, color=method_color("pretrained"), ls=":", lw=1.5, label=ref_label)
        ax.legend(fontsize=8)


@plotter
def limited_data(limited: Mapping[int, Mapping[str, PerSeed]], methods: Sequence[str], pretrained_w2: float,
                 noise_floor: float, title: str) -> Figure:
    """Against n_target (``limited[n][key][method]``, per seed): final W2 (with the pretrained model's W2 and
    the noise floor), the closer-to-train fraction f (null 1/2) and the distance ratio (null 1)."""
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    ns = sorted(limited)
    for k, m in enumerate(methods):
        x = np.arange(len(ns)) + (k - (len(methods) - 1) / 2) * 0.12
        for ax, key in zip(axes, ("w2", "mem_closer_to_train", "mem_ratio")):
            vals = [limited[n][key][m] for n in ns]
            ax.errorbar(x, [np.mean(v) for v in vals], yerr=[np.std(v, ddof=1) for v in vals],
                        color=method_color(m), marker="o", ms=4, capsize=2, lw=1, label=m)
    axes[0].axhline(pretrained_w2, color=method_color("pretrained"), ls=":", label="pretrained")
    axes[0].axhline(noise_floor, color="k", ls="--", lw=1, label="noise floor")
    axes[1].axhline(0.5, color="k", ls="--", lw=1, label="no memorisation (1/2)")
    axes[2].axhline(1.0, color="k", ls="--", lw=1)
    for ax, lab in zip(axes, (r"$W_2$ to held-out target (a.u.)", "closer-to-train fraction $f$",
                              r"$\bar d(y,T)/\bar d(y,H)$")):
        ax.set_xticks(range(len(ns)), [str(n) for n in ns])
        ax.set_xlabel(r"target training samples $n_{\rm target}$")
        ax.set_ylabel(lab)
    axes[0].legend(fontsize=7, ncol=2)
    axes[1].legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


@plotter
def limited_samples(samples: Mapping[str, np.ndarray], held: np.ndarray, train_pts: np.ndarray) -> Figure:
    """One panel per method: its samples (n, 2) over the held-out target (grey), training points as crosses."""
    fig, axes = plt.subplots(1, len(samples), figsize=(2.6 * len(samples), 2.8), sharex=True, sharey=True)
    axes = np.atleast_1d(axes)
    for ax, (m, pts) in zip(axes, samples.items()):
        ax.scatter(held[:, 0], held[:, 1], s=2, color="0.85", rasterized=True)
        ax.scatter(pts[:, 0], pts[:, 1], s=2, color=method_color(m), rasterized=True)
        ax.scatter(train_pts[:, 0], train_pts[:, 1], s=10, color="k", marker="x")
        ax.set_title(m, fontsize=9)
        ax.set_xlim(-3.2, 3.2)
        ax.set_ylim(-3.2, 3.2)
        ax.set_aspect("equal")
        ax.set_xlabel("$x_1$ (a.u.)")
    axes[0].set_ylabel("$x_2$ (a.u.)")
    fig.tight_layout()
    return fig


@plotter
def stress(eval_steps: np.ndarray, w2_curves: Mapping[str, Sequence[np.ndarray]], noise_floor: float,
           w2_iv: PerSeed, title: str) -> Figure:
    """(left) W2 over training at the stress learning rate, mean +- 1 std over seeds per method; (right) the
    instantaneous variance of W2 per method."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8), gridspec_kw={"width_ratios": [3, 2]})
    for m, curves in w2_curves.items():
        plot_mean_band(axes[0], eval_steps, curves, color=method_color(m), label=m, marker="o", markersize=3)
    axes[0].axhline(noise_floor, color="k", ls="--", lw=1, label="noise floor")
    axes[0].set_xlabel("fine-tuning step")
    axes[0].set_ylabel(r"$W_2$ to held-out target (a.u.)")
    axes[0].set_title(title)
    axes[0].legend(fontsize=7, ncol=2)
    _bars(axes[1], w2_iv, r"instantaneous variance of $W_2$ (a.u.$^2$)")
    fig.tight_layout()
    return fig


@plotter
def efficiency(dopri_nfe: PerSeed, path_length: PerSeed, pretrained_nfe: float, pretrained_length: float,
               title: str) -> Figure:
    """dopri5 NFE and path length per method after fine-tuning, against the pretrained model's values."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    _bars(axes[0], dopri_nfe, "dopri5 NFE", pretrained_nfe, "pretrained")
    _bars(axes[1], path_length, r"path length $\mathbb{E}\int|b|\,dt$ (a.u.)", pretrained_length, "pretrained")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


@plotter
def sde(w2: PerSeed, path_length: PerSeed, pretrained_w2: float, samples: np.ndarray | None,
        held: np.ndarray | None, title: str) -> Figure:
    """Stochastic flows: final W2 (against the pretrained model's) and drift path length per method, and
    the samples (n, 2) of gft-drift over the held-out target when given."""
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6), gridspec_kw={"width_ratios": [1, 1, 1.1]})
    _bars(axes[0], w2, r"$W_2$ to held-out target (a.u.)", pretrained_w2, "pretrained")
    _bars(axes[1], path_length, r"drift path length $\sum|b|\,\Delta t$ (a.u.)")
    if samples is not None:
        axes[2].scatter(held[:, 0], held[:, 1], s=2, color="0.8", rasterized=True, label="held-out target")
        axes[2].scatter(samples[:, 0], samples[:, 1], s=2, color=method_color("gft-drift"), rasterized=True,
                        label="gft-drift")
        axes[2].set_aspect("equal")
        axes[2].legend(fontsize=7, markerscale=4)
    axes[2].set_xlabel("$x_1$ (a.u.)")
    axes[2].set_ylabel("$x_2$ (a.u.)")
    fig.suptitle(title)
    fig.tight_layout()
    return fig
