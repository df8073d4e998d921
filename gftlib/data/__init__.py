"""Data: built-in 2-D distributions and image patches (shipped with scikit-image), and streaming readers for
image folders, arrays, CIFAR-10 and WILDS from local paths.

Modules: :mod:`~gftlib.data.datasets`, :mod:`~gftlib.data.image_sources`,
:mod:`~gftlib.data.wilds_sources`.
Images are float (n, C, H, W) in [-1, 1]; nothing is ever downloaded.
"""

from __future__ import annotations

from gftlib.data.datasets import (DISTRIBUTIONS_2D, make_2d, IMAGE_SOURCES, PATCH_SPLITS, PatchBoxes,
                                  split_columns, patch_boxes, image_patches, IMAGE_DATASETS, ImageDataset,
                                  load_image_dataset)
from gftlib.data.image_sources import (IMAGE_SOURCE_KINDS, IMAGE_EXTENSIONS, ImageSource, open_image_source,
                                       open_image_spec, image_loader, to_model_range, CIFAR_HELP)
from gftlib.data.wilds_sources import (WILDS_DATASETS, WILDS_SPLITS, WildsTable, read_wilds, WILDS_HELP)

__all__ = [
    'DISTRIBUTIONS_2D', 'make_2d', 'IMAGE_SOURCES', 'PATCH_SPLITS', 'PatchBoxes', 'split_columns',
    'patch_boxes', 'image_patches', 'IMAGE_DATASETS', 'ImageDataset', 'load_image_dataset',
    'IMAGE_SOURCE_KINDS', 'IMAGE_EXTENSIONS', 'ImageSource', 'open_image_source', 'open_image_spec',
    'image_loader', 'to_model_range', 'CIFAR_HELP', 'WILDS_DATASETS', 'WILDS_SPLITS', 'WildsTable',
    'read_wilds', 'WILDS_HELP'
]
