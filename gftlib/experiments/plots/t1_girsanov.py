"""Figures of ``notebooks/t1_girsanov.ipynb``: Girsanov log ratios and J_beta two ways (THEORY T1)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from gftlib.experiments.provenance import plotter

__all__ = ["log_ratio", "objective"]


@plotter
def log_ratio(lr: np.ndarray, it: np.ndarray, kl_chain: float, kl_cont: float, lr2: np.ndarray, it2: np.ndarray,
              mean_integral: float, mean_log_ratio: float) -> Figure:
    """(a) per-path log ratio ``lr`` and path integral ``it`` (n,) of the OU pair with the closed forms
    (EM chain ``kl_chain``, continuous ``kl_cont``); (b) the running mean of ``lr`` with +- 3 SE;
    (c) ``lr2`` against ``it2`` per path for P^tgt vs P^pre, with their means."""
    fig, axes = plt.subplots(1, 3, figsize=(14, 3.8))
    ax = axes[0]
    bins = np.linspace(np.quantile(lr, 0.001), np.quantile(lr, 0.999), 60)
    ax.hist(lr, bins=bins, density=True, alpha=0.55, label="log ratio $L$ per path")
    ax.hist(it, bins=bins, density=True, alpha=0.55, label="path integral $I$ per path")
    ax.axvline(kl_chain, color="k", lw=1.5, label="closed form (EM chain)")
    ax.axvline(kl_cont, color="k", lw=1.2, ls=":", label="closed form (continuous)")
    ax.set_xlabel("per-path value (nats)")
    ax.set_ylabel("density (1/nats)")
    ax.set_title("OU pair: per-path Girsanov quantities")
    ax.legend(fontsize=8)

    ax = axes[1]
    nn_ = np.unique(np.geomspace(1, len(lr), 300).astype(int))
    run = (np.cumsum(lr) / np.arange(1, len(lr) + 1))[nn_ - 1]
    sd = np.std(lr, ddof=1)
    ax.fill_between(nn_, kl_chain - 3 * sd / np.sqrt(nn_), kl_chain + 3 * sd / np.sqrt(nn_), color="0.85",
                    label="closed form ± 3 SE")
    ax.plot(nn_, run, lw=1.2, label="running mean of $L$")
    ax.axhline(kl_chain, color="k", lw=1.2, label="closed form (EM chain)")
    ax.axhline(kl_cont, color="k", lw=1.0, ls=":", label="closed form (continuous)")
    ax.set_xscale("log")
    ax.set_ylim(kl_chain - 12 * sd / np.sqrt(100), kl_chain + 12 * sd / np.sqrt(100))
    ax.set_xlabel("number of paths")
    ax.set_ylabel("KL estimate (nats)")
    ax.set_title("OU pair: convergence of the mean log ratio")
    ax.legend(fontsize=8)

    ax = axes[2]
    sel = slice(0, min(2000, len(lr2)))  # a subsample keeps the figure light
    ax.scatter(it2[sel], lr2[sel], s=3, alpha=0.35, label="paths", rasterized=True)
    lim = [min(it2.min(), np.quantile(lr2, 0.001)), max(it2.max(), np.quantile(lr2, 0.999))]
    ax.plot(lim, lim, color="k", lw=1, label="$L = I$")
    ax.axvline(mean_integral, color="C1", lw=1.2, ls="--", label=f"mean $I$ = {mean_integral:.3f}")
    ax.axhline(mean_log_ratio, color="C2", lw=1.2, ls="--", label=f"mean $L$ = {mean_log_ratio:.3f}")
    ax.set_xlabel("path integral $I$ (nats)")
    ax.set_ylabel("log ratio $L$ (nats)")
    ax.set_title(r"$P^{\rm tgt}$ vs $P^{\rm pre}$: $L$ vs $I$ per path")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


@plotter
def objective(rows: Sequence[Mapping[str, Any]], linear: Sequence[tuple[float, float]], betas: Sequence[float],
              kl_tgt: Sequence[float], kl_pre: Sequence[float], all_z: Sequence[float], z_star: float) -> Figure:
    """(a) J_beta(b) / (1 + beta) by marginal Monte Carlo and by Girsanov per linear drift ``linear[i] = (a, c)``
    (``rows`` as in the results' "objective"; lines: 2 [kl_tgt[i] + beta kl_pre[i]] / (1 + beta));
    (b) every comparison's z-score ``all_z`` (OU three, tgt/pre one, then one per drift and beta) against +- z*."""
    BETAS, LINEAR, Z_STAR = betas, linear, z_star
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2), gridspec_kw={"width_ratios": [1.5, 1]})
    ax = axes[0]
    palette = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    span = max(BETAS) - min(BETAS) if len(BETAS) > 1 else 1.0
    offset = 0.015 * span
    beta_grid = np.linspace(min(BETAS), max(BETAS), 50) if len(BETAS) > 1 else np.array(BETAS)
    handles = []
    for i, (a, c) in enumerate(LINEAR):
        r_i = [r for r in rows if r["a"] == a and r["c"] == c]
        col = palette[i % len(palette)]
        bb = np.array([r["beta"] for r in r_i])
        norm = 1 + bb
        ax.errorbar(bb - offset, np.array([r["J_marginal"] for r in r_i]) / norm,
                    yerr=3 * np.array([r["se_marginal"] for r in r_i]) / norm, fmt="o", color=col, ms=5, capsize=3)
        ax.errorbar(bb + offset, np.array([r["J_girsanov"] for r in r_i]) / norm,
                    yerr=3 * np.array([r["se_girsanov"] for r in r_i]) / norm, fmt="s", color=col, mfc="white", ms=5,
                    capsize=3)
        ax.plot(beta_grid, 2 * (kl_tgt[i] + beta_grid * kl_pre[i]) / (1 + beta_grid), color=col, lw=0.8,
                alpha=0.6)
        handles.append(Line2D([], [], color=col, lw=2, label=f"$b_{i + 1}(x)={a:g}\\,x{c:+g}$"))
    handles += [Line2D([], [], color="0.3", marker="o", ls="", label="marginal Monte Carlo"),
                Line2D([], [], color="0.3", marker="s", mfc="white", ls="", label="Girsanov: 2[KL + β KL]")]
    ax.set_xlabel(r"temperature $\beta$")
    ax.set_ylabel(r"$J_\beta(b)\,/\,(1+\beta)$ (nats)")
    ax.set_title(r"$J_\beta(b)$ two ways (normalised by $1+\beta$; bars ± 3 SE)")
    ax.legend(handles=handles, fontsize=8, ncol=2)

    ax = axes[1]
    labels = ["OU: L vs closed", "OU: I vs closed", "OU: L − I", "tgt/pre: L − I"] + \
             [f"b{i + 1}, β={r['beta']:g}" for i in range(len(LINEAR))
              for r in rows[i * len(BETAS):(i + 1) * len(BETAS)]]
    yy = np.arange(len(all_z))
    ax.axvspan(-3, 3, color="0.85", alpha=0.6, label="within 3 SE")
    ax.axvline(-Z_STAR, color="k", ls="--", lw=1, label=f"threshold ±z* = ±{Z_STAR:.2f}")
    ax.axvline(Z_STAR, color="k", ls="--", lw=1)
    ax.scatter(all_z, yy, color=palette[0], zorder=3, s=18)
    ax.set_yticks(yy)
    ax.set_yticklabels(labels, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlim(-1.15 * max(Z_STAR, np.max(np.abs(all_z))), 1.15 * max(Z_STAR, np.max(np.abs(all_z))))
    ax.set_xlabel("z-score (standard errors)")
    ax.set_title("all comparisons")
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return fig
