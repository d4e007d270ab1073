"""The restricted unpickler reads every real form of the CIFAR-10 and GAS pickles.

The real files were written on Python 2 (CIFAR-10 by cPickle, GAS by pandas about 0.19), so
besides pickles written here by numpy/pandas at every protocol, pickles are emitted opcode by
opcode exactly as Python 2 wrote them: ``str`` as byte strings, ``__builtin__`` and
``numpy.core`` names, and (GAS) the pre-1.0 pandas layout -- ``pandas.indexes.base`` index
classes and the BlockManager's ``'0.14.1'`` state tuple. That needs no old pandas installed.
"""

from __future__ import annotations

import pickle
import struct

import numpy as np
import pytest

from survae import registry
from survae.data import uci
from survae.data.io import CIFAR_GLOBALS, PANDAS_FRAME_GLOBALS, read_cifar_batch, restricted_load

pd = pytest.importorskip("pandas")

GAS_COLUMNS = ["Time", "Meth", "Eth"] + [f"S{i}" for i in range(16)]


# --- a tiny protocol-2 emitter in Python 2's dialect ----------------------------------------
def _str(text: str) -> bytes:  # a Python 2 ``str``: SHORT_BINSTRING / BINSTRING
    raw = text.encode("latin1")
    if len(raw) < 256:
        return b"U" + bytes([len(raw)]) + raw
    return b"T" + struct.pack("<i", len(raw)) + raw


def _global(module: str, name: str) -> bytes:
    return b"c" + f"{module}\n{name}\n".encode()


def _int(value: int) -> bytes:
    return b"J" + struct.pack("<i", value)


def _tuple(*items: bytes) -> bytes:
    return b"(" + b"".join(items) + b"t"


def _list(*items: bytes) -> bytes:
    return b"](" + b"".join(items) + b"e"


def _dict(*pairs: tuple[bytes, bytes]) -> bytes:
    return b"}(" + b"".join(k + v for k, v in pairs) + b"u"


def _dtype(code: str, order: str, flags: int) -> bytes:
    state = _tuple(_int(3), _str(order), b"N", b"N", b"N", _int(-1), _int(-1), _int(flags))
    return _global("numpy", "dtype") + _tuple(_str(code), b"K\x00", b"K\x01") + b"R" + state + b"b"


def _array(arr: np.ndarray) -> bytes:
    """``numpy.core.multiarray._reconstruct`` + BUILD, as numpy 1.x on Python 2 pickled it."""
    head = _global("numpy.core.multiarray", "_reconstruct")
    head += _tuple(_global("numpy", "ndarray"), _tuple(_int(0)), _str("b")) + b"R"
    shape = _tuple(*[_int(n) for n in arr.shape])
    if arr.dtype == object:
        dtype, payload = _dtype("O8", "|", 63), _list(*[_str(x) for x in arr.ravel()])
    else:
        code = {np.dtype(np.uint8): ("u1", "|"), np.dtype(np.float64): ("f8", "<")}[arr.dtype]
        dtype, payload = _dtype(*code, 0), _str(arr.tobytes().decode("latin1"))
    return head + _tuple(_int(1), shape, dtype, b"\x89", payload) + b"b"


def _index(columns: list[str]) -> bytes:
    data = _array(np.array(columns, dtype=object))
    args = _tuple(
        _global("pandas.indexes.base", "Index"), _dict((_str("data"), data), (_str("name"), b"N"))
    )
    return _global("pandas.indexes.base", "_new_Index") + args + b"R"  # fmt: skip


def _row_index(n: int, kind: str) -> bytes:
    if kind == "range":
        cls = _global("pandas.indexes.range", "RangeIndex")
        d = _dict((_str("start"), _int(0)), (_str("stop"), _int(n)), (_str("step"), _int(1)),
                  (_str("name"), b"N"))  # fmt: skip
    else:  # Int64Index of 0..n-1
        cls = _global("pandas.indexes.numeric", "Int64Index")
        arr = _global("numpy.core.multiarray", "_reconstruct")
        arr += _tuple(_global("numpy", "ndarray"), _tuple(_int(0)), _str("b")) + b"R"
        raw = np.arange(n, dtype="<i8").tobytes().decode("latin1")
        arr += _tuple(_int(1), _tuple(_int(n)), _dtype("i8", "<", 0), b"\x89", _str(raw)) + b"b"
        d = _dict((_str("data"), arr), (_str("name"), b"N"))
    return _global("pandas.indexes.base", "_new_Index") + _tuple(cls, d) + b"R"


def legacy_frame_pickle(columns: list[str], table: np.ndarray, row_index: str = "range") -> bytes:
    """A float DataFrame as pandas 0.19 on Python 2 pickled it (``to_pickle``, protocol 2)."""
    n, k = table.shape
    axes = _list(_index(columns), _row_index(n, row_index))
    values = _array(np.ascontiguousarray(table.T))  # blocks hold (columns, rows)
    mgr_locs = _global("__builtin__", "slice") + _tuple(_int(0), _int(k), _int(1)) + b"R"
    block = _dict((_str("values"), values), (_str("mgr_locs"), mgr_locs))
    extra = _dict((_str("0.14.1"), _dict((_str("axes"), axes), (_str("blocks"), _list(block)))))
    state = _tuple(axes, _list(values), _list(_index(columns)), extra)
    manager = _global("pandas.core.internals", "BlockManager") + b")\x81" + state + b"b"
    frame_state = _dict(
        (_str("_data"), manager), (_str("_typ"), _str("dataframe")), (_str("_metadata"), b"]")
    )
    return b"\x80\x02" + _global("pandas.core.frame", "DataFrame") + b")\x81" + frame_state + b"b."


def _gas_table(n: int = 80, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = rng.normal(size=(n, 8)).cumsum(0)
    meta = np.stack([np.arange(n), rng.normal(size=n), rng.normal(size=n)], 1)
    return np.hstack([meta, base + 0.01 * rng.normal(size=(n, 8)), base])


# --- GAS ------------------------------------------------------------------------------------
@pytest.mark.parametrize("row_index", ["range", "int64"])
def test_pandas_0_19_python2_frame_pickle_loads(tmp_path, row_index):
    table = _gas_table()
    path = tmp_path / "ethylene_CO.pickle"
    path.write_bytes(legacy_frame_pickle(GAS_COLUMNS, table, row_index))
    frame = restricted_load(path, PANDAS_FRAME_GLOBALS, "GAS pandas DataFrame pickle")
    assert isinstance(frame, pd.DataFrame)
    assert [str(c) for c in frame.columns] == GAS_COLUMNS
    assert np.array_equal(frame.to_numpy(), table)
    assert list(frame.index) == list(range(len(table)))


def test_gas_module_reads_the_legacy_file_like_the_modern_one(tmp_path):
    table = _gas_table(n=120, seed=4)
    (tmp_path / "old" / "gas").mkdir(parents=True)
    (tmp_path / "old" / "gas" / "ethylene_CO.pickle").write_bytes(
        legacy_frame_pickle(GAS_COLUMNS, table)
    )
    (tmp_path / "new" / "gas").mkdir(parents=True)
    pd.DataFrame(table, columns=GAS_COLUMNS).to_pickle(
        tmp_path / "new" / "gas" / "ethylene_CO.pickle"
    )
    splits = []
    for root in ("old", "new"):
        dm = registry.build("dataset", "gas", root=str(tmp_path / root), batch_size=4, cache=False)
        dm.setup()
        splits.append(np.asarray(dm.train_set.data))
    expected = uci.preprocess_gas(GAS_COLUMNS, table)[0].astype(np.float32)
    assert np.array_equal(splits[0], expected) and np.array_equal(splits[1], expected)


@pytest.mark.parametrize("protocol", range(2, pickle.HIGHEST_PROTOCOL + 1))
@pytest.mark.parametrize("labels", ["object", "default", "int_index", "two_blocks"])
def test_modern_pandas_frame_pickles_load(tmp_path, protocol, labels):
    table = _gas_table(n=20)
    if labels == "object":
        frame = pd.DataFrame(table, columns=pd.Index(GAS_COLUMNS, dtype=object))
    elif labels == "default":  # pandas' default string dtype for labels (version dependent)
        frame = pd.DataFrame(table, columns=GAS_COLUMNS)
    elif labels == "int_index":
        frame = pd.DataFrame(table, columns=GAS_COLUMNS, index=np.arange(20) * 3)
    else:  # an int64 and a float64 block
        frame = pd.DataFrame(table, columns=GAS_COLUMNS).astype({"Time": np.int64})
    path = tmp_path / "frame.pickle"
    path.write_bytes(pickle.dumps(frame, protocol=protocol))
    if labels == "default" and any(
        "arrow" in g.lower() for g in _globals(path.read_bytes())
    ):  # pragma: no cover - only with pyarrow-backed strings
        pytest.skip("pyarrow-backed labels are outside the GAS format")
    loaded = restricted_load(path, PANDAS_FRAME_GLOBALS, "GAS pandas DataFrame pickle")
    assert loaded.equals(frame)


def _globals(data: bytes) -> list[str]:
    import pickletools

    found, strings = [], []
    for op, arg, _ in pickletools.genops(data):
        if op.name in ("SHORT_BINUNICODE", "BINUNICODE", "UNICODE"):
            strings.append(arg)
        elif op.name == "GLOBAL":
            found.append(arg.replace(" ", "."))
        elif op.name == "STACK_GLOBAL":
            found.append(".".join(strings[-2:]))
    return found


# --- CIFAR-10 -------------------------------------------------------------------------------
def test_python2_cifar_batch_loads(tmp_path):
    """A batch as the official files hold it: a dict with Python 2 ``str`` keys."""
    rng = np.random.default_rng(3)
    data = rng.integers(0, 256, (6, 3072), dtype=np.uint8)
    batch = _dict(
        (_str("batch_label"), _str("training batch 1 of 5")),
        (_str("labels"), _list(*[_int(int(v)) for v in rng.integers(0, 10, 6)])),
        (_str("data"), _array(data)),
        (_str("filenames"), _list(*[_str(f"img_{i}.png") for i in range(6)])),
    )
    path = tmp_path / "data_batch_1"
    path.write_bytes(b"\x80\x02" + batch + b".")
    images = read_cifar_batch(path)
    assert images.dtype == np.uint8 and np.array_equal(images.reshape(6, -1), data)


@pytest.mark.parametrize("protocol", range(0, pickle.HIGHEST_PROTOCOL + 1))
def test_python3_cifar_batches_load(tmp_path, protocol):
    data = np.random.default_rng(protocol).integers(0, 256, (5, 3072), dtype=np.uint8)
    labels = list(np.arange(5))  # numpy integers, as torchvision-written batches may hold
    path = tmp_path / "batch"
    path.write_bytes(pickle.dumps({"data": data, "labels": labels}, protocol=protocol))
    assert np.array_equal(read_cifar_batch(path).reshape(5, -1), data)
    assert restricted_load(path, CIFAR_GLOBALS, "CIFAR-10 python batch")["labels"] == labels
