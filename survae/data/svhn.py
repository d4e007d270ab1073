"""SVHN (Netzer et al. 2011): 73,257 training and 26,032 test colour 32×32 8-bit digit crops
(the ``extra`` split is not used, as in the official SurVAE loader).

Files in torchvision's format under ``ROOT/SVHN/``: ``train_32x32.mat`` and ``test_32x32.mat``
(MATLAB files whose ``X`` holds the images as ``(32, 32, 3, N)`` uint8), read with
``scipy.io.loadmat``, which parses data only. ``download=True`` fetches them with torchvision.
"""

from __future__ import annotations

import os

import numpy as np
import torch

from survae.data.errors import DatasetCorruptedError, DatasetNotFoundError
from survae.data.images import ImageDataModule
from survae.registry import register


def read_svhn_mat(path: str) -> tuple[np.ndarray, np.ndarray]:
    """Images ``(N, 3, 32, 32)`` uint8 and labels ``(N,)`` (0–9; the files store 0 as 10)."""
    from scipy.io import loadmat

    try:
        mat = loadmat(path)
    except (ValueError, OSError, NotImplementedError) as err:
        raise DatasetCorruptedError(f"{path}: not a readable MATLAB file ({err})") from err
    images, labels = mat.get("X"), mat.get("y")
    if images is None or images.ndim != 4 or images.shape[:3] != (32, 32, 3):
        shape = None if images is None else images.shape
        raise DatasetCorruptedError(f"{path}: expected 'X' of shape (32, 32, 3, N), got {shape}")
    images = np.ascontiguousarray(np.transpose(images, (3, 2, 0, 1))).astype(np.uint8)
    labels = np.zeros(len(images), np.int64) if labels is None else labels.reshape(-1) % 10
    return images, labels.astype(np.int64)


@register("dataset", "svhn")
class SVHNDataModule(ImageDataModule):
    """SVHN: 3×32×32 8-bit images; ``val_size`` (default 5,000) training images held out.
    ``conditional=True`` gives the digit class as the context."""

    name = "svhn"
    shape = (3, 32, 32)
    num_classes = 10
    folder = "SVHN"
    files = {"train": "train_32x32.mat", "test": "test_32x32.mat"}

    def __init__(self, val_size: int = 5_000, **kwargs):
        super().__init__(val_size=val_size, **kwargs)

    def how_to_get(self) -> str:
        return (
            "run with data.download=true (torchvision downloads the .mat files into "
            f"{self.path(self.folder)}), or put {sorted(self.files.values())} there yourself."
        )

    def _download(self) -> None:
        import torchvision

        for split in self.files:
            torchvision.datasets.SVHN(self.path(self.folder), split=split, download=True)

    def _load(self):
        paths = {s: self.path(self.folder, f) for s, f in self.files.items()}
        missing = [p for p in paths.values() if not os.path.exists(p)]
        if missing:
            raise DatasetNotFoundError(self.name, missing, self.how_to_get())
        (train, train_labels), (test, test_labels) = (read_svhn_mat(paths[s]) for s in paths)
        train, test = torch.from_numpy(train), torch.from_numpy(test)
        if not self.conditional:
            return self._split(train, test)
        return self._split(train, test, train_labels, test_labels)
