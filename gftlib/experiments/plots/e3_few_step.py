"""Figure of ``notebooks/e3_few_step.ipynb``: quality against the number of function evaluations."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from gftlib.experiments.provenance import plotter
from gftlib.experiments.style import method_color, plot_mean_band

__all__ = ["w2_vs_nfe"]


@plotter
def w2_vs_nfe(nfe: np.ndarray, curves: Mapping[str, Sequence[Any]], pre_curves: Sequence[Any],
              per_method: Mapping[str, Mapping[str, Any]], floors: Sequence[float], abs_levels: Sequence[float],
              pair: str) -> Figure:
    """(a) W2 to the held-out target against Euler NFE ``nfe`` per method (mean +- 1 std over units of
    ``curves[m][i].euler_w2``; star: dopri5), the pretrained model, the mean noise floor and absolute level;
    (b) the Euler global error against the step count with the 1/N rate."""
    n_units = len(pre_curves)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), gridspec_kw={"width_ratios": [3, 2]})
    ax = axes[0]
    for m in curves:
        plot_mean_band(ax, nfe, [c.euler_w2 for c in curves[m]], color=method_color(m), label=m,
                       marker="o", markersize=3)
        ax.errorbar(np.mean(per_method[m]["dopri_nfe"]), np.mean(per_method[m]["dopri_w2"]),
                    yerr=np.std(per_method[m]["dopri_w2"], ddof=1) if n_units > 1 else None,
                    color=method_color(m), marker="*", markersize=9, capsize=2, ls="none")
    ax.plot(nfe, np.mean([c.euler_w2 for c in pre_curves], axis=0), color=method_color("pretrained"), ls=":",
            marker=".", label="pretrained")
    ax.axhline(np.mean(floors), color="k", ls="--", lw=1, label="noise floor")
    ax.axhline(np.mean(abs_levels), color="0.5", ls=":", lw=1, label="absolute level")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("NFE (Euler steps; ★ = dopri5)")
    ax.set_ylabel(r"$W_2$ to held-out target (a.u.)")
    ax.set_title(f"quality against inference cost ({pair})")
    ax.legend(ncol=2, fontsize=8)
    ax = axes[1]
    for m in curves:
        plot_mean_band(ax, nfe, [c.euler_error for c in curves[m]], color=method_color(m), label=m,
                       marker="o", markersize=3)
    first = next(iter(curves))
    ax.plot(nfe, 0.5 * curves[first][0].euler_error[0] / nfe, color="0.5", ls="--", lw=1,
            label=r"$\propto 1/N$")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("Euler steps N")
    ax.set_ylabel(r"mean $|x^{\rm Euler}_1 - x^{\rm dopri5}_1|$ (a.u.)")
    ax.set_title("Euler global error")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
