"""MAF's tabular data sets: preprocessing against step-by-step references, caching, formats."""

import io
import os
import tarfile
from collections import Counter

import numpy as np
import pytest
import torch

from survae import registry
from survae.data import uci
from survae.data.errors import DatasetCorruptedError


def _maf_split(data):
    n_test = int(0.1 * data.shape[0])
    test, data = data[-n_test:], data[:-n_test]
    n_val = int(0.1 * data.shape[0])
    return data[:-n_val], data[-n_val:], test


def _maf_normalise(train, val, test):
    data = np.vstack((train, val))
    mu, s = data.mean(axis=0), data.std(axis=0)
    return (train - mu) / s, (val - mu) / s, (test - mu) / s


def _assert_splits(got, expected):
    assert len(got) == 3
    for g, e in zip(got, expected):
        g = g.numpy() if isinstance(g, torch.Tensor) else g
        assert g.shape == e.shape
        np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-5)


# --- POWER ---------------------------------------------------------------------------------
def _power_reference(raw):
    """MAF's steps written out: shuffle, drop 3 and 1, noise (voltage first), split, norm."""
    rng = np.random.RandomState(42)
    data = raw.copy()
    rng.shuffle(data)
    n = data.shape[0]
    data = np.delete(data, 3, axis=1)
    data = np.delete(data, 1, axis=1)
    voltage = 0.01 * rng.rand(n, 1)
    gap = 0.001 * rng.rand(n, 1)
    sm = rng.rand(n, 3)
    data = data + np.hstack((gap, voltage, sm, np.zeros((n, 1))))
    return _maf_normalise(*_maf_split(data))


def test_power(tmp_path):
    rng = np.random.default_rng(0)
    raw = rng.normal(size=(230, 8)) * np.arange(1, 9) + np.arange(8)
    (tmp_path / "power").mkdir()
    np.save(tmp_path / "power" / "data.npy", raw)
    dm = registry.build("dataset", "power", root=str(tmp_path), batch_size=10)
    dm.setup()
    got = (dm.train_set.data, dm.val_set.data, dm.test_set.data)
    assert [len(g) for g in got] == [187, 20, 23]
    assert all(g.dtype == torch.float32 and g.shape[1] == 6 for g in got)
    _assert_splits(got, _power_reference(raw))
    both = torch.cat(got[:2])
    assert torch.allclose(both.mean(0), torch.zeros(6), atol=1e-5)
    assert torch.allclose(both.std(0, unbiased=False), torch.ones(6), atol=1e-5)
    x = next(iter(dm.train_dataloader()))
    assert x.shape == (10, 6) and x.dtype == torch.float32


def test_power_wrong_columns():
    with pytest.raises(DatasetCorruptedError, match=r"\(N, 8\)"):
        uci.preprocess_power(np.zeros((50, 7)))


# --- MINIBOONE -----------------------------------------------------------------------------
def test_miniboone(tmp_path):
    raw = np.random.default_rng(1).gamma(2.0, size=(120, 43))
    (tmp_path / "miniboone").mkdir()
    np.save(tmp_path / "miniboone" / "data.npy", raw)
    dm = registry.build("dataset", "miniboone", root=str(tmp_path), batch_size=10)
    dm.setup()
    got = (dm.train_set.data, dm.val_set.data, dm.test_set.data)
    assert [len(g) for g in got] == [98, 10, 12]
    _assert_splits(got, _maf_normalise(*_maf_split(raw)))


def test_split_needs_enough_rows():
    with pytest.raises(ValueError, match="at least 11"):
        uci.split_tail(np.zeros((9, 3)))


# --- GAS -----------------------------------------------------------------------------------
def _gas_table(n=300, seed=2):
    """Columns Time, Meth, Eth, 16 sensors: sensors 0-7 nearly duplicate sensors 8-15."""
    rng = np.random.default_rng(seed)
    base = rng.normal(size=(n, 8)).cumsum(0)
    dup = base + 0.01 * rng.normal(size=(n, 8))
    sensors = np.hstack([dup, base])
    meta = np.stack([np.arange(n), rng.normal(size=n), rng.normal(size=n)], 1)
    columns = ["Time", "Meth", "Eth"] + [f"S{i}" for i in range(16)]
    return columns, np.hstack([meta, sensors])


def test_gas_preprocessing_numpy():
    columns, table = _gas_table()
    train, val, test = uci.preprocess_gas(columns, table)
    assert train.shape[1] == 8  # first of each correlated pair dropped, the later kept
    kept = table[:, 11:]
    expected = (kept - kept.mean(0)) / kept.std(0, ddof=1)
    _assert_splits((train, val, test), _maf_split(expected))
    with pytest.raises(DatasetCorruptedError, match="Meth"):
        uci.preprocess_gas(columns[3:], table[:, 3:])


def test_gas_module_with_pandas(tmp_path):
    pd = pytest.importorskip("pandas")
    columns, table = _gas_table(n=250, seed=3)
    frame = pd.DataFrame(table, columns=columns)
    (tmp_path / "gas").mkdir()
    frame.to_pickle(tmp_path / "gas" / "ethylene_CO.pickle")
    dm = registry.build("dataset", "gas", root=str(tmp_path), batch_size=10)
    dm.setup()
    # reference: MAF's pandas procedure, correlation recomputed after every drop
    data = frame.drop(columns=["Meth", "Eth", "Time"])
    counts = (data.corr() > 0.98).sum(axis=1)
    while np.any(counts > 1):
        data = data.drop(columns=data.columns[np.where(counts > 1)[0][0]])
        counts = (data.corr() > 0.98).sum(axis=1)
    data = ((data - data.mean()) / data.std()).values
    _assert_splits((dm.train_set.data, dm.val_set.data, dm.test_set.data), _maf_split(data))
    assert dm.shape == (8,)


# --- HEPMASS -------------------------------------------------------------------------------
def _hepmass_files(root, n_train=200, n_test=80, extra_test_column=True):
    """label, 27 features, discrete mass; features 0-5 repeat their minimum > 5 times,
    feature 6 repeats a non-minimal value (kept by MAF's criterion)."""
    rng = np.random.default_rng(4)

    def table(n, extra):
        feats = rng.normal(size=(n, 27))
        feats[: n // 4, :6] = -10.0  # the minimum, repeated n/4 times
        feats[: n // 4, 6] = 0.5  # repeated, but not the minimum
        mass = rng.choice([500.0, 750.0, 1000.0], size=(n, 1))
        label = rng.integers(0, 2, (n, 1)).astype(float)
        cols = [label, feats, mass] + ([np.zeros((n, 1))] if extra else [])
        return np.hstack(cols)

    header = "# label," + ",".join(f"f{i}" for i in range(27)) + ",mass"
    folder = root / "hepmass"
    folder.mkdir()
    train, test = table(n_train, False), table(n_test, extra_test_column)
    np.savetxt(folder / "1000_train.csv", train, delimiter=",", header=header, comments="")
    np.savetxt(folder / "1000_test.csv", test, delimiter=",", header=header, comments="")
    return train, test


def _hepmass_reference(train_raw, test_raw):
    train = train_raw[train_raw[:, 0] == 1][:, 1:]
    test = test_raw[test_raw[:, 0] == 1][:, 1:]
    test = test[:, : train.shape[1]]
    mu, s = train.mean(0), train.std(0, ddof=1)
    train, test = (train - mu) / s, (test - mu) / s
    remove = []
    for i, feature in enumerate(train.T):
        count_of_smallest = np.array([v for k, v in sorted(Counter(feature).items())])[0]
        if count_of_smallest > 5:
            remove.append(i)
    keep = [i for i in range(train.shape[1]) if i not in remove]
    train, test = train[:, keep], test[:, keep]
    n_val = int(0.1 * train.shape[0])
    return train[:-n_val], train[-n_val:], test


@pytest.mark.parametrize("extra_test_column", [True, False])
def test_hepmass(tmp_path, extra_test_column):
    train_raw, test_raw = _hepmass_files(tmp_path, extra_test_column=extra_test_column)
    dm = registry.build("dataset", "hepmass", root=str(tmp_path), batch_size=10)
    dm.setup()
    got = (dm.train_set.data, dm.val_set.data, dm.test_set.data)
    assert dm.shape == (21,) and got[0].shape[1] == 21  # 27 - 6 + mass - mass
    _assert_splits(got, _hepmass_reference(train_raw, test_raw))
    n_signal = int((train_raw[:, 0] == 1).sum())
    assert len(got[0]) + len(got[1]) == n_signal


# --- BSDS300 -------------------------------------------------------------------------------
def test_bsds300(tmp_path):
    h5py = pytest.importorskip("h5py")
    rng = np.random.default_rng(5)
    arrays = {k: rng.normal(size=(n, 63)) for k, n in (("train", 30), ("validation", 7),
                                                         ("test", 9))}  # fmt: skip
    (tmp_path / "BSDS300").mkdir()
    with h5py.File(tmp_path / "BSDS300" / "BSDS300.hdf5", "w") as f:
        for k, v in arrays.items():
            f.create_dataset(k, data=v)
    dm = registry.build("dataset", "bsds300", root=str(tmp_path), batch_size=4)
    dm.setup()
    _assert_splits((dm.train_set.data, dm.val_set.data, dm.test_set.data),
                   (arrays["train"], arrays["validation"], arrays["test"]))  # fmt: skip
    with h5py.File(tmp_path / "BSDS300" / "BSDS300.hdf5", "w") as f:
        f.create_dataset("train", data=arrays["train"])
    dm = registry.build("dataset", "bsds300", root=str(tmp_path), batch_size=4, cache=False)
    with pytest.raises(DatasetCorruptedError, match="validation"):
        dm.setup()


# --- caching, dimensions, download ---------------------------------------------------------
def test_cache_reused_invalidated_and_optional(tmp_path, monkeypatch):
    raw = np.random.default_rng(6).normal(size=(60, 43))
    (tmp_path / "miniboone").mkdir()
    np.save(tmp_path / "miniboone" / "data.npy", raw)
    dm = registry.build("dataset", "miniboone", root=str(tmp_path), batch_size=4)
    dm.prepare_data()
    cache = tmp_path / "miniboone" / "maf_splits.npz"
    assert cache.is_file()

    def fail(self):
        raise AssertionError("processed again instead of reading the cache")

    monkeypatch.setattr(uci.MiniBooNEDataModule, "_process", fail)
    dm2 = registry.build("dataset", "miniboone", root=str(tmp_path), batch_size=4)
    dm2.setup()
    assert torch.equal(
        dm2.test_set.data, torch.from_numpy(_maf_normalise(*_maf_split(raw))[2]).float()
    )
    monkeypatch.undo()
    np.save(tmp_path / "miniboone" / "data.npy", raw[:50])  # different size: rebuilt
    dm3 = registry.build("dataset", "miniboone", root=str(tmp_path), batch_size=4)
    dm3.setup()
    assert len(dm3.train_set) + len(dm3.val_set) + len(dm3.test_set) == 50
    os.remove(cache)
    registry.build("dataset", "miniboone", root=str(tmp_path), batch_size=4, cache=False).setup()
    assert not cache.exists()


def test_unexpected_dimension_warns_and_updates_shape(tmp_path):
    (tmp_path / "miniboone").mkdir()
    np.save(tmp_path / "miniboone" / "data.npy", np.random.default_rng(7).normal(size=(40, 5)))
    dm = registry.build("dataset", "miniboone", root=str(tmp_path), batch_size=4)
    assert dm.shape == (43,)
    with pytest.warns(UserWarning, match="5 dimensions"):
        dm.setup()
    assert dm.shape == (5,)


def test_download_unpacks_maf_archive(tmp_path, monkeypatch):
    from survae.data import fetch

    archive = tmp_path / "maf.tar.gz"
    payload = io.BytesIO()
    np.save(payload, np.random.default_rng(8).normal(size=(40, 43)))
    with tarfile.open(archive, "w:gz") as tar:
        for name, blob in (("data/miniboone/data.npy", payload.getvalue()),
                           ("data/mnist/mnist.pkl.gz", b"unrelated")):  # fmt: skip
            info = tarfile.TarInfo(name)
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    calls = []

    def fake_download(root, folders):
        calls.append(list(folders))
        return fetch.extract_maf_archive(str(archive), root, folders)

    monkeypatch.setattr(fetch, "download_maf_data", fake_download)
    root = tmp_path / "root"
    dm = registry.build("dataset", "miniboone", root=str(root), batch_size=4)
    dm.prepare_data()  # download=False: nothing fetched
    assert calls == [] and not (root / "miniboone").exists()
    dm = registry.build("dataset", "miniboone", root=str(root), batch_size=4, download=True)
    dm.prepare_data()
    dm.setup()
    assert calls == [["miniboone"]]
    assert (root / "miniboone" / "data.npy").is_file() and not (root / "mnist").exists()
    assert len(dm.test_set) == 4
