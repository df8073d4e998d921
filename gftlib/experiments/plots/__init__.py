"""One module per notebook, one function per committed figure: ``plots.t5_paths.trajectories(...) -> Figure``.

Each function only draws (the notebook computes the data and passes it in), in the project's style
(:func:`gftlib.experiments.style.set_style`, applied by the notebook), and is decorated with
:func:`gftlib.experiments.provenance.plotter`, so ``report.savefig`` records which function drew the
figure. The notebook cell calls it and saves the result: ``report.savefig(plots.t5_paths.trajectories(...),
"trajectories")``.
"""

from gftlib.experiments.plots import (e1_domain_shift_2d, e2_image_shift, e3_few_step, e4_ablations,
                                     e5_scenarios, t1_girsanov, t2_mixture_minimizer, t3_convergence,
                                     t4_conditional_marginal, t5_paths, walkthrough)

#: Plot module of each notebook stem.
BY_NOTEBOOK = {"00_walkthrough": walkthrough, "t1_girsanov": t1_girsanov,
               "t2_mixture_minimizer": t2_mixture_minimizer, "t3_convergence": t3_convergence,
               "t4_conditional_marginal": t4_conditional_marginal, "t5_paths": t5_paths,
               "e1_domain_shift_2d": e1_domain_shift_2d, "e2_image_shift": e2_image_shift,
               "e3_few_step": e3_few_step, "e4_ablations": e4_ablations, "e5_scenarios": e5_scenarios}

__all__ = ["BY_NOTEBOOK", "e1_domain_shift_2d", "e2_image_shift", "e3_few_step", "e4_ablations", "e5_scenarios",
           "t1_girsanov", "t2_mixture_minimizer", "t3_convergence", "t4_conditional_marginal", "t5_paths",
           "walkthrough"]
