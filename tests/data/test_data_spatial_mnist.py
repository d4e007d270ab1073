"""SpatialMNIST: point sampling from pixel intensities, splits and the on-disk cache."""

import os

import numpy as np
import pytest
import torch

from survae import registry
from survae.data.spatial_mnist import images_to_point_sets


def test_points_lie_in_sampled_pixels_upright():
    img = np.zeros((1, 28, 28), np.uint8)
    img[0, 2, 5] = 255  # a single lit pixel: row 2, column 5
    pts = images_to_point_sets(img, 50, torch.Generator().manual_seed(0))
    assert pts.shape == (1, 50, 2) and pts.dtype == np.float32
    # fewer than 50 lit pixels -> drawn with replacement; all in pixel (x=5, y=27-2)
    assert np.all((pts[..., 0] >= 5) & (pts[..., 0] < 6))
    assert np.all((pts[..., 1] >= 25) & (pts[..., 1] < 26))
    assert len(np.unique(pts[0, :, 0])) == 50  # uniform jitter inside the pixel


def test_without_replacement_when_enough_pixels():
    rng = np.random.default_rng(0)
    img = np.zeros((40, 28, 28), np.uint8)
    img[:, 5:15, 5:15] = rng.integers(1, 256, (40, 10, 10), dtype=np.uint8)  # 100 lit pixels
    pts = images_to_point_sets(img, 50, torch.Generator().manual_seed(1))
    cells = np.floor(pts).astype(int)
    for c in cells:
        assert len({tuple(p) for p in c}) == 50  # 50 distinct pixels
    cols, rows = cells[..., 0], 27 - cells[..., 1]
    assert cols.min() >= 5 and cols.max() < 15 and rows.min() >= 5 and rows.max() < 15
    assert pts.min() >= 0 and pts.max() < 28


def test_sampling_follows_intensities():
    img = np.zeros((4000, 28, 28), np.uint8)
    img[:, 0, 0] = 200  # pixel (x=0, y=27)
    img[:, 0, 1] = 50  # pixel (x=1, y=27)
    pts = images_to_point_sets(img, 5, torch.Generator().manual_seed(2))  # with replacement
    frac = np.mean(np.floor(pts[..., 0]) == 0)
    assert abs(frac - 0.8) < 0.02
    assert np.all(np.floor(pts[..., 1]) == 27)


def test_seeded():
    img = np.random.default_rng(0).integers(0, 256, (3, 28, 28), dtype=np.uint8)
    a = images_to_point_sets(img, 50, torch.Generator().manual_seed(5))
    b = images_to_point_sets(img, 50, torch.Generator().manual_seed(5))
    c = images_to_point_sets(img, 50, torch.Generator().manual_seed(6))
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_module_splits_and_cache(mnist_root):
    root, images = mnist_root(n_train=30, n_test=12)
    dm = registry.build("dataset", "spatial_mnist", root=str(root), batch_size=4, val_size=10)
    assert dm.shape == (50, 2) and dm.kind == "points"
    dm.prepare_data()  # builds the cache from the MNIST files
    cache = root / "spatial_mnist" / "points_n50_seed0.npz"
    assert cache.is_file()
    dm.setup()
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (20, 10, 12)
    x = next(iter(dm.train_dataloader()))
    assert x.shape == (4, 50, 2) and x.dtype == torch.float32
    assert float(x.min()) >= 0 and float(x.max()) < 28
    # validation = the last training digits; points come from the lit 12x12 block
    cols = np.floor(dm.val_set.data[..., 0].numpy())
    assert cols.min() >= 8 and cols.max() < 20
    # the cache is reused: MNIST files gone, same points back
    for f in (root / "MNIST" / "raw").iterdir():
        os.remove(f)
    dm2 = registry.build("dataset", "spatial_mnist", root=str(root), batch_size=4, val_size=10)
    dm2.setup()
    assert torch.equal(dm2.test_set.data, dm.test_set.data)
    # another data_seed needs (and names) another cache
    dm3 = registry.build("dataset", "spatial_mnist", root=str(root), batch_size=4, data_seed=1)
    with pytest.raises(FileNotFoundError, match="MNIST"):
        dm3.setup()


def test_num_points_option(mnist_root):
    root, _ = mnist_root(n_train=12, n_test=3)
    dm = registry.build("dataset", "spatial_mnist", root=str(root), batch_size=2, val_size=2,
                        num_points=20)  # fmt: skip
    dm.setup()
    assert dm.shape == (20, 2) and dm.test_set.data.shape == (3, 20, 2)
    assert (root / "spatial_mnist" / "points_n20_seed0.npz").is_file()
