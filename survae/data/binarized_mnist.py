"""Binarized MNIST, the two versions of the VAE literature (see Burda et al. 2015, Appendix D):

* ``binarized_mnist``: dynamically binarized (Salakhutdinov & Murray 2008; ``mnist`` with
  ``binarize=true``, see :mod:`survae.data.images`): each training batch draws pixel ``x`` as
  1 with probability ``x / 255`` afresh; the validation and test images are binarized once,
  with generators seeded by ``data_seed``, so evaluations agree between runs.
* ``binarized_mnist_fixed``: the fixed binarization of Larochelle & Murray (2011), 50k / 10k /
  10k images in ``ROOT/static_mnist/binarized_mnist_{train,valid,test}.amat`` (text files of
  784 zeros and ones per line); ``download=True`` fetches them from the authors' site.

Batches are ``uint8`` ``[B, 1, 28, 28]`` in {0, 1}; ``num_bins`` is 2.
"""

from __future__ import annotations

import os
import urllib.request

import numpy as np
import torch

from survae.data.base import ArrayDataset
from survae.data.errors import DatasetCorruptedError, DatasetNotFoundError
from survae.data.images import ImageDataModule, MNISTDataModule
from survae.data.quantize import chain
from survae.registry import register

FIXED_URL = "http://www.cs.toronto.edu/~larocheh/public/datasets/binarized_mnist/{}"


@register("dataset", "binarized_mnist")
class BinarizedMNISTDataModule(MNISTDataModule):
    """Dynamically binarized MNIST: the MNIST IDX files (as ``mnist``), each training pixel
    drawn as Bernoulli(x / 255) per batch; validation and test binarized once (``data_seed``).
    The same as ``mnist`` with ``binarize=true``.
    """

    name = "binarized_mnist"

    def __init__(self, binarize: bool = True, **kwargs):
        super().__init__(binarize=binarize, **kwargs)


def read_amat(path: str, width: int = 784) -> np.ndarray:
    """The ``(N, 1, 28, 28)`` ``uint8`` images of a binarized-MNIST ``.amat`` text file."""
    with open(path, "rb") as f:
        raw = np.frombuffer(f.read(), dtype=np.uint8)
    bits = raw[(raw == ord("0")) | (raw == ord("1"))] - ord("0")
    separators = np.isin(raw, np.frombuffer(b"01 \t\r\n", dtype=np.uint8))
    if not separators.all() or bits.size % width:
        raise DatasetCorruptedError(f"{path}: expected lines of {width} space-separated 0/1 values")
    return bits.reshape(-1, 1, 28, 28)


@register("dataset", "binarized_mnist_fixed")
class FixedBinarizedMNISTDataModule(ImageDataModule):
    """MNIST with the fixed binarization of Larochelle & Murray (2011): 50k train, 10k
    validation, 10k test images, ``ROOT/static_mnist/binarized_mnist_{split}.amat``."""

    name = "binarized_mnist_fixed"
    shape = (1, 28, 28)
    num_bins = 2
    folder = "static_mnist"
    splits = ("train", "valid", "test")

    def file(self, split: str) -> str:
        return self.path(self.folder, f"binarized_mnist_{split}.amat")

    def how_to_get(self) -> str:
        return (
            "run with data.download=true (fetches the three .amat files from "
            f"{FIXED_URL.format('')} into {self.path(self.folder)}), or put them there yourself."
        )

    def _download(self) -> None:
        os.makedirs(self.path(self.folder), exist_ok=True)
        for split in self.splits:
            if not os.path.exists(self.file(split)):
                name = os.path.basename(self.file(split))
                urllib.request.urlretrieve(FIXED_URL.format(name), self.file(split))

    def _load(self):
        missing = [self.file(s) for s in self.splits if not os.path.exists(self.file(s))]
        if missing:
            raise DatasetNotFoundError(self.name, missing, self.how_to_get())
        train, val, test = (torch.from_numpy(read_amat(self.file(s))) for s in self.splits)
        quantize = self.quantize_transform()
        return (
            ArrayDataset(train, transform=chain(self.train_transform(), quantize)),
            ArrayDataset(val, transform=quantize),
            ArrayDataset(test, transform=quantize),
        )


__all__ = [
    "BinarizedMNISTDataModule",
    "FixedBinarizedMNISTDataModule",
    "read_amat",
]
