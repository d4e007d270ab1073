"""CelebA from a tiny zip of JPEGs and a split file in the official layout."""

import io
import zipfile

import numpy as np
import pytest
import torch
from PIL import Image

from survae import registry
from survae.data import CelebADataModule
from survae.data.celeba import decode_image
from survae.data.errors import DatasetCorruptedError, DatasetNotFoundError


def _jpeg(rng) -> bytes:
    img = Image.fromarray(rng.integers(0, 256, (218, 178, 3), dtype=np.uint8))
    buf = io.BytesIO()
    img.save(buf, format="JPEG")
    return buf.getvalue()


def _write_raw(root, splits=(0, 0, 0, 1, 2, 2)):
    rng = np.random.default_rng(0)
    raw = root / "celeba" / "raw"
    raw.mkdir(parents=True)
    names = [f"{i:06d}.jpg" for i in range(1, len(splits) + 1)]
    with zipfile.ZipFile(raw / "img_align_celeba.zip", "w") as zf:
        for name in names:
            zf.writestr(f"img_align_celeba/{name}", _jpeg(rng))
    lines = [f"{n} {s}" for n, s in zip(names, splits)]
    (raw / "list_eval_partition.txt").write_text("\n".join(lines) + "\n")
    return raw


def test_celeba_splits_cache_and_crop(tmp_path):
    assert registry.get("dataset", "celeba") is CelebADataModule
    raw = _write_raw(tmp_path)
    dm = registry.build("dataset", "celeba", root=str(tmp_path), batch_size=2)
    dm.setup()
    assert [len(dm.train_set), len(dm.val_set), len(dm.test_set)] == [3, 1, 2]
    batch = next(iter(dm.train_dataloader()))
    assert batch.shape == (2, 3, 64, 64) and batch.dtype == torch.uint8
    # the cache holds the cropped and resized decodes
    with zipfile.ZipFile(raw / "img_align_celeba.zip") as zf:
        first = zf.read("img_align_celeba/000005.jpg")
    assert np.array_equal(dm.test_set.data[0], decode_image(first, crop=True))
    full = registry.build("dataset", "celeba", root=str(tmp_path), crop=False)
    full.setup()
    assert not np.array_equal(full.test_set.data[0], dm.test_set.data[0])
    five = registry.build("dataset", "celeba", root=str(tmp_path), num_bits=5, batch_size=2)
    five.setup()
    assert five.num_bins == 32 and int(five.test_set.__getitems__([0, 1]).max()) <= 31


def test_celeba_crop_is_realnvps_square():
    arr = np.zeros((218, 178, 3), np.uint8)
    arr[40:188, 15:163] = 255  # the 148×148 square at top 40, left 15
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    assert decode_image(buf.getvalue(), crop=True).min() == 255
    assert decode_image(buf.getvalue(), crop=False).min() == 0


def test_celeba_errors(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="img_align_celeba.zip"):
        registry.build("dataset", "celeba", root=str(tmp_path)).setup()
    raw = _write_raw(tmp_path)
    (raw / "list_eval_partition.txt").write_text("000001.jpg 7\n")
    with pytest.raises(DatasetCorruptedError, match="expected 'name.jpg 0|1|2'"):
        registry.build("dataset", "celeba", root=str(tmp_path)).setup()
