"""Data sets as Lightning data modules, registered under kind ``"dataset"``.

Every module yields batches that are one tensor ``x`` (labels dropped): images as ``uint8``
``[B, C, H, W]``, point sets, tabular and 2-D toy data as ``float32``. Build one by name::

    from survae import registry
    dm = registry.build("dataset", "cifar10", root="data", batch_size=32)
    dm.kind, dm.shape, dm.num_bins  # "image", (3, 32, 32), 256

Files are never downloaded unless ``download=True``; a missing data set raises
:class:`DatasetNotFoundError` saying where it looked and how to get the files.
"""

from survae.data import (  # noqa: F401  (registers)
    binarized_mnist,
    celeba,
    conditional_toy,
    imagenet,
    images,
    omniglot,
    spatial_mnist,
    svhn,
    target,
    torus,
    toy,
    uci,
)
from survae.data.base import ArrayDataset, FlowDataModule
from survae.data.binarized_mnist import BinarizedMNISTDataModule, FixedBinarizedMNISTDataModule
from survae.data.celeba import CelebADataModule
from survae.data.conditional_toy import GaussianClassesDataModule, RotatedMoonsDataModule
from survae.data.errors import DatasetCorruptedError, DatasetNotFoundError
from survae.data.imagenet import ImageNet32DataModule, ImageNet64DataModule
from survae.data.images import (
    CIFAR10DataModule,
    DigitsDataModule,
    FashionMNISTDataModule,
    MNISTDataModule,
)
from survae.data.omniglot import BinarizedOmniglotDataModule
from survae.data.spatial_mnist import SpatialMNISTDataModule
from survae.data.svhn import SVHNDataModule
from survae.data.target import TargetDataModule
from survae.data.torus import TorusMixtureDataModule
from survae.data.toy import (
    AbsDataModule,
    CheckerboardDataModule,
    CornersDataModule,
    CrescentCubedDataModule,
    CrescentDataModule,
    DiamondDataModule,
    EightGaussiansDataModule,
    FourCirclesDataModule,
    GaussianDataModule,
    PinwheelDataModule,
    RingsDataModule,
    SignDataModule,
    SinewaveDataModule,
    TwoMoonsDataModule,
    TwoSpiralsDataModule,
)
from survae.data.uci import (
    BSDS300DataModule,
    GasDataModule,
    HepmassDataModule,
    MiniBooNEDataModule,
    PowerDataModule,
)

__all__ = [
    "TargetDataModule",
    "TorusMixtureDataModule",
    "CelebADataModule",
    "BinarizedOmniglotDataModule",
    "SVHNDataModule",
    "BinarizedMNISTDataModule",
    "FixedBinarizedMNISTDataModule",
    "AbsDataModule",
    "CrescentCubedDataModule",
    "CrescentDataModule",
    "DiamondDataModule",
    "GaussianDataModule",
    "SignDataModule",
    "SinewaveDataModule",
    "ArrayDataset",
    "BSDS300DataModule",
    "CIFAR10DataModule",
    "CheckerboardDataModule",
    "CornersDataModule",
    "DatasetCorruptedError",
    "DatasetNotFoundError",
    "DigitsDataModule",
    "EightGaussiansDataModule",
    "FashionMNISTDataModule",
    "FlowDataModule",
    "FourCirclesDataModule",
    "GaussianClassesDataModule",
    "GasDataModule",
    "HepmassDataModule",
    "ImageNet32DataModule",
    "ImageNet64DataModule",
    "MNISTDataModule",
    "MiniBooNEDataModule",
    "PinwheelDataModule",
    "PowerDataModule",
    "RingsDataModule",
    "RotatedMoonsDataModule",
    "SpatialMNISTDataModule",
    "TwoMoonsDataModule",
    "TwoSpiralsDataModule",
]
