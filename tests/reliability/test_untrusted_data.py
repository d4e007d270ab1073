"""Hostile and damaged data files: nothing in them runs, and each gets a one-line error naming
the file. Every payload used here is first shown to run under plain ``pickle`` (so the tests can
fail), then shown to be refused by survae's readers with its marker file never created."""

from __future__ import annotations

import ast
import pickle
import sys
from pathlib import Path

import numpy as np
import pytest

from survae import registry
from survae.data import uci
from survae.data.errors import DatasetCorruptedError, UnsafePickleError
from survae.data.fake import write_fake_dataset
from survae.data.io import CIFAR_GLOBALS, PANDAS_FRAME_GLOBALS, restricted_load

SURVAE = Path(__file__).resolve().parents[2] / "survae"


class Payload:
    """Unpickling this creates ``marker`` (through ``builtins.exec``)."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return exec, (f"open({self.marker!r}, 'w').close()",)


def _one_line(err: pytest.ExceptionInfo) -> str:
    message = str(err.value)
    assert "\n" not in message
    return message


@pytest.fixture
def marker(tmp_path) -> Path:
    """A marker path, after checking that the payload really creates it under plain pickle."""
    path = tmp_path / "PAYLOAD_RAN"
    pickle.loads(pickle.dumps(Payload(path)))
    assert path.exists(), "the payload must be live for these tests to mean anything"
    path.unlink()
    return path


def _cifar_module(root: Path):
    return registry.build(
        "dataset", "cifar10", root=str(root), batch_size=4, val_size=4, check_integrity=False
    )


# --- hostile pickles ------------------------------------------------------------------------
@pytest.mark.parametrize("protocol", [2, pickle.HIGHEST_PROTOCOL])
def test_cifar_payload_refused_without_integrity_check(tmp_path, marker, protocol):
    write_fake_dataset("cifar10", tmp_path, num=20)
    batch = tmp_path / "cifar-10-batches-py" / "data_batch_3"
    hostile = {"data": np.zeros((4, 3072), np.uint8), "labels": [0, 1, 2, Payload(marker)]}
    batch.write_bytes(pickle.dumps(hostile, protocol=protocol))
    with pytest.raises(UnsafePickleError) as err:
        _cifar_module(tmp_path).setup()
    message = _one_line(err)
    # protocol 2 spells it as Python 2 did ('__builtin__.exec'); the message quotes the file
    assert str(batch) in message and (
        "'builtins.exec'" in message or "'__builtin__.exec'" in message
    )
    assert not marker.exists()


def test_gas_payload_refused(tmp_path, marker):
    write_fake_dataset("gas", tmp_path)
    path = tmp_path / "gas" / "ethylene_CO.pickle"
    path.write_bytes(pickle.dumps(Payload(marker)))
    dm = registry.build("dataset", "gas", root=str(tmp_path), batch_size=4, cache=False)
    with pytest.raises(UnsafePickleError) as err:
        dm.setup()
    message = _one_line(err)
    assert str(path) in message and "'builtins.exec'" in message
    assert not marker.exists()


def test_gas_payload_inside_a_real_dataframe_refused(tmp_path, marker):
    pd = pytest.importorskip("pandas")
    write_fake_dataset("gas", tmp_path)
    path = tmp_path / "gas" / "ethylene_CO.pickle"
    frame = pd.read_pickle(path)  # our own fake file: trusted
    frame.attrs["note"] = Payload(marker)  # pickled along with the frame
    frame.to_pickle(path)
    with pytest.raises(UnsafePickleError, match="builtins.exec"):
        restricted_load(path, PANDAS_FRAME_GLOBALS, "GAS pandas DataFrame pickle")
    assert not marker.exists()


@pytest.mark.parametrize(
    "target",
    ["os.system", "posix.system", "subprocess.Popen", "builtins.eval", "builtins.getattr",
     "numpy.load", "pandas.read_pickle", "torch.load", "copyreg.__newobj__"],
)  # fmt: skip
def test_any_other_global_refused(tmp_path, target):
    module, name = target.rsplit(".", 1)
    path = tmp_path / "batch"
    path.write_bytes(b"\x80\x02c" + f"{module}\n{name}\n".encode() + b".")
    for allowed in (CIFAR_GLOBALS, PANDAS_FRAME_GLOBALS):
        with pytest.raises(UnsafePickleError) as err:
            restricted_load(path, allowed, "test file")
        assert f"'{target}'" in _one_line(err) and str(path) in str(err.value)


def test_refused_before_the_module_is_imported(tmp_path, monkeypatch):
    """A refused global's module is never imported (importing alone can run code)."""
    pkg = tmp_path / "pkgs"
    pkg.mkdir()
    marker = tmp_path / "IMPORTED"
    (pkg / "survae_test_boom.py").write_text(f"open({str(marker)!r}, 'w').close()\nx = 1\n")
    monkeypatch.syspath_prepend(str(pkg))
    monkeypatch.delitem(sys.modules, "survae_test_boom", raising=False)
    path = tmp_path / "batch"
    path.write_bytes(b"\x80\x02csurvae_test_boom\nx\n.")
    assert pickle.loads(path.read_bytes()) == 1 and marker.exists()  # live under plain pickle
    marker.unlink()
    del sys.modules["survae_test_boom"]
    with pytest.raises(UnsafePickleError, match="survae_test_boom.x"):
        restricted_load(path, CIFAR_GLOBALS, "CIFAR-10 python batch")
    assert not marker.exists() and "survae_test_boom" not in sys.modules


def test_object_array_in_npy_refused(tmp_path, marker):
    (tmp_path / "power").mkdir()
    path = tmp_path / "power" / "data.npy"
    np.save(path, np.array([Payload(marker)] * 8, dtype=object).reshape(1, 8), allow_pickle=True)
    marker.unlink(missing_ok=True)  # np.save does not run it; be sure nothing is left anyway
    dm = registry.build("dataset", "power", root=str(tmp_path), batch_size=4, cache=False)
    with pytest.raises(DatasetCorruptedError) as err:
        dm.setup()
    assert str(path) in _one_line(err)
    assert not marker.exists()


def test_no_unrestricted_loading_in_the_library():
    """Every ``np.load`` passes ``allow_pickle=False``; nothing calls ``pickle.load(s)``."""
    offenders = []
    for file in SURVAE.rglob("*.py"):
        for node in ast.walk(ast.parse(file.read_text())):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
                continue
            owner = getattr(node.func.value, "id", None)
            call = f"{owner}.{node.func.attr}"
            safe = {k.arg: getattr(k.value, "value", None) for k in node.keywords}
            if call == "np.load" and safe.get("allow_pickle") is not False:
                offenders.append(f"{file.name}:{node.lineno} {call}")
            if call in ("pickle.load", "pickle.loads", "pd.read_pickle"):
                offenders.append(f"{file.name}:{node.lineno} {call}")
    assert not offenders


# --- damaged files --------------------------------------------------------------------------
@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty", "not_a_dict"])
def test_damaged_cifar_batch(tmp_path, damage):
    write_fake_dataset("cifar10", tmp_path, num=20)
    batch = tmp_path / "cifar-10-batches-py" / "test_batch"
    raw = batch.read_bytes()
    batch.write_bytes(
        {
            "truncated": raw[: len(raw) // 2],
            "garbage": b"\x80\x02" + bytes(range(7, 200)),
            "empty": b"",
            "not_a_dict": pickle.dumps([1, 2, 3]),
        }[damage]
    )
    with pytest.raises(DatasetCorruptedError) as err:
        _cifar_module(tmp_path).setup()
    assert str(batch) in _one_line(err)


@pytest.mark.filterwarnings("ignore:imagenet")
@pytest.mark.parametrize("memory_map", [True, False])
@pytest.mark.parametrize("damage", ["no_data_array", "not_a_zip"])
def test_damaged_imagenet_npz(tmp_path, memory_map, damage):
    write_fake_dataset("imagenet32", tmp_path, num=16)
    path = tmp_path / "imagenet32" / "train_data_batch_2.npz"
    if damage == "no_data_array":
        np.savez(path, images=np.zeros((4, 3072), np.uint8), labels=np.ones(4))
    else:
        path.write_bytes(b"PK\x03\x04 this is not a zip archive")
    dm = registry.build(
        "dataset", "imagenet32", root=str(tmp_path), batch_size=4, val_size=2,
        memory_map=memory_map,
    )  # fmt: skip
    with pytest.raises(DatasetCorruptedError) as err:
        dm.prepare_data()
        dm.setup()
    message = _one_line(err)
    assert str(path) in message
    if damage == "no_data_array":
        assert "'data'" in message and "images" in message


def _power_with_nan(tmp_path: Path) -> Path:
    write_fake_dataset("power", tmp_path, num=40)
    path = tmp_path / "power" / "data.npy"
    data = np.load(path)
    data[7, 2] = np.nan
    data[9, 0] = np.nan
    np.save(path, data)
    return path


def test_nan_cells_in_power_refused_at_load(tmp_path):
    path = _power_with_nan(tmp_path)
    dm = registry.build("dataset", "power", root=str(tmp_path), batch_size=4)
    with pytest.raises(DatasetCorruptedError) as err:
        dm.prepare_data()
    message = _one_line(err)
    assert str(path) in message and "2 NaN" in message and "row 7" in message
    assert "column 2" in message


@pytest.mark.parametrize("cell", ["nan", ""])
def test_nan_or_empty_cells_in_hepmass_refused(tmp_path, cell):
    write_fake_dataset("hepmass", tmp_path, num=60)
    path = tmp_path / "hepmass" / "1000_train.csv"
    lines = path.read_text().splitlines()
    fields = lines[4].split(",")
    fields[5] = cell
    lines[4] = ",".join(fields)
    path.write_text("\n".join(lines) + "\n")
    dm = registry.build("dataset", "hepmass", root=str(tmp_path), batch_size=4, cache=False)
    with pytest.raises(DatasetCorruptedError) as err:
        dm.setup()
    message = _one_line(err)
    assert str(path) in message
    if cell == "nan":
        assert "1 NaN" in message and "row 3" in message  # line 5 = data row 3 after the header


def test_nan_cells_in_gas_refused(tmp_path):
    pd = pytest.importorskip("pandas")
    write_fake_dataset("gas", tmp_path)
    path = tmp_path / "gas" / "ethylene_CO.pickle"
    frame = pd.read_pickle(path)
    frame.iloc[11, 4] = np.nan
    frame.to_pickle(path)
    dm = registry.build("dataset", "gas", root=str(tmp_path), batch_size=4, cache=False)
    with pytest.raises(DatasetCorruptedError, match=r"1 NaN .*row 11, column 4") as err:
        dm.setup()
    assert str(path) in _one_line(err)


# --- the UCI cache is keyed on content ------------------------------------------------------
def test_uci_cache_keyed_on_content_and_preprocessing_version(tmp_path, monkeypatch):
    (tmp_path / "miniboone").mkdir()
    path = tmp_path / "miniboone" / "data.npy"
    rng = np.random.default_rng(0)
    first = rng.normal(size=(60, 43))
    np.save(path, first)

    def test_split():
        dm = registry.build("dataset", "miniboone", root=str(tmp_path), batch_size=4)
        dm.setup()
        return np.asarray(dm.test_set.data)

    expected_first = uci.preprocess_miniboone(first)[2].astype(np.float32)
    assert np.array_equal(test_split(), expected_first)
    size = path.stat().st_size
    second = first + 1.0  # same shape, dtype and file size, different bytes
    np.save(path, second)
    assert path.stat().st_size == size
    assert np.array_equal(test_split(), uci.preprocess_miniboone(second)[2].astype(np.float32))

    calls = []
    real = uci.preprocess_miniboone
    monkeypatch.setattr(uci, "preprocess_miniboone", lambda d: calls.append(1) or real(d))
    test_split()
    assert calls == []  # unchanged file and version: read from the cache
    monkeypatch.setattr(uci, "PREPROCESSING_VERSION", uci.PREPROCESSING_VERSION + 1)
    test_split()
    assert calls == [1]  # new preprocessing version: rebuilt


def test_damaged_uci_cache_is_rebuilt(tmp_path):
    write_fake_dataset("miniboone", tmp_path, num=60)
    dm = registry.build("dataset", "miniboone", root=str(tmp_path), batch_size=4)
    dm.prepare_data()
    cache = tmp_path / "miniboone" / "maf_splits.npz"
    cache.write_bytes(cache.read_bytes()[:100])
    dm2 = registry.build("dataset", "miniboone", root=str(tmp_path), batch_size=4)
    dm2.setup()
    assert len(dm2.train_set) > 0
