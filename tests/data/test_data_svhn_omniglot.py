"""SVHN and binarized Omniglot read from tiny MATLAB files in the real layouts."""

import numpy as np
import pytest
import torch
from scipy.io import savemat

from survae import registry
from survae.data import BinarizedOmniglotDataModule, SVHNDataModule
from survae.data.errors import DatasetCorruptedError, DatasetNotFoundError


def test_svhn_reads_torchvision_mat_files(tmp_path):
    assert registry.get("dataset", "svhn") is SVHNDataModule
    rng = np.random.default_rng(0)
    folder = tmp_path / "SVHN"
    folder.mkdir()
    arrays = {}
    for split, n in (("train", 12), ("test", 5)):
        X = rng.integers(0, 256, (32, 32, 3, n), dtype=np.uint8)
        y = rng.integers(1, 11, (n, 1))  # the files label 0 as 10
        savemat(folder / f"{split}_32x32.mat", {"X": X, "y": y})
        arrays[split] = (X, y)
    dm = registry.build("dataset", "svhn", root=str(tmp_path), val_size=4, batch_size=2)
    dm.setup()
    assert [len(dm.train_set), len(dm.val_set), len(dm.test_set)] == [8, 4, 5]
    X, y = arrays["test"]
    expected = torch.from_numpy(np.transpose(X, (3, 2, 0, 1)).copy())
    assert torch.equal(dm.test_set.data, expected)
    batch = next(iter(dm.train_dataloader()))
    assert batch.shape == (2, 3, 32, 32) and batch.dtype == torch.uint8
    cond = registry.build(
        "dataset", "svhn", root=str(tmp_path), val_size=4, batch_size=2, conditional=True
    )
    cond.setup()
    _, context = cond.test_set.__getitems__([0, 1])
    assert torch.equal(context.argmax(1), torch.from_numpy(y[:2, 0] % 10))
    quarter = registry.build("dataset", "svhn", root=str(tmp_path), val_size=4, num_bits=2)
    assert quarter.num_bins == 4
    savemat(folder / "test_32x32.mat", {"X": np.zeros((3, 3))})
    with pytest.raises(DatasetCorruptedError, match=r"\(32, 32, 3, N\)"):
        registry.build("dataset", "svhn", root=str(tmp_path), val_size=4).setup()
    with pytest.raises(DatasetNotFoundError, match="train_32x32.mat"):
        registry.build("dataset", "svhn", root=str(tmp_path / "none")).setup()


def test_binarized_omniglot_reads_chardata(tmp_path):
    assert registry.get("dataset", "binarized_omniglot") is BinarizedOmniglotDataModule
    rng = np.random.default_rng(1)
    folder = tmp_path / "omniglot"
    folder.mkdir()
    data, testdata = rng.uniform(0, 1, (784, 10)), rng.uniform(0, 1, (784, 6))
    data[:, 0] = 0.0  # an all-zero image stays 0
    savemat(folder / "chardata.mat", {"data": data, "testdata": testdata})
    dm = registry.build("dataset", "binarized_omniglot", root=str(tmp_path), val_size=3)
    assert dm.num_bins == 2
    dm.setup()
    assert [len(dm.train_set), len(dm.val_set), len(dm.test_set)] == [7, 3, 6]
    test = dm.test_set.data
    assert test.shape == (6, 1, 28, 28) and set(test.unique().tolist()) <= {0, 1}
    # test pixels are Bernoulli(p) draws: on average close to the grey values
    assert abs(test.float().mean().item() - testdata.mean()) < 0.03
    train = dm.train_set.__getitems__(list(range(7)))
    assert set(train.unique().tolist()) <= {0, 1}
    raw = dm.train_set.data[dm.train_set.indices]
    assert torch.all(train[raw == 0] == 0)
    savemat(folder / "chardata.mat", {"data": data[:100]})
    with pytest.raises(DatasetCorruptedError, match="784, N"):
        registry.build("dataset", "binarized_omniglot", root=str(tmp_path), val_size=3).setup()
    with pytest.raises(DatasetNotFoundError, match="chardata.mat"):
        registry.build("dataset", "binarized_omniglot", root=str(tmp_path / "none")).setup()
