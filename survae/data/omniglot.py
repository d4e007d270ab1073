"""Dynamically binarized Omniglot (Lake et al. 2013) as processed by Burda et al. (2015): 24,345
training and 8,070 test 28×28 characters, grey values in [0, 1] in ``chardata.mat`` (``data``
and ``testdata``, ``(784, N)``; github.com/yburda/iwae, datasets/OMNIGLOT), under
``ROOT/omniglot/``, read with ``scipy.io.loadmat`` (data only).

As for ``binarized_mnist``: each training pixel is drawn as 1 with probability equal to its
grey value in every batch; validation and test images are binarized once (``data_seed``).
Batches are ``uint8`` ``[B, 1, 28, 28]`` in {0, 1}; ``num_bins`` is 2. The grey values are
kept as 8-bit levels ``round(255·p)`` (the probabilities move by at most 1/510). The official loader
has no validation split; here ``val_size`` (default 1,345, a choice of this repository)
training images are held out.
"""

from __future__ import annotations

import os
import urllib.request

import numpy as np
import torch

from survae.data.errors import DatasetCorruptedError, DatasetNotFoundError
from survae.data.images import ImageDataModule
from survae.registry import register

URL = "https://github.com/yburda/iwae/raw/master/datasets/OMNIGLOT/chardata.mat"


def read_chardata(path: str) -> tuple[np.ndarray, np.ndarray]:
    """Train and test grey images ``(N, 1, 28, 28)`` as uint8 levels ``round(255·p)``."""
    from scipy.io import loadmat

    try:
        mat = loadmat(path)
    except (ValueError, OSError, NotImplementedError) as err:
        raise DatasetCorruptedError(f"{path}: not a readable MATLAB file ({err})") from err
    out = []
    for key in ("data", "testdata"):
        arr = mat.get(key)
        if arr is None or arr.ndim != 2 or arr.shape[0] != 784:
            shape = None if arr is None else arr.shape
            raise DatasetCorruptedError(f"{path}: expected {key!r} of shape (784, N), got {shape}")
        images = arr.T.reshape(-1, 1, 28, 28)  # row by row, as the official loader reads it
        out.append(np.round(np.clip(images, 0.0, 1.0) * 255).astype(np.uint8))
    return out[0], out[1]


@register("dataset", "binarized_omniglot")
class BinarizedOmniglotDataModule(ImageDataModule):
    """Dynamically binarized Omniglot (see the module docstring)."""

    name = "binarized_omniglot"
    shape = (1, 28, 28)
    folder = "omniglot"
    file = "chardata.mat"

    def __init__(self, val_size: int = 1_345, **kwargs):
        super().__init__(val_size=val_size, binarize=True, **kwargs)

    def how_to_get(self) -> str:
        return (
            f"run with data.download=true (fetches {URL} into {self.path(self.folder)}), or "
            "put chardata.mat there yourself."
        )

    def _download(self) -> None:
        os.makedirs(self.path(self.folder), exist_ok=True)
        if not os.path.exists(self.path(self.folder, self.file)):
            urllib.request.urlretrieve(URL, self.path(self.folder, self.file))

    def _load(self):
        path = self.path(self.folder, self.file)
        if not os.path.exists(path):
            raise DatasetNotFoundError(self.name, [path], self.how_to_get())
        train, test = (torch.from_numpy(a) for a in read_chardata(path))
        return self._split(train, test)
