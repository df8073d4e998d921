"""Figures of ``notebooks/t2_mixture_minimizer.ipynb``: KS statistics, 1-D marginals, learned 2-D laws (T2)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.figure import Figure

from gftlib.experiments.provenance import plotter
from gftlib.experiments.style import method_color
from gftlib.theory.analytic import GaussianMixture, GaussianMixturePath
from gftlib.theory.mixture_flows import marginal_mixture

__all__ = ["ks", "marginals_1d", "learned_2d"]

#: (process, beta, t) -> statistic or particles, as the notebook's ``ks1`` / ``ks2`` / ``samples1``.
Keyed = Mapping[tuple[str, float, float], Any]


@plotter
def ks(ks1: Keyed, ks2: Keyed, betas: Sequence[float], times: Sequence[float], dim2: int, ks_crit: float,
       ks_single: float, control_beta: float, ks_wrong: float, ks_right: float) -> Figure:
    """Max KS over ``times`` against beta for the 1-D flows (``ks1``) and the ``dim2``-D projections (``ks2``),
    ODE and SDE, with the Bonferroni and single-test critical values and the negative control (and its twin)."""
    fig, ax = plt.subplots(figsize=(9.5, 4.2))
    bx = np.array(betas)
    styles = {("1-D", "ode"): dict(marker="o", ls="-"), ("1-D", "sde"): dict(marker="s", ls="-"),
              ("2-D", "ode"): dict(marker="o", ls="--", mfc="white"),
              ("2-D", "sde"): dict(marker="s", ls="--", mfc="white")}
    pal = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for (dim_label, proc), st in styles.items():
        src = ks1 if dim_label == "1-D" else ks2
        vals = [max(src[(proc, b, t)] for t in times) for b in betas]
        lbl = (f"{dim_label if dim_label == '1-D' else f'{dim2}-D projections'}, "
               f"{'ODE (RK4)' if proc == 'ode' else 'SDE (EM)'}")
        ax.plot(bx, vals, color=pal[0] if proc == "ode" else pal[1], label=lbl, **st)
    ax.axhline(ks_crit, color="k", lw=1.2, label=f"critical value {ks_crit:.3f} (Bonferroni, α = 1e-3)")
    ax.axhline(ks_single, color="k", lw=0.8, ls=":", label="single test, 99.9 %")
    ax.scatter([control_beta], [ks_wrong], marker="X", s=90, color=pal[4], zorder=4,
               label="control: ODE velocity in SDE")
    ax.scatter([control_beta], [ks_right], marker="P", s=70, color=pal[2], zorder=4,
               label="control twin: correct drift")
    ax.set_yscale("log")
    ax.set_xlabel(r"temperature $\beta$")
    ax.set_ylabel("KS statistic vs closed form (max over t = 0.5, 1)")
    ax.set_title(r"Flow of $b^\ast_\beta$ vs $m^\beta_t=(p^{\rm tgt}_t+\beta p^{\rm pre}_t)/(1+\beta)$")
    ax.legend(fontsize=7.5, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    return fig


@plotter
def marginals_1d(samples1: Keyed, control: Mapping[tuple[str, float], torch.Tensor],
                 proper: Mapping[tuple[str, float], torch.Tensor], betas: Sequence[float], times: Sequence[float],
                 q1: GaussianMixture, pre1: GaussianMixture, tp1: GaussianMixturePath, pp1: GaussianMixturePath,
                 control_beta: float, control_g: float) -> Figure:
    """Rows: ``times``; columns: each beta, then the control. Histograms of ODE/SDE particles (control:
    wrong and correct SDE drift, particles (n, 1) per ``("sde", t)``) over the closed-form m^beta_t and its
    two weighted parts."""
    pal = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    ncols = len(betas) + 1
    fig, axes = plt.subplots(2, ncols, figsize=(3.1 * ncols, 5.6), sharex=True)
    axes = np.atleast_2d(axes)
    lo = float(min((q1.means - 4 * q1.stds[:, None]).min(), (pre1.means - 4 * pre1.stds[:, None]).min(), -3.5))
    hi = float(max((q1.means + 4 * q1.stds[:, None]).max(), (pre1.means + 4 * pre1.stds[:, None]).max(), 3.5))
    grid = torch.linspace(lo, hi, 400, dtype=torch.float64)
    bins = np.linspace(lo, hi, 70)
    for r, t in enumerate(times):
        for c in range(ncols):
            ax = axes[r, c]
            if c < len(betas):
                beta = betas[c]
                ax.hist(samples1[("ode", beta, t)], bins=bins, density=True, histtype="step", lw=1.3, color=pal[0],
                        label="ODE particles")
                ax.hist(samples1[("sde", beta, t)], bins=bins, density=True, histtype="step", lw=1.3, color=pal[1],
                        label="SDE particles")
                title = rf"$\beta$ = {beta:g}, t = {t:g}"
            else:
                beta = control_beta
                ax.hist(control[("sde", t)][:4000, 0].numpy(), bins=bins, density=True, histtype="step", lw=1.3,
                        color=pal[4], label="control: ODE vel. in SDE")
                ax.hist(proper[("sde", t)][:4000, 0].numpy(), bins=bins, density=True, histtype="step", lw=1.3,
                        color=pal[2], label="correct SDE drift")
                title = rf"control: $\beta$ = {beta:g}, g = {control_g:g}, t = {t:g}"
            m_t = marginal_mixture(tp1, pp1, t, beta)
            ax.plot(grid, m_t.log_prob(grid[:, None]).exp(), color="k", lw=1.2, label=r"closed form $m^\beta_t$")
            ax.plot(grid, tp1.log_prob(grid[:, None], t).exp() / (1 + beta), color=method_color("target"), lw=0.8,
                    ls=":", label=r"$p^{\rm tgt}_t/(1+\beta)$")
            if beta > 0:
                ax.plot(grid, beta * pp1.log_prob(grid[:, None], t).exp() / (1 + beta),
                        color=method_color("pretrained"), lw=0.8, ls="--", label=r"$\beta p^{\rm pre}_t/(1+\beta)$")
            ax.set_title(title, fontsize=9)
            if r == 1:
                ax.set_xlabel("x (a.u.)")
            if c == 0:
                ax.set_ylabel("density (1/a.u.)")
            if r == 0 and c in (0, ncols - 1):
                ax.legend(fontsize=6.5, loc="upper left")
    fig.tight_layout()
    return fig


@plotter
def learned_2d(refs: Mapping[str, torch.Tensor], learned: Mapping[str, Mapping[str, Any]],
               w2: Mapping[str, Mapping[str, float]], naive: torch.Tensor, w2_naive: Mapping[str, float],
               mix: GaussianMixture, beta: float, threshold: float) -> Figure:
    """Panels: the reference samples ``refs["q"]``, ``refs["p_pre"]``; each learned model's samples
    (``learned[name]["samples"]``, (n, d)); the exact naive-drift control ``naive``; titles give the W2
    to the mixture, q and p_pre; contours: the mixture ``mix`` = (q + beta p_pre)/(1 + beta)."""
    NAIVE = "naive (v_tgt + beta v_pre)/(1+beta)"
    d2 = int(refs["q"].shape[1])
    fig, axes = plt.subplots(1, 2 + len(learned), figsize=(4.7 * (2 + len(learned)), 4.6), sharex=True, sharey=True)
    allpts = torch.cat([refs["q"], refs["p_pre"]])
    (x_lo, y_lo), (x_hi, y_hi) = (allpts.min(0).values - 1.0).tolist()[:2], (allpts.max(0).values + 1.0).tolist()[:2]
    gx, gy = torch.meshgrid(torch.linspace(x_lo, x_hi, 200, dtype=torch.float64),
                            torch.linspace(y_lo, y_hi, 200, dtype=torch.float64), indexing="xy")
    plane = torch.zeros(gx.numel(), d2, dtype=torch.float64)
    plane[:, 0], plane[:, 1] = gx.reshape(-1), gy.reshape(-1)
    dens = mix.log_prob(plane).exp().reshape(gx.shape).numpy() if d2 == 2 else None
    show = min(int(naive.shape[0]), 1500)
    ax = axes[0]
    ax.scatter(refs["q"][:show, 0], refs["q"][:show, 1], s=3, alpha=0.4, color=method_color("target"),
               label="target q", rasterized=True)
    ax.scatter(refs["p_pre"][:show, 0], refs["p_pre"][:show, 1], s=3, alpha=0.4, color=method_color("pretrained"),
               label=r"pretrained $p_{\rm pre}$", rasterized=True)
    ax.set_title(r"target $q$ and pretrained $p_{\rm pre}$")
    for ax, name in zip(axes[1:], list(learned) + [NAIVE]):
        xs, dists = (learned[name]["samples"], w2[name]) if name in learned else (naive, w2_naive)
        ax.scatter(xs[:show, 0], xs[:show, 1], s=3, alpha=0.45,
                   color=method_color(name if name in learned else "l2-reg"),
                   label=f"learned ({name})" if name in learned else "exact naive drift (control)", rasterized=True)
        ax.set_title(f"{'control: naive drift' if name == NAIVE else name}: W2 to mixture {dists['mixture']:.2f} "
                     f"(threshold {threshold:.2f})\n(to q {dists['q']:.2f}, to p_pre {dists['p_pre']:.2f})",
                     fontsize=9)
    for ax in axes:
        if dens is not None:
            ax.contour(gx.numpy(), gy.numpy(), dens, levels=6, colors="k", linewidths=0.6, alpha=0.6)
        ax.set_xlabel(r"$x_1$ (a.u.)")
        ax.legend(fontsize=7, loc="lower left", markerscale=3)
    axes[0].set_ylabel(r"$x_2$ (a.u.)")
    fig.suptitle(rf"Learned GFT at $\beta$ = {beta:g} (contours: $(q+\beta p_{{\rm pre}})/(1+\beta)$"
                 + (", first two coordinates)" if d2 > 2 else ")"), y=1.02)
    fig.tight_layout()
    return fig
