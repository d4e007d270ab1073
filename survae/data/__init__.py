"""Data sets as Lightning data modules, registered under kind ``"dataset"``.

Every module yields batches that are one tensor ``x`` (labels dropped): images as ``uint8``
``[B, C, H, W]``, point sets, tabular and 2-D toy data as ``float32``. Build one by name::

    from survae import registry
    dm = registry.build("dataset", "cifar10", root="data", batch_size=32)
    dm.kind, dm.shape, dm.num_bins  # "image", (3, 32, 32), 256

Files are never downloaded unless ``download=True``; a missing data set raises
:class:`DatasetNotFoundError` saying where it looked and how to get the files.
"""

from survae.data import imagenet, images, spatial_mnist, toy, uci  # noqa: F401  (registers)
from survae.data.base import ArrayDataset, FlowDataModule
from survae.data.errors import DatasetCorruptedError, DatasetNotFoundError

__all__ = ["ArrayDataset", "DatasetCorruptedError", "DatasetNotFoundError", "FlowDataModule"]
