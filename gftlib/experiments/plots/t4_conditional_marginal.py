"""Figure of ``notebooks/t4_conditional_marginal.ipynb``: conditional targets and gradient differences (T4)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.figure import Figure
from matplotlib.ticker import FormatStrFormatter, LogLocator

from gftlib.experiments.provenance import plotter
from gftlib.experiments.style import method_color

__all__ = ["gradients"]


@plotter
def gradients(xs: torch.Tensor, scatter: Mapping[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]],
              records: Sequence[Mapping[str, Any]], control: Sequence[Mapping[str, Any]],
              configs: Sequence[tuple[str, str]], beta_list: Sequence[float], ns: Sequence[int]) -> Figure:
    """(a, b) per coupling ("independent", "ot"): conditional targets ``scatter[name] = (x_t, u_t, b(xs))`` at
    t = 1/2 over the marginal field on the grid ``xs`` (m,); (c..e) for up to three betas, the relative gradient
    difference of every (coupling, form) in ``configs`` against the Monte Carlo size n (rows of ``records``,
    with the negative ``control``) and the 1/sqrt(n) law."""
    n_beta_panels = min(len(beta_list), 3)
    fig, axes = plt.subplots(1, 2 + n_beta_panels, figsize=(5.2 * (2 + n_beta_panels), 4.2))
    for ax, (name, color) in zip(axes[:2], (("independent", method_color("ft")), ("ot", method_color("ft-ot")))):
        xt, target, field_vals = scatter[name]
        ax.scatter(xt, target, s=5, alpha=0.35, color=color, label=r"conditional $u_t$")
        ax.plot(xs, field_vals, color="k", lw=2, label=r"marginal $b(x, t)$")
        ax.set(xlabel=r"$x_t$ (a.u.)", ylabel="velocity (a.u./time)",
               title=f"({'ab'[name == 'ot']}) {'OT' if name == 'ot' else name} coupling, t = 1/2", xlim=(-4, 4))
        ax.legend(fontsize=8, loc="upper left")

    styles = {"drift": "-", "coupling": "--"}
    markers = {"independent": "o", "ot": "s"}
    for j, b in enumerate(beta_list[:n_beta_panels]):
        ax = axes[2 + j]
        for c, f in configs:
            rows = [r for r in records if (r["coupling"], r["form"], r["beta"]) == (c, f, b)]
            color = method_color("ft" if c == "independent" else "ft-ot")
            nn_ = np.array([r["n"] for r in rows])
            rd = np.array([r["rel_diff"] for r in rows])
            ax.scatter(nn_ * (0.96 if f == "drift" else 1.04), rd, s=7, color=color, alpha=0.35, marker=markers[c])
            mean = np.array([np.exp(np.mean(np.log(rd[nn_ == n]))) for n in ns])
            ax.plot(ns, mean, styles[f], color=color, lw=2, marker=markers[c], ms=4,
                    label=f"{'OT' if c == 'ot' else c} coupling, {f} form")
        anchor = np.exp(np.mean(np.log([r["rel_diff"] for r in records if r["beta"] == b and r["n"] == ns[0]])))
        ax.plot(ns, anchor * np.sqrt(ns[0] / np.array(ns)), color="0.3", lw=3, alpha=0.45,
                label=r"$\propto 1/\sqrt{n}$")
        cm = np.array([np.mean([r["rel_diff"] for r in control if r["n"] == n]) for n in ns])
        ax.plot(ns, cm, ":", color=method_color("l2-reg"), lw=2, label="control: OT pairs, independent field")
        ax.set(xscale="log", yscale="log", xlabel="Monte Carlo sample size n",
               ylabel=r"$|\nabla \mathcal{L}^{\rm cond} - \nabla J_\beta|\,/\,|\nabla J_\beta|$",
               title=f"({'cde'[j]}) relative gradient difference, beta = {b:g}")
        ax.set_xticks(ns, [str(n) for n in ns], rotation=45)
        ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
        ax.yaxis.set_major_formatter(FormatStrFormatter("%g"))   # plain labels: mathtext ticks are slow to draw
        ax.minorticks_off()
    handles, labels = axes[-1].get_legend_handles_labels()
    fig.tight_layout(rect=(0, 0.1, 1, 1))
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), fontsize=9, bbox_to_anchor=(0.62, 0.0))
    return fig
