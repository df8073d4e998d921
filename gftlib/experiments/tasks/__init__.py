"""The experiment tasks and the one runner they share.

- :mod:`~gftlib.experiments.tasks.runner`: pretrain-or-load through the cache, fine-tune one method,
  evaluate, and the per-method loop (:class:`~gftlib.experiments.tasks.runner.TaskRunner`);
- :mod:`~gftlib.experiments.tasks.budget`: the fine-tuning budget shared by every method
  (:class:`~gftlib.experiments.tasks.budget.FinetuneConfig`);
- :mod:`~gftlib.experiments.tasks.toy2d` (+ :mod:`~gftlib.experiments.tasks.toy2d_eval`): the 2-D
  domain-shift task of E1, E3 and E4 (and, through :mod:`gftlib.experiments.scenarios`, E5);
- :mod:`~gftlib.experiments.tasks.images_data`, :mod:`~gftlib.experiments.tasks.images` (+
  :mod:`~gftlib.experiments.tasks.images_eval`): the image domain-shift task of E2, and
  :mod:`~gftlib.experiments.tasks.images_units`: its independent replicates (one unit per seed).
"""
