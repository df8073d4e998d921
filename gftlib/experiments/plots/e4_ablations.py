"""Figures of ``notebooks/e4_ablations.ipynb``: final W2 and path length per setting, and the schedules."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from gftlib.experiments.provenance import plotter
from gftlib.experiments.style import method_color

__all__ = ["small_multiples", "schedules"]

#: ``results[panel]``: entries ``{"label", "method", "config", "n_target", "w2", "path_length", ...}``.
Results = Mapping[str, Sequence[Mapping[str, Any]]]


@plotter
def small_multiples(results: Results, floor: float, pretrained_target: float) -> Figure:
    """One column per ablation panel: final W2 (top) and path length (bottom) per setting (bars: mean
    over seeds, dots: seeds; the target sample size panel as lines over n); dashed: noise floor ``floor``,
    dotted: the pretrained model's W2 ``pretrained_target``."""
    panels = list(results)
    fig, axes = plt.subplots(2, len(panels), figsize=(3.3 * len(panels), 6.2), sharey="row")
    for j, panel in enumerate(panels):
        entries = results[panel]
        if panel == "target sample size":  # lines over n (log x), one per method
            for m in dict.fromkeys(e["method"] for e in entries):
                sub = [e for e in entries if e["method"] == m]
                n = [e["n_target"] for e in sub]
                for row, key in enumerate(("w2", "path_length")):
                    mean = [np.mean(e[key]) for e in sub]
                    std = [np.std(e[key], ddof=1) if len(e[key]) > 1 else 0.0 for e in sub]
                    axes[row, j].errorbar(n, mean, yerr=std, color=method_color(m), marker="o", capsize=3, label=m)
            for row in range(2):
                axes[row, j].set_xscale("log", base=2)
                axes[row, j].set_xlabel("target samples n_target", fontsize=9)
            axes[1, j].legend(fontsize=8)
        else:
            for i, e in enumerate(entries):
                for row, key in enumerate(("w2", "path_length")):
                    vals = np.asarray(e[key])
                    axes[row, j].bar(i, vals.mean(), color=method_color(e["method"]), alpha=0.75, edgecolor="none")
                    axes[row, j].scatter(np.full(vals.size, i), vals, color="k", s=8, zorder=3)
            for row in range(2):
                axes[row, j].set_xticks(range(len(entries)), [e["label"] for e in entries], rotation=45,
                                        ha="right", fontsize=8)
        axes[0, j].set_title(panel, fontsize=10)
        axes[0, j].axhline(floor, color="k", ls="--", lw=1)
        axes[0, j].axhline(pretrained_target, color=method_color("pretrained"), ls=":", lw=1.5)
    axes[0, 0].set_ylabel(r"final $W_2$ to held-out (a.u.)")
    axes[1, 0].set_ylabel(r"path length $\mathbb{E}\int|b|\,dt$ (a.u.)")
    fig.tight_layout()
    return fig


@plotter
def schedules(results: Results, steps: int) -> Figure:
    """beta_k over ``steps`` fine-tuning steps of every schedule of the first three panels (shape, beta_0,
    stages), from each entry's ``config.schedule()``."""
    panels = list(results)
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.2), sharey=False)
    for ax, panel in zip(axes, panels[:3]):
        for e in results[panel]:
            ax.plot(np.arange(steps), e["config"].schedule().values(), label=e["label"])
        ax.set_title(panel, fontsize=10)
        ax.set_xlabel("fine-tuning step")
        ax.set_ylabel(r"$\beta$")
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
