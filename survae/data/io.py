"""Readers and writers of the on-disk formats the data sets ship in.

* IDX (MNIST, Fashion-MNIST): 4-byte magic ``0 0 <type> <ndim>``, ``ndim`` big-endian int32
  sizes, then the array in C order (big-endian for multi-byte types). ``.gz`` files are
  decompressed on the fly.
* CIFAR-10 python pickles: dicts with ``data`` (N, 3072) ``uint8`` in channel-planar order
  (1024 red, 1024 green, 1024 blue values, each row-major) and ``labels``.
"""

from __future__ import annotations

import gzip
import os
import pickle
import struct

import numpy as np

from survae.data.errors import DatasetCorruptedError

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


def read_cifar_batch(path: str | os.PathLike) -> np.ndarray:
    """Images of one CIFAR python batch as ``uint8`` ``(N, 3, 32, 32)``."""
    with open(path, "rb") as f:
        batch = pickle.load(f, encoding="latin1")
    data = batch.get("data") if isinstance(batch, dict) else None
    if data is None:
        raise DatasetCorruptedError(f"{path}: not a CIFAR batch (no 'data' entry)")
    data = np.asarray(data, dtype=np.uint8)
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise DatasetCorruptedError(
            f"{path}: CIFAR 'data' must have shape (N, 3072), got {data.shape}"
        )
    return data.reshape(-1, 3, 32, 32)
