"""One module per notebook, one function per committed figure: ``plots.t5_paths.trajectories(...) -> Figure``.

Each function only draws (the notebook computes the data and passes it in), in the project's style
(:func:`gftlib.experiments.style.set_style`, applied by the notebook), and is decorated with
:func:`gftlib.experiments.provenance.plotter`, so ``report.savefig`` records which function drew the
figure. The notebook cell calls it and saves the result: ``report.savefig(plots.t5_paths.trajectories(...),
"trajectories")``.
"""

from gftlib.experiments.plots import t1_girsanov, t2_mixture_minimizer, t3_convergence, t5_paths, walkthrough

__all__ = ["t1_girsanov", "t2_mixture_minimizer", "t3_convergence", "t5_paths", "walkthrough"]
