"""Figures of ``notebooks/t5_paths.ipynb``: learned trajectories and quality vs path length (THEORY T5)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.collections import LineCollection
from matplotlib.figure import Figure
from matplotlib.ticker import FormatStrFormatter, LogLocator

from gftlib.experiments.provenance import plotter
from gftlib.experiments.style import method_color

__all__ = ["trajectories", "quality_length"]

Color = tuple[float, float, float]


def _label(name: str) -> str:
    return "OT" if name == "ot" else name


@plotter
def trajectories(trajs: Mapping[str, np.ndarray], target: np.ndarray, straightness: Mapping[str, float],
                 colors: Mapping[str, Color]) -> Figure:
    """One panel per coupling ("independent", "ot"): RK4 paths ``trajs[name]`` of shape (steps + 1, n, 2)
    over the target samples ``target`` (m, 2); titles give the mean straightness."""
    fig, axes = plt.subplots(1, 2, figsize=(10.5, 5.0), sharex=True, sharey=True)
    for ax, (name, color) in zip(axes, colors.items()):
        ax.scatter(target[:, 0], target[:, 1], s=3, color=method_color("target"), alpha=0.25, label="target samples")
        tr = trajs[name]
        ax.add_collection(LineCollection(np.transpose(tr, (1, 0, 2)), colors=[color], linewidths=0.7, alpha=0.6))
        ax.autoscale_view()
        ax.scatter(tr[0, :, 0], tr[0, :, 1], s=6, color="0.2", marker="x", lw=0.6, label="start $x_0$")
        ax.scatter(tr[-1, :, 0], tr[-1, :, 1], s=10, color=color, edgecolor="k", lw=0.3, label="end $x_1$")
        ax.set(title=f"({'ab'[name == 'ot']}) {'OT' if name == 'ot' else 'independent'} coupling: "
                     f"straightness {straightness[name]:.3f}",
               xlabel="$x_1$ coordinate (a.u.)", ylabel="$x_2$ coordinate (a.u.)", aspect="equal")
        ax.legend(fontsize=8, loc="upper right")
    fig.tight_layout()
    return fig


@plotter
def quality_length(steps: Sequence[int], w2_steps: Mapping[str, Sequence[float]], w2_reference: Mapping[str, float],
                   floors: np.ndarray, lengths: Mapping[str, np.ndarray], jensen_bounds: Mapping[str, float],
                   cost_independent: np.ndarray, cost_ot: np.ndarray, colors: Mapping[str, Color]) -> Figure:
    """(a) W2 against Euler steps per coupling (dotted: RK4 reference, band: noise floors, dashed: the
    check's 2 x mean floor); (b) histograms of path lengths against the Jensen bounds E_pi|x1 - x0|;
    (c) per-minibatch squared transport cost, OT against independent pairing."""
    floor = float(np.mean(floors))
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.3))
    ax = axes[0]
    for name, color in colors.items():
        ax.plot(steps, w2_steps[name], "o-", color=color, lw=2, label=f"{_label(name)} coupling")
        ax.axhline(w2_reference[name], color=color, ls=":", lw=1)
    ax.axhspan(floors.min(), floors.max(), color="0.6", alpha=0.25, label="noise floor (range)")
    ax.axhline(2 * floor, color="0.3", ls="--", lw=1, label=r"check threshold $2\bar F$")
    ax.set(xscale="log", yscale="log", xlabel="Euler steps", ylabel=r"$W_2$ to target samples (a.u.)",
           title="(a) quality vs Euler steps (dotted: RK4-64)")
    ax.set_xticks(steps, [str(k) for k in steps])
    ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.yaxis.set_major_formatter(FormatStrFormatter("%g"))       # plain labels: mathtext ticks are slow to draw
    ax.minorticks_off()
    ax.legend(fontsize=8)

    ax = axes[1]
    hi = float(np.quantile(np.concatenate(list(lengths.values())), 0.995))
    bins = np.linspace(0, hi, 50)
    for name, color in colors.items():
        ax.hist(lengths[name], bins=bins, color=color, alpha=0.5, label=f"{_label(name)}: mean "
                f"{lengths[name].mean():.2f}")
        bound = jensen_bounds[name]
        ax.axvline(bound, color=color, ls="--", lw=1.5, label=rf"$\mathbb{{E}}_\pi|x_1-x_0|$ = {bound:.2f}")
    ax.set(xlabel="path length (a.u.)", ylabel="number of paths", title="(b) learned path lengths vs coupling distance")
    ax.legend(fontsize=8)

    ax = axes[2]
    ax.scatter(cost_independent, cost_ot, s=10, color=colors["ot"], label="one minibatch")
    lim = (0, float(cost_independent.max()) * 1.05)
    ax.plot(lim, lim, color="k", lw=1, label="equal cost")
    ax.set(xlim=lim, ylim=lim, xlabel=r"independent pairing: mean $|x_1-x_0|^2$",
           ylabel=r"exact OT: mean $|x_1-x_0|^2$", title="(c) minibatch cost, OT vs independent", aspect="equal")
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    return fig
