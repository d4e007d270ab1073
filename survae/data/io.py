"""Readers and writers of the on-disk formats the data sets ship in.

* IDX (MNIST, Fashion-MNIST): 4-byte magic ``0 0 <type> <ndim>``, ``ndim`` big-endian int32
  sizes, then the array in C order (big-endian for multi-byte types). ``.gz`` files are
  decompressed on the fly.
* CIFAR-10 python pickles: dicts with ``data`` (N, 3072) ``uint8`` in channel-planar order
  (1024 red, 1024 green, 1024 blue values, each row-major) and ``labels``.

Pickles are never loaded with :func:`pickle.load`: a pickle can name any importable callable
and call it while loading, so a doctored data file could run code. :func:`restricted_load`
resolves only the globals on a per-format allow-list (:data:`CIFAR_GLOBALS`: numpy array
reconstruction; :data:`PANDAS_FRAME_GLOBALS`: additionally the pandas DataFrame, Index and
BlockManager internals a float DataFrame pickle holds, under the names pandas and numpy have
used since 2016) and refuses anything else with :class:`UnsafePickleError`, whether or not the
file's checksum was verified. Damaged pickles raise :class:`DatasetCorruptedError`.
"""

from __future__ import annotations

import gzip
import importlib
import os
import pickle
import struct
from collections.abc import Mapping
from typing import Any

import numpy as np

from survae.data.errors import DatasetCorruptedError, UnsafePickleError

# IDX type code -> big-endian numpy dtype
IDX_DTYPES: dict[int, str] = {
    0x08: ">u1",
    0x09: ">i1",
    0x0B: ">i2",
    0x0C: ">i4",
    0x0D: ">f4",
    0x0E: ">f8",
}


def _open(path: str | os.PathLike, mode: str = "rb"):
    return gzip.open(path, mode) if str(path).endswith(".gz") else open(path, mode)


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (optionally gzip-compressed) into a native-endian numpy array."""
    with _open(path) as f:
        raw = f.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in IDX_DTYPES:
        raise DatasetCorruptedError(f"{path}: not an IDX file (bad magic number {raw[:4]!r})")
    dtype = np.dtype(IDX_DTYPES[raw[2]])
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DatasetCorruptedError(f"{path}: truncated IDX header")
    dims = struct.unpack(f">{ndim}i", raw[4:header])
    count = int(np.prod(dims, dtype=np.int64))
    if len(raw) - header != count * dtype.itemsize:
        raise DatasetCorruptedError(
            f"{path}: IDX header announces shape {dims} ({count * dtype.itemsize} bytes) "
            f"but the file holds {len(raw) - header} bytes of data"
        )
    data = np.frombuffer(raw, dtype=dtype, count=count, offset=header).reshape(dims)
    return data.astype(dtype.newbyteorder("="), copy=True)


def write_idx(path: str | os.PathLike, array: np.ndarray) -> None:
    """Write ``array`` as an IDX file (gzip-compressed when the name ends in ``.gz``)."""
    array = np.asarray(array)
    codes = {np.dtype(v).newbyteorder("="): k for k, v in IDX_DTYPES.items()}
    native = array.dtype.newbyteorder("=")
    if native not in codes:
        raise TypeError(f"write_idx: unsupported dtype {array.dtype}")
    header = bytes([0, 0, codes[native], array.ndim]) + struct.pack(f">{array.ndim}i", *array.shape)
    with _open(path, "wb") as f:
        f.write(header + array.astype(IDX_DTYPES[codes[native]]).tobytes())


# --- restricted unpickling -----------------------------------------------------------------
def _numpy(name: str) -> tuple[str, ...]:
    # numpy 2 moved numpy.core to numpy._core (numpy.core remains as a deprecated alias)
    return (f"numpy._core.{name}", f"numpy.core.{name}")


#: Globals a pickled numpy array may name -> where the object lives (first that imports).
#: ``_codecs.encode`` turns the latin-1 text of protocol-2 pickles back into bytes.
NUMPY_ARRAY_GLOBALS: dict[str, tuple[str, ...]] = {
    "numpy.core.multiarray._reconstruct": _numpy("multiarray._reconstruct"),
    "numpy._core.multiarray._reconstruct": _numpy("multiarray._reconstruct"),
    "numpy.core.multiarray.scalar": _numpy("multiarray.scalar"),
    "numpy._core.multiarray.scalar": _numpy("multiarray.scalar"),
    "numpy.core.numeric._frombuffer": _numpy("numeric._frombuffer"),
    "numpy._core.numeric._frombuffer": _numpy("numeric._frombuffer"),
    "numpy.ndarray": ("numpy.ndarray",),
    "numpy.dtype": ("numpy.dtype",),
    "_codecs.encode": ("_codecs.encode",),
}

#: CIFAR-10 python batches: a dict of arrays, lists, ints and strings.
CIFAR_GLOBALS: dict[str, tuple[str, ...]] = dict(NUMPY_ARRAY_GLOBALS)

_INDEX = ("pandas.Index",)
_NEW_INDEX = ("pandas.core.indexes.base._new_Index",)
_BLOCK_MANAGER = (
    "pandas.core.internals.managers.BlockManager",
    "pandas.core.internals.BlockManager",
)

#: A pandas DataFrame of numbers with string (object or string dtype) column labels, as
#: written by pandas 0.18 (Python 2) to 3.x: the DataFrame, its BlockManager (old pickles
#: hold its state, new ones its blocks), Index/RangeIndex (Int64Index folds into Index, as in
#: pandas' own compatibility map), pandas' string array, slices and copyreg's object rebuild.
PANDAS_FRAME_GLOBALS: dict[str, tuple[str, ...]] = {
    **NUMPY_ARRAY_GLOBALS,
    "pandas.DataFrame": ("pandas.DataFrame",),
    "pandas.core.frame.DataFrame": ("pandas.DataFrame",),
    "pandas.core.internals.managers.BlockManager": _BLOCK_MANAGER,
    "pandas.core.internals.BlockManager": _BLOCK_MANAGER,
    "pandas._libs.internals._unpickle_block": ("pandas._libs.internals._unpickle_block",),
    "pandas.core.internals.blocks.new_block": ("pandas._libs.internals._unpickle_block",),
    "pandas.core.indexes.base._new_Index": _NEW_INDEX,
    "pandas.indexes.base._new_Index": _NEW_INDEX,
    "pandas.core.index._new_Index": _NEW_INDEX,
    "pandas.Index": _INDEX,
    "pandas.core.indexes.base.Index": _INDEX,
    "pandas.indexes.base.Index": _INDEX,
    "pandas.core.index.Index": _INDEX,
    "pandas.core.indexes.numeric.Int64Index": _INDEX,
    "pandas.indexes.numeric.Int64Index": _INDEX,
    "pandas.core.index.Int64Index": _INDEX,
    "pandas.RangeIndex": ("pandas.RangeIndex",),
    "pandas.core.indexes.range.RangeIndex": ("pandas.RangeIndex",),
    "pandas.indexes.range.RangeIndex": ("pandas.RangeIndex",),
    "pandas.StringDtype": ("pandas.StringDtype",),
    "pandas.core.arrays.string_.StringDtype": ("pandas.StringDtype",),
    "pandas.arrays.StringArray": ("pandas.arrays.StringArray",),
    "pandas.core.arrays.string_.StringArray": ("pandas.arrays.StringArray",),
    "pandas._libs.arrays.__pyx_unpickle_NDArrayBacked": (
        "pandas._libs.arrays.__pyx_unpickle_NDArrayBacked",
    ),
    "builtins.slice": ("builtins.slice",),
    "__builtin__.slice": ("builtins.slice",),
    "builtins.object": ("builtins.object",),
    "__builtin__.object": ("builtins.object",),
    "copyreg._reconstructor": ("copyreg._reconstructor",),
    "copy_reg._reconstructor": ("copyreg._reconstructor",),
}


def _import_attr(dotted: str) -> Any:
    """``module.attr`` for the longest importable module prefix of ``dotted``."""
    parts = dotted.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for attr in parts[cut:]:
            obj = getattr(obj, attr)
        return obj
    raise ImportError(dotted)


def _pandas_block_manager(cls: type) -> type:
    """A stand-in for ``cls`` (BlockManager) in NEWOBJ: pandas before 1.0 pickled it with no
    constructor arguments and its state separately, which some pandas 2 versions only accept
    through ``cls.__new__(cls, (), [], False)`` (what pandas' own compatibility loader does)."""

    class _Factory:
        def __new__(factory, *args: Any) -> Any:
            if args:
                return cls.__new__(cls, *args)
            try:
                return cls.__new__(cls)
            except TypeError:
                return cls.__new__(cls, (), [], False)

    return _Factory


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file: Any, path: str, what: str, allowed: Mapping[str, tuple[str, ...]]):
        super().__init__(file, encoding="latin1")
        self.path, self.what, self.allowed = path, what, allowed

    def find_class(self, module: str, name: str) -> Any:
        key = f"{module}.{name}"
        if key not in self.allowed:
            raise UnsafePickleError(
                f"{self.path}: refused to unpickle global {key!r}: a {self.what} holds only "
                f"{_allowed_summary(self.allowed)}; the file may be hostile, do not use it"
            )
        for location in self.allowed[key]:
            try:
                obj = _import_attr(location)
            except (ImportError, AttributeError):
                continue
            if location in _BLOCK_MANAGER:
                return _pandas_block_manager(obj)
            return obj
        raise DatasetCorruptedError(
            f"{self.path}: {key!r} is allowed in a {self.what} but not importable here "
            f"(tried {', '.join(self.allowed[key])}); is numpy/pandas installed?"
        )

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePickleError(
            f"{self.path}: refused a persistent id in a {self.what} (data files have none)"
        )


def _allowed_summary(allowed: Mapping[str, tuple[str, ...]]) -> str:
    if any(k.startswith("pandas.") for k in allowed):
        return "numpy arrays and pandas DataFrame/Index internals"
    return "numpy arrays, lists, numbers and strings"


#: exceptions a damaged (truncated, overwritten, wrong-format) pickle raises while loading
_DAMAGED = (
    pickle.UnpicklingError,
    EOFError,
    ValueError,
    TypeError,
    AttributeError,
    IndexError,
    KeyError,
    ImportError,
    MemoryError,
    OverflowError,
    struct.error,
    RecursionError,
)


def restricted_load(
    path: str | os.PathLike, allowed: Mapping[str, tuple[str, ...]], what: str
) -> Any:
    """Unpickle ``path`` resolving only the globals in ``allowed`` (see the module docstring).

    ``what`` names the format in messages. Raises :class:`UnsafePickleError` naming the file
    and the refused ``module.name`` for any other global (nothing it names is imported or
    called), and :class:`DatasetCorruptedError` naming the file for a damaged pickle.
    """
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            return _RestrictedUnpickler(f, path, what, allowed).load()
    except (UnsafePickleError, DatasetCorruptedError):
        raise
    except _DAMAGED as err:
        detail = " ".join(f"{type(err).__name__}: {err}".split())[:200]
        raise DatasetCorruptedError(
            f"{path}: not a readable {what} (damaged or truncated pickle; {detail})"
        ) from err


def read_cifar_batch(path: str | os.PathLike) -> np.ndarray:
    """Images of one CIFAR python batch as ``uint8`` ``(N, 3, 32, 32)``."""
    batch = restricted_load(path, CIFAR_GLOBALS, "CIFAR-10 python batch")
    data = batch.get("data") if isinstance(batch, dict) else None
    if data is None:
        raise DatasetCorruptedError(f"{path}: not a CIFAR batch (no 'data' entry)")
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8:
        raise DatasetCorruptedError(
            f"{path}: CIFAR 'data' must be a uint8 array, got {type(data).__name__} "
            f"{getattr(data, 'dtype', '')}".rstrip()
        )
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise DatasetCorruptedError(
            f"{path}: CIFAR 'data' must have shape (N, 3072), got {data.shape}"
        )
    return data.reshape(-1, 3, 32, 32)
