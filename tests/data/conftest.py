"""Fixtures writing tiny data files in the real on-disk formats (no network, ever)."""

from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest

import survae.data  # noqa: F401  (registers the data modules)


def write_idx_by_hand(path: Path, array: np.ndarray) -> None:
    """IDX writer independent of survae's (struct header + raw bytes, uint8 only)."""
    assert array.dtype == np.uint8
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(
        f">{array.ndim}I", *array.shape
    )
    data = header + array.tobytes()
    if path.suffix == ".gz":
        with gzip.open(path, "wb") as f:
            f.write(data)
    else:
        path.write_bytes(data)


@pytest.fixture
def mnist_root(tmp_path):
    """A root with tiny MNIST-format files: 30 train / 12 test images, 28x28 uint8."""

    def make(folder: str = "MNIST", n_train: int = 30, n_test: int = 12, gz: bool = False):
        rng = np.random.default_rng(1)
        raw = tmp_path / folder / "raw"
        raw.mkdir(parents=True, exist_ok=True)
        images = {}
        for split, n in (("train", n_train), ("t10k", n_test)):
            img = np.zeros((n, 28, 28), np.uint8)
            # a bright blob per image at a random place, plus faint noise
            img[:, 8:20, 8:20] = rng.integers(0, 256, (n, 12, 12), dtype=np.uint8)
            images[split] = img
            suffix = ".gz" if gz else ""
            write_idx_by_hand(raw / f"{split}-images-idx3-ubyte{suffix}", img)
            write_idx_by_hand(
                raw / f"{split}-labels-idx1-ubyte{suffix}", rng.integers(0, 10, n, dtype=np.uint8)
            )
        return tmp_path, images

    return make


@pytest.fixture
def cifar_root(tmp_path):
    """A root with fake CIFAR-10 python pickles (str keys, as the real files load)."""

    def make(n_per_batch: int = 8, n_test: int = 10):
        rng = np.random.default_rng(2)
        folder = tmp_path / "cifar-10-batches-py"
        folder.mkdir()
        arrays = {}
        names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
        for name in names:
            n = n_test if name == "test_batch" else n_per_batch
            data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
            arrays[name] = data
            with open(folder / name, "wb") as f:
                pickle.dump({"data": data, "labels": list(rng.integers(0, 10, n))}, f)
        with open(folder / "batches.meta", "wb") as f:
            pickle.dump({"label_names": [f"class{i}" for i in range(10)]}, f)
        return tmp_path, arrays

    return make
