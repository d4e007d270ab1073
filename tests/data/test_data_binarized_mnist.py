"""Binarized MNIST (dynamic and fixed) and the quantization to fewer bits."""

import numpy as np
import pytest
import torch

from survae import registry
from survae.data import BinarizedMNISTDataModule, FixedBinarizedMNISTDataModule
from survae.data.errors import DatasetCorruptedError, DatasetNotFoundError
from survae.data.quantize import Chain, DynamicBinarize, ReduceBits, bits_of
from survae.metrics import bits_per_dim


def test_registered():
    assert registry.get("dataset", "binarized_mnist") is BinarizedMNISTDataModule
    assert registry.get("dataset", "binarized_mnist_fixed") is FixedBinarizedMNISTDataModule


def test_dynamic_binarization_draws_afresh_with_the_grey_level_probability(mnist_root):
    root, images = mnist_root(n_train=30, n_test=12)
    dm = registry.build("dataset", "binarized_mnist", root=str(root), batch_size=5, val_size=6)
    assert dm.num_bins == 2 and dm.shape == (1, 28, 28)
    dm.setup()
    a = dm.train_set.__getitems__([0, 1, 2, 3])
    b = dm.train_set.__getitems__([0, 1, 2, 4])
    assert a.dtype == torch.uint8 and set(a.unique().tolist()) <= {0, 1}
    assert not torch.equal(a[:3], b[:3])  # another batch: other draws
    assert torch.equal(a, dm.train_set.__getitems__([0, 1, 2, 3]))  # keyed: reproducible
    # zero pixels stay 0, 255 ones become 1
    raw = torch.from_numpy(images["train"])[:, None]
    assert torch.all(a[raw[dm.train_set.indices[:4]] == 0] == 0)
    val1, val2 = dm.val_set.__getitems__([0, 1]), dm.val_set.__getitems__([0, 1])
    assert torch.equal(val1, val2) and set(val1.unique().tolist()) <= {0, 1}
    test = next(iter(dm.test_dataloader()))
    assert test.shape == (5, 1, 28, 28) and set(test.unique().tolist()) <= {0, 1}


def test_binarization_probability():
    x = torch.full((20000, 1), 64, dtype=torch.uint8)
    mean = DynamicBinarize(0)(x).float().mean().item()
    assert abs(mean - 64 / 255) < 0.01


def _write_amat(path, images):
    lines = [" ".join(str(int(v)) for v in img.reshape(-1)) for img in images]
    path.write_text("\n".join(lines) + "\n")


def test_fixed_binarization_reads_amat_files(tmp_path):
    rng = np.random.default_rng(0)
    folder = tmp_path / "static_mnist"
    folder.mkdir()
    data = {
        s: rng.integers(0, 2, (n, 28, 28)) for s, n in (("train", 7), ("valid", 3), ("test", 4))
    }
    for split, images in data.items():
        _write_amat(folder / f"binarized_mnist_{split}.amat", images)
    dm = registry.build("dataset", "binarized_mnist_fixed", root=str(tmp_path), batch_size=2)
    dm.setup()
    assert [len(dm.train_set), len(dm.val_set), len(dm.test_set)] == [7, 3, 4]
    assert torch.equal(dm.test_set.data[:, 0], torch.from_numpy(data["test"]).to(torch.uint8))
    assert next(iter(dm.train_dataloader())).dtype == torch.uint8
    (folder / "binarized_mnist_test.amat").write_text("0 1 2\n")
    with pytest.raises(DatasetCorruptedError, match="0/1 values"):
        registry.build("dataset", "binarized_mnist_fixed", root=str(tmp_path)).setup()
    with pytest.raises(DatasetNotFoundError, match="binarized_mnist_train.amat"):
        registry.build("dataset", "binarized_mnist_fixed", root=str(tmp_path / "none")).setup()


def test_num_bits_quantizes_every_split(mnist_root):
    root, images = mnist_root(n_train=30, n_test=12)
    dm = registry.build("dataset", "mnist", root=str(root), batch_size=4, val_size=6, num_bits=5)
    assert dm.num_bins == 32
    dm.setup()
    raw = torch.from_numpy(images["t10k"])[:, None]
    assert torch.equal(dm.test_set.__getitems__(list(range(12))), raw // 8)
    for ds in (dm.train_set, dm.val_set):
        assert int(ds.__getitems__(list(range(4))).max()) <= 31
    full = registry.build("dataset", "mnist", root=str(root), val_size=6, num_bits=8)
    assert full.num_bins == 256 and full.quantize_transform() is None
    with pytest.raises(ValueError, match=r"num_bits must lie in \[1, 8\]"):
        registry.build("dataset", "mnist", root=str(root), num_bits=9)
    with pytest.raises(ValueError, match="power-of-two number of levels"):
        registry.build("dataset", "digits", num_bits=3)


def test_quantize_helpers_and_bits_per_dim_meaning():
    assert bits_of(256) == 8 and bits_of(2) == 1 and bits_of(17) is None
    x = torch.arange(256, dtype=torch.uint8).view(1, -1)
    assert torch.equal(ReduceBits(8, 3)(x), x // 32)
    chained = Chain([ReduceBits(8, 5), ReduceBits(5, 1)])
    assert torch.equal(chained(x), x // 128)
    # a uniform model over 2^b levels has b bits per dimension, whatever b
    for bits in (1, 5, 8):
        log_p = torch.tensor([-784 * bits * np.log(2.0)], dtype=torch.float32)
        torch.testing.assert_close(bits_per_dim(log_p, 784), torch.tensor([float(bits)]))


def test_binarize_option_of_the_mnist_module(mnist_root):
    root, _ = mnist_root(folder="FashionMNIST")
    dm = registry.build("dataset", "fashion_mnist", root=str(root), val_size=6, binarize=True)
    assert dm.num_bins == 2
    dm.setup()
    assert set(dm.test_set.data.unique().tolist()) <= {0, 1}
    with pytest.raises(ValueError, match="binarize=true needs 8-bit images and no num_bits"):
        registry.build("dataset", "mnist", root=str(root), binarize=True, num_bits=4)
