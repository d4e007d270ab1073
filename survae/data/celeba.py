"""CelebA (Liu et al. 2015) at 64×64, as the official SurVAE loader prepares it: the aligned
images ``img_align_celeba.zip`` and the split file ``list_eval_partition.txt`` (162,770 /
19,867 / 19,962 images for train / validation / test) under ``ROOT/celeba/raw/``.

Each JPEG is resized to 64×64 with PIL's bilinear filter. ``crop=True`` first takes the
148×148 square at top 40, left 15 (RealNVP's CelebA preprocessing, which the official code
computes); the official code then resizes the uncropped image by mistake, which
``crop=False`` reproduces. The images are decoded once into
``ROOT/celeba/processed/{split}_{crop|full}_uint8.npy`` (``np.load`` without pickles, memory
mapped) and batches are ``uint8`` ``[B, 3, 64, 64]``; ``num_bits=5`` gives Glow's 5-bit CelebA.
"""

from __future__ import annotations

import io
import os
import zipfile

import numpy as np

from survae.data.base import ArrayDataset
from survae.data.errors import DatasetCorruptedError, DatasetNotFoundError
from survae.data.images import ImageDataModule
from survae.data.quantize import chain
from survae.registry import register

SPLITS = {"train": "0", "valid": "1", "test": "2"}
#: RealNVP's crop (top, left, height, width)
CROP = (40, 15, 148, 148)


def read_partition(path: str) -> dict[str, list[str]]:
    """File names per split from ``list_eval_partition.txt`` (``name split`` per line)."""
    names: dict[str, list[str]] = {s: [] for s in SPLITS}
    split_of = {v: k for k, v in SPLITS.items()}
    with open(path) as f:
        for number, line in enumerate(f, 1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) != 2 or parts[1] not in split_of:
                raise DatasetCorruptedError(f"{path}:{number}: expected 'name.jpg 0|1|2'")
            names[split_of[parts[1]]].append(parts[0])
    return names


def decode_image(data: bytes, crop: bool, size: int = 64) -> np.ndarray:
    """One JPEG as ``(3, size, size)`` uint8: optionally RealNVP's crop, then bilinear resize."""
    from PIL import Image

    img = Image.open(io.BytesIO(data)).convert("RGB")
    if crop:
        top, left, h, w = CROP
        img = img.crop((left, top, left + w, top + h))
    img = img.resize((size, size), Image.BILINEAR)
    return np.asarray(img, dtype=np.uint8).transpose(2, 0, 1)


@register("dataset", "celeba")
class CelebADataModule(ImageDataModule):
    """CelebA 3×64×64, 8-bit, with its official train / validation / test split (see the
    module docstring for the files, ``crop`` and the cache)."""

    name = "celeba"
    shape = (3, 64, 64)
    folder = "celeba"

    def __init__(self, crop: bool = True, **kwargs):
        super().__init__(**kwargs)
        self.crop = bool(crop)

    def raw(self, name: str) -> str:
        return self.path(self.folder, "raw", name)

    def cache_file(self, split: str) -> str:
        kind = "crop" if self.crop else "full"
        return self.path(self.folder, "processed", f"{split}_{kind}_uint8.npy")

    def how_to_get(self) -> str:
        return (
            "download img_align_celeba.zip ('Align&Cropped Images') and list_eval_partition.txt "
            "('Train/Val/Test Partitions') from mmlab.ie.cuhk.edu.hk/projects/CelebA.html into "
            f"{self.path(self.folder, 'raw')}."
        )

    def _prepare(self) -> None:
        if all(os.path.exists(self.cache_file(s)) for s in SPLITS):
            return
        raw = [self.raw("img_align_celeba.zip"), self.raw("list_eval_partition.txt")]
        missing = [p for p in raw if not os.path.exists(p)]
        if missing:
            raise DatasetNotFoundError(self.name, missing, self.how_to_get())
        names = read_partition(raw[1])
        os.makedirs(os.path.dirname(self.cache_file("train")), exist_ok=True)
        with zipfile.ZipFile(raw[0]) as zf:
            for split, files in names.items():
                out = np.empty((len(files), *self.shape), np.uint8)
                for i, name in enumerate(files):
                    try:
                        out[i] = decode_image(zf.read(f"img_align_celeba/{name}"), self.crop)
                    except KeyError as err:
                        raise DatasetCorruptedError(f"{raw[0]}: no {name}") from err
                tmp = self.cache_file(split) + ".tmp.npy"
                np.save(tmp, out)
                os.replace(tmp, self.cache_file(split))

    def _load(self):
        self._prepare()
        train, val, test = (
            np.load(self.cache_file(s), mmap_mode="r", allow_pickle=False) for s in SPLITS
        )
        for array, split in ((train, "train"), (val, "valid"), (test, "test")):
            self._check_shape(array, self.cache_file(split))
        quantize = self.quantize_transform()
        return (
            ArrayDataset(train, transform=chain(self.train_transform(), quantize)),
            ArrayDataset(val, transform=quantize),
            ArrayDataset(test, transform=quantize),
        )


__all__ = ["CelebADataModule", "decode_image", "read_partition"]
