"""Downsampled ImageNet at 32x32 and 64x64 (Chrabaszcz et al., 2017; van den Oord et al., 2016).

Format: the official "Downsampled ImageNet" ``.npz`` files from image-net.org (after
registration), e.g. ``Imagenet32_train_npz.zip`` and ``Imagenet32_val_npz.zip`` (64x64:
``Imagenet64_train_part1_npz.zip``, ``..._part2_npz.zip``, ``Imagenet64_val_npz.zip``).
Each ``.npz`` holds ``data``: ``uint8`` ``(N, 3*H*W)`` in channel-planar order (all red
values row by row, then green, then blue -- so a plain reshape gives ``(N, 3, H, W)``) and
``labels`` (ignored here).

Layout: unzip the archives anywhere below ``ROOT/imagenet32/`` (``ROOT/imagenet64/``);
the loader searches that folder recursively for

* ``train_data_batch_<k>.npz`` (k = 1..10): the 1,281,167 training images, and
* ``val_data.npz``: the 50,000 validation images, used as the **test** set (as in the papers).

A validation set of ``val_size`` (default 10,000) training images is held out (fixed by
``data_seed``).

Memory: the training set is 3.9 GB (32x32) / 15.7 GB (64x64). With ``memory_map=True``
(default) the batch files are converted once into ``ROOT/imagenet<size>/cache/*.npy``
(``uint8`` ``(N, 3, H, W)``, rebuilt when the source files change) which are then
memory-mapped, so only the examples of a batch are read. ``memory_map=False`` loads
everything into RAM instead.
"""

from __future__ import annotations

import glob
import json
import os
import re
import warnings
import zipfile

import numpy as np
import torch

from survae.data.errors import DatasetCorruptedError, DatasetNotFoundError
from survae.data.images import ImageDataModule
from survae.registry import register

NUM_TRAIN_BATCHES = 10


def _damaged(path: str, err: BaseException) -> DatasetCorruptedError:
    detail = " ".join(f"{type(err).__name__}: {err}".split())[:200]
    return DatasetCorruptedError(f"{path}: not a readable Downsampled ImageNet .npz ({detail})")


def npz_array_shape(path: str, key: str = "data") -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype of array ``key`` in an ``.npz`` file, read from its header only."""
    try:
        with zipfile.ZipFile(path) as zf:
            if key + ".npy" not in zf.namelist():
                arrays = [n.removesuffix(".npy") for n in zf.namelist()]
                raise DatasetCorruptedError(
                    f"{path}: no {key!r} array (it holds {arrays or 'nothing'}); the file is "
                    "damaged or not a Downsampled ImageNet batch"
                )
            with zf.open(key + ".npy") as f:
                version = np.lib.format.read_magic(f)
                if version == (1, 0):
                    shape, _, dtype = np.lib.format.read_array_header_1_0(f)
                else:
                    shape, _, dtype = np.lib.format.read_array_header_2_0(f)
    except (zipfile.BadZipFile, ValueError, EOFError, OSError) as err:
        raise _damaged(path, err) from err
    return tuple(shape), np.dtype(dtype)


def read_npz_data(path: str, key: str = "data") -> np.ndarray:
    """Array ``key`` of an ``.npz`` file, never unpickling; a damaged file or a missing array
    raises :class:`DatasetCorruptedError` naming the file."""
    try:
        with np.load(path, allow_pickle=False) as f:
            if key not in f.files:
                raise DatasetCorruptedError(
                    f"{path}: no {key!r} array (it holds {f.files or 'nothing'}); the file is "
                    "damaged or not a Downsampled ImageNet batch"
                )
            return f[key]
    except (zipfile.BadZipFile, ValueError, EOFError, OSError) as err:
        raise _damaged(path, err) from err


def _batch_number(path: str) -> int:
    return int(re.search(r"train_data_batch_(\d+)\.npz$", path).group(1))


class DownsampledImageNetDataModule(ImageDataModule):
    """Downsampled ImageNet (see :mod:`survae.data.imagenet` for format and layout)."""

    resolution: int = 32

    def __init__(self, val_size: int = 10_000, memory_map: bool = True, **kwargs):
        super().__init__(val_size=val_size, **kwargs)
        self.memory_map = bool(memory_map)

    @property
    def folder(self) -> str:
        return self.path(f"imagenet{self.resolution}")

    def how_to_get(self) -> str:
        r = self.resolution
        return (
            "it cannot be downloaded automatically: register at image-net.org, download "
            f"'Downsampled ImageNet' {r}x{r} in npz format (Imagenet{r}_train_npz and "
            f"Imagenet{r}_val_npz archives) and unzip them below {self.folder}."
        )

    def _download(self) -> None:
        if not self._files_present():
            raise DatasetNotFoundError(
                self.name, [self.folder], "automatic download is impossible: " + self.how_to_get()
            )

    # --- locating files -------------------------------------------------------------------
    def _files_present(self) -> bool:
        try:
            self._source_files()
        except DatasetNotFoundError:
            return False
        return True

    def _source_files(self) -> dict[str, list[str]]:
        pattern = os.path.join(self.folder, "**", "train_data_batch_*.npz")
        train = sorted(glob.glob(pattern, recursive=True), key=_batch_number)
        val = sorted(glob.glob(os.path.join(self.folder, "**", "val_data.npz"), recursive=True))
        missing = []
        if not train:
            missing.append(os.path.join(self.folder, "**", "train_data_batch_<k>.npz"))
        if not val:
            missing.append(os.path.join(self.folder, "**", "val_data.npz"))
        if missing:
            raise DatasetNotFoundError(self.name, missing, self.how_to_get())
        numbers = [_batch_number(p) for p in train]
        if len(set(numbers)) != len(numbers):
            raise DatasetCorruptedError(f"{self.name}: duplicate training batch files: {train}")
        if numbers != list(range(1, NUM_TRAIN_BATCHES + 1)):
            warnings.warn(
                f"{self.name}: found training batches {numbers} under {self.folder}; the full "
                f"data set has batches 1..{NUM_TRAIN_BATCHES}. Training on what was found.",
                stacklevel=2,
            )
        return {"train": train, "test": val[:1]}

    # --- reading --------------------------------------------------------------------------
    def _check_flat_shape(self, path: str, shape: tuple[int, ...], dtype: np.dtype) -> None:
        r = self.resolution
        if len(shape) != 2 or shape[1] != 3 * r * r or dtype != np.uint8:
            raise DatasetCorruptedError(
                f"{path}: 'data' must be uint8 of shape (N, {3 * r * r}) for {r}x{r} images, "
                f"got {dtype} {shape}"
            )

    def _read_in_memory(self, paths: list[str]) -> torch.Tensor:
        arrays = []
        for p in paths:
            data = read_npz_data(p)
            self._check_flat_shape(p, data.shape, data.dtype)
            arrays.append(data.reshape(-1, *self.shape))
        return torch.from_numpy(np.concatenate(arrays, 0))

    def _cache(self, split: str, paths: list[str]) -> np.ndarray:
        """Memory map of ``split`` in ``folder/cache``, (re)built from ``paths`` if needed."""
        cache_dir = os.path.join(self.folder, "cache")
        array_path = os.path.join(cache_dir, f"{split}_uint8.npy")
        meta_path = os.path.join(cache_dir, f"{split}_uint8.json")
        sources = [[os.path.relpath(p, self.folder), os.path.getsize(p)] for p in paths]
        try:
            with open(meta_path) as f:
                up_to_date = json.load(f)["sources"] == sources
        except (OSError, ValueError, KeyError):
            up_to_date = False
        if not (up_to_date and os.path.isfile(array_path)):
            shapes = []
            for p in paths:
                shape, dtype = npz_array_shape(p)
                self._check_flat_shape(p, shape, dtype)
                shapes.append(shape)
            total = sum(s[0] for s in shapes)
            os.makedirs(cache_dir, exist_ok=True)
            tmp = array_path + ".tmp.npy"
            out = np.lib.format.open_memmap(
                tmp, mode="w+", dtype=np.uint8, shape=(total, *self.shape)
            )
            start = 0
            for p, shape in zip(paths, shapes):
                out[start : start + shape[0]] = read_npz_data(p).reshape(-1, *self.shape)
                start += shape[0]
            out.flush()
            del out
            os.replace(tmp, array_path)
            with open(meta_path, "w") as f:
                json.dump({"sources": sources}, f)
        return np.load(array_path, mmap_mode="r", allow_pickle=False)

    def _prepare(self) -> None:
        if self.memory_map and self._files_present():
            for split, paths in self._source_files().items():
                self._cache(split, paths)

    def _load(self):
        files = self._source_files()
        if self.memory_map:
            train, test = (self._cache(s, files[s]) for s in ("train", "test"))
        else:
            train, test = (self._read_in_memory(files[s]) for s in ("train", "test"))
        return self._split(train, test)


@register("dataset", "imagenet32")
class ImageNet32DataModule(DownsampledImageNetDataModule):
    """ImageNet 32x32 (3x32x32, 8-bit): 1.28 M training, 50k test (official validation)."""

    name = "imagenet32"
    shape = (3, 32, 32)
    resolution = 32


@register("dataset", "imagenet64")
class ImageNet64DataModule(DownsampledImageNetDataModule):
    """ImageNet 64x64 (3x64x64, 8-bit): 1.28 M training, 50k test (official validation)."""

    name = "imagenet64"
    shape = (3, 64, 64)
    resolution = 64
