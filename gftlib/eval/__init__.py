"""Evaluation: distances between sample sets, flow measures (path length, NFE), features for FID, training
stability, diversity, memorisation, and the statistics behind every verdict.

Modules: :mod:`~gftlib.eval.metrics`, :mod:`~gftlib.eval.features`, :mod:`~gftlib.eval.stability`,
:mod:`~gftlib.eval.diversity`, :mod:`~gftlib.eval.memorization`, :mod:`~gftlib.eval.statistics`.
Sample sets are (n, *shape); metrics compute in float64 on the CPU.
"""

from __future__ import annotations

from gftlib.eval.metrics import (wasserstein2, sliced_wasserstein, mmd_rbf, ks_statistic, ks_two_sample,
                                 frechet_distance, frechet_distance_from_moments, FRECHET_METHODS,
                                 mean_path_length, mean_straightness)
from gftlib.eval.features import (RandomConvFeatures, InceptionFeatures, load_inception_features,
                                  extract_features, frechet_feature_distance, INCEPTION_URL, quantize_uint8,
                                  feature_statistics, save_fid_statistics, load_fid_statistics)
from gftlib.eval.stability import (instantaneous_variance, sliding_instantaneous_variance, spearman_rho,
                                   max_upward_jump, early_degradation, steps_to_reach, seconds_to_reach,
                                   relative_level)
from gftlib.eval.diversity import (knn_radii, prdc)
from gftlib.eval.memorization import (Memorization, memorization, closer_to_train_z)
from gftlib.eval.statistics import (VERDICTS, KINDS, two_sample, tost, holm, verdict, hedges_g)

__all__ = [
    'wasserstein2', 'sliced_wasserstein', 'mmd_rbf', 'ks_statistic', 'ks_two_sample',
    'frechet_distance', 'frechet_distance_from_moments', 'FRECHET_METHODS', 'mean_path_length',
    'mean_straightness', 'RandomConvFeatures', 'InceptionFeatures', 'load_inception_features',
    'extract_features', 'frechet_feature_distance', 'INCEPTION_URL', 'quantize_uint8',
    'feature_statistics', 'save_fid_statistics', 'load_fid_statistics', 'instantaneous_variance',
    'sliding_instantaneous_variance', 'spearman_rho', 'max_upward_jump', 'early_degradation',
    'steps_to_reach', 'seconds_to_reach', 'relative_level', 'knn_radii', 'prdc', 'Memorization',
    'memorization', 'closer_to_train_z', 'VERDICTS', 'KINDS', 'two_sample', 'tost', 'holm', 'verdict',
    'hedges_g'
]
