"""Every committed figure has its plotting function: figures/<stem>_<name>.png <-> plots.<module>.<name>."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from gftlib.experiments import plots  # noqa: E402
from gftlib.experiments.provenance import dotted_name, figure_function  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
#: Notebooks whose figures are still drawn inline (moved once their other edits have landed).
INLINE: set[str] = set()


def _split(stem_name: str) -> tuple[str, str]:
    for stem in sorted(plots.BY_NOTEBOOK, key=len, reverse=True):
        if stem_name.startswith(stem + "_"):
            return stem, stem_name[len(stem) + 1:]
    raise AssertionError(f"figure {stem_name} belongs to no notebook with a plots module")


def test_every_committed_figure_has_one_plotting_function() -> None:
    names = sorted(p.stem for p in (ROOT / "figures").glob("*.png"))
    names = [n for n in names if not any(n.startswith(s + "_") for s in INLINE)]
    assert names, "no committed figures found"
    for name in names:
        stem, fig = _split(name)
        module = plots.BY_NOTEBOOK[stem]
        fn = getattr(module, fig, None)
        assert callable(fn), f"{name}: no function {module.__name__}.{fig}"
        assert fig in module.__all__
        assert hasattr(fn, "__wrapped__") and dotted_name(fn) == f"{module.__name__}.{fig}", f"{fig}: no @plotter"
        call = f"plots.{module.__name__.rsplit('.', 1)[1]}.{fig}("
        assert (ROOT / "notebooks" / f"{stem}.ipynb").read_text().count(call) == 1, f"{name}: one cell calls {call}"


def test_plotter_stamps_the_figure() -> None:
    fig = plots.t3_convergence.schedule.__wrapped__  # the undecorated function draws the same figure
    from gftlib.schedules import make_schedule

    sched = make_schedule("step", 2.0, 20, n_stages=4)
    moves = np.array([0.1, 0.05, 0.02])
    drawn = plots.t3_convergence.schedule(sched, moves, moves, 0.5)
    assert figure_function(drawn) == "gftlib.experiments.plots.t3_convergence.schedule"
    assert figure_function(fig(sched, moves, moves, 0.5)) is None
    plt.close("all")
