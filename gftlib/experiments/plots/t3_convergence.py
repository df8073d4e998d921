"""Figures of ``notebooks/t3_convergence.ipynb``: KL / TV against the T3 bounds, and a cooling schedule."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import FormatStrFormatter

from gftlib.experiments.provenance import plotter
from gftlib.experiments.style import method_color
from gftlib.schedules import CoolingSchedule
from gftlib.theory.analytic import GaussianMixture
from gftlib.theory.quadrature import mixture_density, quadrature_range

__all__ = ["kl_tv", "schedule"]


@plotter
def kl_tv(q: GaussianMixture, p_pre: GaussianMixture, lo: float, hi: float, beta_grid: np.ndarray, kl_fwd: np.ndarray,
          kl_rev: np.ndarray, tv_q_m: np.ndarray, bound: np.ndarray, tv_exact: float,
          kl_pretrained_to_target: float) -> Figure:
    """(a) densities of q, p_pre and m^beta_1 for beta = 0.1, 1, 10 (view: 5 stds around the components of the
    quadrature range [lo, hi]); (b) KL(q || m) against log(1 + beta) and Pinsker; (c) TV(q, m) against
    beta/(1+beta) TV(q, p_pre); (d) the reverse KL(m || q), which T3 does not bound. Arrays over ``beta_grid``."""
    lam = beta_grid / (1 + beta_grid)
    pos = beta_grid > 0
    xs = np.linspace(lo, hi, 4001)
    view_lo, view_hi = quadrature_range(q, p_pre, width=5.0)
    xs = xs[(xs > view_lo) & (xs < view_hi)]
    fig, axes = plt.subplots(1, 4, figsize=(17, 3.8))
    ax = axes[0]
    ax.plot(xs, mixture_density(q, xs), color=method_color("target"), lw=2, label="target $q$")
    ax.plot(xs, mixture_density(p_pre, xs), color=method_color("pretrained"), lw=2, label=r"pretrained $p_{\rm pre}$")
    show = [b for b in (0.1, 1.0, 10.0)]
    cmap = plt.get_cmap("viridis")
    for i, b in enumerate(show):
        ax.plot(xs, mixture_density(q.mix(p_pre, b), xs), color=cmap(0.15 + 0.3 * i), lw=1.2, ls="--",
                label=fr"$m^\beta_1$, $\beta={b:g}$")
    ax.set(xlabel="x (a.u.)", ylabel="density", title="(a) target, pretrained, optimum")
    ax.set_ylim(0, ax.get_ylim()[1] * 1.35)
    ax.legend(fontsize=8, ncol=2, loc="upper center")

    ax = axes[1]
    ax.loglog(beta_grid[pos], bound[pos], color="k", lw=1.5, label=r"bound $\log(1+\beta)$")
    ax.loglog(beta_grid[pos], kl_fwd[pos], "o-", color=method_color("gft-coupling"), ms=4,
              label=r"$\mathrm{KL}(q\,\|\,m^\beta_1)$")
    ax.loglog(beta_grid[pos], 2 * tv_q_m[pos] ** 2, ":", color="0.4", label=r"Pinsker $2\,\mathrm{TV}^2$")
    ax.set(xlabel=r"temperature $\beta$", ylabel="divergence (nats)", title="(b) KL vs T3 bound")
    ax.legend(fontsize=8)

    ax = axes[2]
    ax.semilogx(beta_grid[pos], lam[pos] * tv_exact, color="k", lw=1.5,
                label=r"$\frac{\beta}{1+\beta}\,\mathrm{TV}(q,p_{\rm pre})$ (exact)")
    ax.semilogx(beta_grid[pos], tv_q_m[pos], "o", color=method_color("gft-drift"), ms=4,
                label=r"$\mathrm{TV}(q, m^\beta_1)$ (quadrature)")
    ax.axhline(tv_exact, color="0.5", ls=":", lw=1, label=r"$\mathrm{TV}(q, p_{\rm pre})$")
    ax.set(xlabel=r"temperature $\beta$", ylabel="total variation", title="(c) TV identity")
    ax.legend(fontsize=8)

    ax = axes[3]
    ax.loglog(beta_grid[pos], bound[pos], color="k", lw=1.5, label=r"$\log(1+\beta)$")
    ax.loglog(beta_grid[pos], kl_fwd[pos], "o-", color=method_color("gft-coupling"), ms=3,
              label=r"$\mathrm{KL}(q\,\|\,m^\beta_1)$ (bounded)")
    ax.loglog(beta_grid[pos], kl_rev[pos], "s-", color=method_color("l2-reg"), ms=3,
              label=r"$\mathrm{KL}(m^\beta_1\,\|\,q)$ (no bound)")
    ax.axhline(kl_pretrained_to_target, color=method_color("l2-reg"), ls=":", lw=1,
               label=r"$\mathrm{KL}(p_{\rm pre}\,\|\,q)$")
    ax.set(xlabel=r"temperature $\beta$", ylabel="divergence (nats)", title="(d) caveat: reverse KL")
    ax.legend(fontsize=8)
    for ax in axes[1:]:                         # plain tick labels: mathtext ticks triple the drawing time
        for axis in (ax.xaxis, ax.yaxis):
            if axis.get_scale() == "log":
                axis.set_major_formatter(FormatStrFormatter("%g"))
        ax.minorticks_off()
    fig.tight_layout()
    return fig


@plotter
def schedule(sched: CoolingSchedule, moves: np.ndarray, bounds_k: np.ndarray, tv_exact: float) -> Figure:
    """(a) beta_k and lambda_k = beta_k / (1 + beta_k) of ``sched`` per step; (b) per stage change the TV move
    of the optimum ``moves`` against the bound ``bounds_k`` = |lambda_k - lambda_k+1| and its exact value."""
    values = sched.values()
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    ax = axes[0]
    steps_axis = np.arange(len(values))
    ax.plot(steps_axis, values, color=method_color("gft-coupling"), lw=2, label=r"$\beta_k$")
    ax.set(xlabel="training step k", ylabel=r"temperature $\beta_k$", title=f"(a) {sched.kind} cooling schedule",
           ylim=(-0.02 * max(sched.beta0, 1e-12), 1.05 * max(sched.beta0, 1e-12)))
    ax2 = ax.twinx()
    ax2.grid(False)
    ax2.plot(steps_axis, values / (1 + values), color=method_color("gft-drift"), lw=1.5, ls="--",
             label=r"$\lambda_k=\beta_k/(1+\beta_k)$")
    ax2.set_ylabel(r"mixture weight $\lambda_k$")
    ax2.set_ylim(-0.02, 1.05)
    lines = ax.get_lines() + ax2.get_lines()
    ax.legend(lines, [ln.get_label() for ln in lines], fontsize=8, loc="upper right")

    ax = axes[1]
    if len(moves):
        k_axis = np.arange(1, len(moves) + 1)
        ax.plot(k_axis, bounds_k, color="k", lw=1.5, label=r"bound $|\lambda_k-\lambda_{k+1}|$")
        ax.plot(k_axis, bounds_k * tv_exact, color="0.5", lw=1, ls="--",
                label=r"$|\lambda_k-\lambda_{k+1}|\,\mathrm{TV}(q,p_{\rm pre})$")
        ax.plot(k_axis, moves, "o", color=method_color("gft-coupling"), ms=3,
                label=r"$\mathrm{TV}(m^{\beta_k}_1, m^{\beta_{k+1}}_1)$")
    else:
        ax.text(0.5, 0.5, "constant schedule: a single stage, no moves", ha="center", va="center",
                transform=ax.transAxes)
    ax.set(xlabel="stage change k", ylabel="total variation", title="(b) move of the optimum per stage")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
