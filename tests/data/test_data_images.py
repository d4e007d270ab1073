"""Image data modules on tiny files in the real formats (IDX, CIFAR pickles, ImageNet npz)."""

import gzip
import hashlib
import os

import numpy as np
import pytest
import torch

from survae import registry
from survae.data.errors import DatasetCorruptedError, DatasetNotFoundError
from survae.data.io import read_idx, write_idx


# --- IDX ---------------------------------------------------------------------------------
@pytest.mark.parametrize("suffix", ["", ".gz"])
@pytest.mark.parametrize("dtype", [np.uint8, np.int32, np.float32])
def test_idx_roundtrip(tmp_path, suffix, dtype):
    a = (np.arange(2 * 3 * 4) * 7 - 20).astype(dtype).reshape(2, 3, 4)
    if dtype == np.uint8:
        a = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    path = tmp_path / f"a.idx{suffix}"
    write_idx(path, a)
    b = read_idx(path)
    assert b.dtype == a.dtype and np.array_equal(a, b)


def test_idx_reader_rejects_bad_files(tmp_path):
    (tmp_path / "bad").write_bytes(b"\x01\x02\x03\x04rest")
    with pytest.raises(DatasetCorruptedError, match="magic"):
        read_idx(tmp_path / "bad")
    write_idx(tmp_path / "ok", np.zeros((3, 4, 4), np.uint8))
    (tmp_path / "short").write_bytes((tmp_path / "ok").read_bytes()[:-5])
    with pytest.raises(DatasetCorruptedError, match="holds"):
        read_idx(tmp_path / "short")


# --- MNIST / Fashion-MNIST -----------------------------------------------------------------
@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("name,folder", [("mnist", "MNIST"), ("fashion_mnist", "FashionMNIST")])
def test_mnist_like_modules(mnist_root, name, folder, gz):
    root, images = mnist_root(folder=folder, gz=gz)
    dm = registry.build("dataset", name, root=str(root), batch_size=8, val_size=5)
    dm.setup()
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (25, 5, 12)
    batch = next(iter(dm.train_dataloader()))
    assert batch.dtype == torch.uint8 and batch.shape == (8, 1, 28, 28)
    # train + val are exactly the training file's images, test the test file's
    tv = torch.cat([dm.train_set.__getitems__(range(25)), dm.val_set.__getitems__(range(5))])
    got = sorted(x.numpy().tobytes() for x in tv)
    assert got == sorted(x[None].tobytes() for x in images["train"])
    assert np.array_equal(dm.test_set.data[:, 0].numpy(), images["t10k"])
    # the validation split is fixed by data_seed, not by the training seed
    other = registry.build("dataset", name, root=str(root), batch_size=8, val_size=5, seed=9)
    other.setup()
    assert np.array_equal(other.val_set.indices, dm.val_set.indices)


def test_mnist_missing_message(tmp_path):
    dm = registry.build("dataset", "mnist", root=str(tmp_path), batch_size=4)
    with pytest.raises(DatasetNotFoundError) as info:
        dm.setup()
    msg = str(info.value)
    assert os.path.join(str(tmp_path), "MNIST", "raw", "train-images-idx3-ubyte") in msg
    assert "data.download=true" in msg
    dm = registry.build("dataset", "fashion_mnist", root=str(tmp_path), batch_size=4)
    with pytest.raises(DatasetNotFoundError, match="apt-get install dataset-fashion-mnist"):
        dm.setup()


def test_download_only_when_asked(tmp_path, monkeypatch):
    import torchvision

    calls = []

    class FakeMNIST:
        def __init__(self, root, train, download=False):
            calls.append((root, train, download))

    monkeypatch.setattr(torchvision.datasets, "MNIST", FakeMNIST)
    registry.build("dataset", "mnist", root=str(tmp_path), batch_size=4).prepare_data()
    assert calls == []
    dm = registry.build("dataset", "mnist", root=str(tmp_path), batch_size=4, download=True)
    dm.prepare_data()
    assert calls == [(str(tmp_path), True, True), (str(tmp_path), False, True)]


def test_fashion_mnist_debian_helper(tmp_path, mnist_root):
    from survae.data.fetch import install_fashion_mnist_from_debian

    src, images = mnist_root(folder="debian", gz=True)
    written = install_fashion_mnist_from_debian(str(tmp_path / "root"), str(src / "debian" / "raw"))
    assert len(written) == 4 and all(not p.endswith(".gz") for p in written)
    dm = registry.build(
        "dataset", "fashion_mnist", root=str(tmp_path / "root"), batch_size=4, val_size=3
    )
    dm.setup()
    assert np.array_equal(dm.test_set.data[:, 0].numpy(), images["t10k"])
    with pytest.raises(DatasetNotFoundError, match="apt-get"):
        install_fashion_mnist_from_debian(str(tmp_path), str(tmp_path / "nowhere"))


def test_mnist_subset_from_csv(tmp_path):
    from survae.data.fetch import write_mnist_subset_from_csv

    rng = np.random.default_rng(0)
    table = np.concatenate([rng.integers(0, 256, (20, 784)), rng.integers(0, 10, (20, 1))], axis=1)
    with gzip.open(tmp_path / "digits.csv.gz", "wt") as f:
        np.savetxt(f, table, fmt="%d", delimiter=",")
    write_mnist_subset_from_csv(str(tmp_path / "digits.csv.gz"), str(tmp_path), num_test=4)
    dm = registry.build("dataset", "mnist", root=str(tmp_path), batch_size=4, val_size=2)
    dm.setup()
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (14, 2, 4)
    rows = {r[:784].astype(np.uint8).tobytes() for r in table}
    assert all(x.numpy().tobytes() in rows for x in dm.test_set.data)


# --- digits --------------------------------------------------------------------------------
def test_digits_real_data():
    dm = registry.build("dataset", "digits", batch_size=50)
    dm.setup()
    sizes = (len(dm.train_set), len(dm.val_set), len(dm.test_set))
    assert sizes == (1300, 200, 297)
    idx = [set(d.indices.tolist()) for d in (dm.train_set, dm.val_set, dm.test_set)]
    assert len(idx[0] | idx[1] | idx[2]) == 1797
    x = next(iter(dm.train_dataloader()))
    assert x.dtype == torch.uint8 and x.shape == (50, 1, 8, 8)
    full = dm.train_set.data
    assert int(full.max()) == 16 and int(full.min()) == 0 and dm.num_bins == 17


# --- CIFAR-10 ------------------------------------------------------------------------------
def test_cifar10_integrity_check_rejects_fake_files(cifar_root):
    root, _ = cifar_root()
    dm = registry.build("dataset", "cifar10", root=str(root), batch_size=4, val_size=6)
    with pytest.raises(DatasetCorruptedError, match="check_integrity"):
        dm.setup()


def test_cifar10_integrity_check_accepts_matching_md5(cifar_root, monkeypatch):
    root, arrays = cifar_root()
    folder = root / "cifar-10-batches-py"
    md5 = {n: hashlib.md5((folder / n).read_bytes()).hexdigest() for n in arrays}
    from survae.data.images import CIFAR10DataModule

    monkeypatch.setattr(CIFAR10DataModule, "_official_md5", lambda self: md5)
    dm = registry.build("dataset", "cifar10", root=str(root), batch_size=4, val_size=6)
    dm.setup()
    assert len(dm.test_set) == 10


def test_cifar10_without_checksum(cifar_root):
    root, arrays = cifar_root()
    dm = registry.build(
        "dataset", "cifar10", root=str(root), batch_size=8, val_size=6, check_integrity=False,
        augment=False,
    )  # fmt: skip
    dm.setup()
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (34, 6, 10)
    expected = np.concatenate([arrays[f"data_batch_{i}"] for i in range(1, 6)])
    assert np.array_equal(dm.train_set.data.numpy(), expected.reshape(-1, 3, 32, 32))
    # channel-planar layout: the first 1024 values are the red plane
    assert np.array_equal(dm.test_set.data[0, 0].numpy().ravel(), arrays["test_batch"][0, :1024])
    x = next(iter(dm.test_dataloader()))
    assert x.dtype == torch.uint8 and x.shape == (8, 3, 32, 32)


def test_cifar10_augmentation_train_only(cifar_root):
    root, _ = cifar_root()
    dm = registry.build(
        "dataset", "cifar10", root=str(root), batch_size=8, val_size=6, check_integrity=False,
        translate=0,
    )  # fmt: skip
    dm.setup()
    assert dm.augment  # on by default for CIFAR-10 (SurVAE)
    idx = list(range(len(dm.train_set))) * 4
    raw = dm.train_set.data[torch.as_tensor(dm.train_set.indices[idx])]
    out = dm.train_set.__getitems__(idx)
    flipped = (out == raw.flip(-1)).flatten(1).all(1)
    same = (out == raw).flatten(1).all(1)
    assert out.dtype == torch.uint8
    assert bool((flipped | same).all()) and 0 < int(flipped.sum()) < len(idx)
    # validation and test batches are never augmented
    val = dm.val_set.__getitems__(range(6))
    assert torch.equal(val, dm.val_set.data[torch.as_tensor(dm.val_set.indices)])
    # with translation the training images also shift
    dm2 = registry.build(
        "dataset", "cifar10", root=str(root), batch_size=8, val_size=6, check_integrity=False,
        translate=1,
    )  # fmt: skip
    dm2.setup()
    out2 = dm2.train_set.__getitems__(idx)
    neither = ~((out2 == raw.flip(-1)).flatten(1).all(1) | (out2 == raw).flatten(1).all(1))
    assert int(neither.sum()) > 0


def test_cifar10_missing_files(cifar_root):
    root, _ = cifar_root()
    os.remove(root / "cifar-10-batches-py" / "data_batch_3")
    dm = registry.build("dataset", "cifar10", root=str(root), batch_size=4, check_integrity=False)
    with pytest.raises(DatasetNotFoundError, match="data_batch_3"):
        dm.setup()


# --- Downsampled ImageNet --------------------------------------------------------------------
def _write_imagenet(folder, res, n_batches=2, n=7, n_val=5, nested=True):
    rng = np.random.default_rng(3)
    train_dir = folder / ("Imagenet_train_npz" if nested else "")
    train_dir.mkdir(parents=True, exist_ok=True)
    images = []
    for k in range(1, n_batches + 1):
        x = rng.integers(0, 256, (n + k, 3, res, res), dtype=np.uint8)
        images.append(x)
        labels = rng.integers(1, 1001, n + k)
        np.savez(train_dir / f"train_data_batch_{k}.npz", data=x.reshape(len(x), -1),
                 labels=labels, mean=x.mean(0).ravel())  # fmt: skip
    val = rng.integers(0, 256, (n_val, 3, res, res), dtype=np.uint8)
    np.savez(folder / "val_data.npz", data=val.reshape(n_val, -1), labels=np.ones(n_val))
    return np.concatenate(images), val


@pytest.mark.filterwarnings("ignore:imagenet")
@pytest.mark.parametrize("memory_map", [True, False])
def test_imagenet32(tmp_path, memory_map):
    train, val = _write_imagenet(tmp_path / "imagenet32", 32)
    dm = registry.build("dataset", "imagenet32", root=str(tmp_path), batch_size=4, val_size=3,
                        memory_map=memory_map)  # fmt: skip
    dm.prepare_data()
    dm.setup()
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (len(train) - 3, 3, 5)
    assert np.array_equal(np.asarray(dm.train_set.data), train)  # batch 1 then batch 2
    assert np.array_equal(np.asarray(dm.test_set.data), val)
    x = next(iter(dm.train_dataloader()))
    assert x.dtype == torch.uint8 and x.shape == (4, 3, 32, 32)
    cache = tmp_path / "imagenet32" / "cache" / "train_uint8.npy"
    assert cache.is_file() == memory_map
    if memory_map:
        assert isinstance(dm.train_set.data, np.memmap)


@pytest.mark.filterwarnings("ignore:imagenet")
def test_imagenet_cache_reused_and_rebuilt(tmp_path):
    folder = tmp_path / "imagenet64"
    train, _ = _write_imagenet(folder, 64, n_batches=1, nested=False)
    dm = registry.build("dataset", "imagenet64", root=str(tmp_path), batch_size=2, val_size=2)
    dm.setup()
    cache = folder / "cache" / "train_uint8.npy"
    stamp = cache.stat().st_mtime_ns
    dm2 = registry.build("dataset", "imagenet64", root=str(tmp_path), batch_size=2, val_size=2)
    dm2.setup()
    assert cache.stat().st_mtime_ns == stamp  # reused
    # a changed source file (different size) rebuilds the cache
    x = np.zeros((3, 3 * 64 * 64), np.uint8)
    np.savez(folder / "train_data_batch_1.npz", data=x, labels=np.ones(3))
    dm3 = registry.build("dataset", "imagenet64", root=str(tmp_path), batch_size=2, val_size=2)
    dm3.setup()
    assert len(dm3.train_set) + len(dm3.val_set) == 3
    assert int(np.asarray(dm3.train_set.data).max()) == 0


def test_imagenet_warns_on_partial_train_set_and_checks_size(tmp_path):
    _write_imagenet(tmp_path / "imagenet32", 32, n_batches=1)
    dm = registry.build("dataset", "imagenet32", root=str(tmp_path), batch_size=2, val_size=2)
    with pytest.warns(UserWarning, match=r"batches \[1\]"):
        dm.setup()
    # 64x64 files in the 32x32 folder are refused
    _write_imagenet(tmp_path / "wrong" / "imagenet32", 64, n_batches=1)
    dm = registry.build("dataset", "imagenet32", root=str(tmp_path / "wrong"), batch_size=2,
                        val_size=2)  # fmt: skip
    with pytest.warns(UserWarning), pytest.raises(DatasetCorruptedError, match="3072"):
        dm.setup()


def test_imagenet_cannot_download(tmp_path):
    dm = registry.build("dataset", "imagenet32", root=str(tmp_path), batch_size=2, download=True)
    with pytest.raises(DatasetNotFoundError, match="image-net.org"):
        dm.prepare_data()


def test_mnist_wrong_image_size_and_val_size(mnist_root):
    root, _ = mnist_root(n_train=10)
    dm = registry.build("dataset", "mnist", root=str(root), batch_size=4, val_size=10)
    with pytest.raises(ValueError, match="val_size=10"):
        dm.setup()
    write_idx(root / "MNIST" / "raw" / "t10k-images-idx3-ubyte", np.zeros((3, 32, 32), np.uint8))
    dm = registry.build("dataset", "mnist", root=str(root), batch_size=4, val_size=2)
    with pytest.raises(DatasetCorruptedError, match=r"\(1, 28, 28\)"):
        dm.setup()
