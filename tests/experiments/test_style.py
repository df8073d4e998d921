"""The figure helpers of gftlib.experiments.style."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402

from gftlib.experiments.style import plot_mean_band  # noqa: E402


def test_plot_mean_band_draws_the_mean_over_rows() -> None:
    fig, ax = plt.subplots()
    plot_mean_band(ax, [0, 1, 2], [[1, 2, 3], [1, 2, 5]], color="k", label="m")
    assert list(ax.lines[0].get_ydata()) == [1.0, 2.0, 4.0]
    plt.close(fig)
