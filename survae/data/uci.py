"""The tabular density-estimation benchmarks of MAF (Papamakarios et al., 2017).

POWER, GAS, HEPMASS, MINIBOONE (UCI) and BSDS300 (8x8 natural-image patches, last pixel
dropped), with MAF's preprocessing reproduced step by step (the ``preprocess_*`` functions
below take and return numpy arrays and document each step). The files are those of MAF's
data archive (``data.tar.gz`` on Zenodo, record 1161203), unpacked under ``root``:

=============  =====================================================  ====
name           files under ``root``                                   dim
=============  =====================================================  ====
``power``      ``power/data.npy``                                     6
``gas``        ``gas/ethylene_CO.pickle`` (pandas; needs ``pandas``)  8
``hepmass``    ``hepmass/1000_train.csv``, ``hepmass/1000_test.csv``  21
``miniboone``  ``miniboone/data.npy``                                 43
``bsds300``    ``BSDS300/BSDS300.hdf5`` (needs ``h5py``)              63
=============  =====================================================  ====

``download=True`` fetches the archive (about 1 GB) into ``root`` and unpacks the needed
folder (:func:`survae.data.fetch.download_maf_data`). The processed splits are cached as
float32 in ``<folder>/maf_splits.npz``, keyed on the SHA-256 of every source file's bytes and
:data:`PREPROCESSING_VERSION` (rebuilt when either changes; pass ``cache=False`` to skip).
Batches are float32 ``[B, D]``.

Untrusted files: the GAS pickle is read with :func:`survae.data.io.restricted_load` (only the
pandas/numpy globals a DataFrame pickle holds; anything else is refused before it runs), ``.npy``
files never with pickles allowed, and a source file holding NaN or infinite cells is refused at
load with its name, the count and the first row (MAF's files have none).
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
import zipfile
from collections.abc import Sequence

import numpy as np
import torch

from survae.config_check import ConfigError
from survae.data.base import ArrayDataset, FlowDataModule
from survae.data.errors import DatasetCorruptedError, DatasetNotFoundError
from survae.data.io import PANDAS_FRAME_GLOBALS, restricted_load
from survae.errors import python_command
from survae.registry import register

Splits = tuple[np.ndarray, np.ndarray, np.ndarray]

#: Part of the cache key: bump it whenever a ``preprocess_*`` function changes its output.
PREPROCESSING_VERSION = 1


# --- reading and checking the source files -------------------------------------------------
def file_sha256(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file's bytes (read in 1 MiB chunks)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def check_finite_table(path: str, data: np.ndarray) -> np.ndarray:
    """Return ``data`` (2-D, numeric) or raise :class:`DatasetCorruptedError` naming ``path``,
    the number of NaN / infinite cells and the first one's row and column."""
    data = np.asarray(data)
    if data.ndim != 2 or not np.issubdtype(data.dtype, np.number):
        raise DatasetCorruptedError(
            f"{path}: expected a 2-D numeric table, got {data.dtype} of shape {data.shape}"
        )
    bad = ~np.isfinite(data)
    if bad.any():
        nan = int(np.isnan(data).sum())
        row, col = (int(i) for i in np.argwhere(bad)[0])
        raise DatasetCorruptedError(
            f"{path}: {nan} NaN and {int(bad.sum()) - nan} infinite cell(s), the first at row "
            f"{row}, column {col} (data rows and columns counted from 0); MAF's files have none: "
            "the file is damaged or not the right one (download it again)"
        )
    return data


def load_npy(path: str) -> np.ndarray:
    """A ``.npy`` array, never unpickling (object arrays are refused), as a damage-checked
    table."""
    try:
        data = np.load(path, allow_pickle=False)
    except (ValueError, EOFError, OSError) as err:
        detail = " ".join(str(err).split())[:200]
        raise DatasetCorruptedError(f"{path}: not a readable .npy array ({detail})") from err
    return check_finite_table(path, data)


# --- MAF's preprocessing -------------------------------------------------------------------
def split_tail(data: np.ndarray) -> Splits:
    """MAF's split: the last 10 % is the test set, then the last 10 % of the rest validation."""
    n_test = int(0.1 * data.shape[0])
    n_val = int(0.1 * (data.shape[0] - n_test))
    if n_val < 1:
        raise ValueError(f"need at least 11 examples to split off 10 % twice, got {len(data)}")
    rest, test = data[:-n_test], data[-n_test:]
    return rest[:-n_val], rest[-n_val:], test


def normalise(train: np.ndarray, val: np.ndarray, test: np.ndarray) -> Splits:
    """Standardise with the mean and (population) std of train and validation together."""
    both = np.vstack((train, val))
    mu, s = both.mean(axis=0), both.std(axis=0)
    return (train - mu) / s, (val - mu) / s, (test - mu) / s


def preprocess_power(data: np.ndarray) -> Splits:
    """POWER: household electric power consumption, raw ``(N, 8)`` -> 6 dimensions.

    With ``numpy.random.RandomState(42)``: shuffle the rows; drop columns 3 and 1 (global
    reactive power and global intensity); add uniform noise, drawn in this order: voltage
    ``0.01 U``, global active power ``0.001 U``, the three sub-meterings ``U`` (time of day
    gets none); split with :func:`split_tail`; :func:`normalise`.
    """
    if data.ndim != 2 or data.shape[1] != 8:
        raise DatasetCorruptedError(f"power: expected raw data of shape (N, 8), got {data.shape}")
    data = np.array(data, copy=True)
    rng = np.random.RandomState(42)
    rng.shuffle(data)
    n = data.shape[0]
    data = np.delete(data, 3, axis=1)
    data = np.delete(data, 1, axis=1)
    voltage_noise = 0.01 * rng.rand(n, 1)
    gap_noise = 0.001 * rng.rand(n, 1)
    sm_noise = rng.rand(n, 3)
    time_noise = np.zeros((n, 1))
    data += np.hstack((gap_noise, voltage_noise, sm_noise, time_noise))
    return normalise(*split_tail(data))


def preprocess_miniboone(data: np.ndarray) -> Splits:
    """MINIBOONE: the archive's ``(N, 43)`` array (outliers and discrete features already
    removed by MAF); :func:`split_tail`, then :func:`normalise`."""
    if data.ndim != 2:
        raise DatasetCorruptedError(f"miniboone: expected a 2-D array, got {data.shape}")
    return normalise(*split_tail(np.asarray(data, dtype=np.float64)))


def preprocess_gas(columns: list[str], data: np.ndarray, threshold: float = 0.98) -> Splits:
    """GAS: ethylene + CO sensor array; 16 sensors -> 8 dimensions.

    Drop the columns ``Meth``, ``Eth`` and ``Time``; then, while some column has a Pearson
    correlation above ``threshold`` with another column, drop the first such column (in
    column order); standardise with the mean and (sample, ddof=1) std of *all* rows (MAF
    does this before splitting); split with :func:`split_tail` (no shuffling).
    """
    columns = list(columns)
    keep = [i for i, c in enumerate(columns) if c not in ("Meth", "Eth", "Time")]
    if len(keep) != len(columns) - 3:
        raise DatasetCorruptedError(f"gas: expected columns Meth, Eth and Time, got {columns}")
    data = np.asarray(data, dtype=np.float64)[:, keep]
    # Pairwise correlations do not depend on the other columns, so compute them once and
    # drop rows/columns of the matrix (equivalent to MAF's recomputation after each drop).
    with np.errstate(divide="ignore", invalid="ignore"):
        corr = np.corrcoef(data, rowvar=False)
    alive = list(range(data.shape[1]))
    while True:
        sub = corr[np.ix_(alive, alive)] > threshold
        counts = sub.sum(axis=1)
        if not np.any(counts > 1):
            break
        alive.pop(int(np.flatnonzero(counts > 1)[0]))
    data = data[:, alive]
    data = (data - data.mean(axis=0)) / data.std(axis=0, ddof=1)
    return split_tail(data)


def preprocess_hepmass(train_raw: np.ndarray, test_raw: np.ndarray) -> Splits:
    """HEPMASS: particle-physics events; the ``1000`` (mass) files, 27 features -> 21.

    Keep the signal events (label column 0 equal to 1) and drop the label; MAF drops the
    test file's extra last column (a test row with as many columns as a training row is
    kept whole); standardise both with the training mean and (sample, ddof=1) std; drop every
    feature whose *smallest* training value occurs more than 5 times (MAF's criterion, which
    removes the discrete mass and the features with many repeated values); the last 10 % of
    the training rows become the validation set (no shuffling).
    """
    train = train_raw[train_raw[:, 0] == 1][:, 1:].astype(np.float64)
    test = test_raw[test_raw[:, 0] == 1][:, 1:].astype(np.float64)
    if test.shape[1] == train.shape[1] + 1:
        test = test[:, :-1]
    if test.shape[1] != train.shape[1]:
        raise DatasetCorruptedError(
            f"hepmass: test rows have {test.shape[1]} features, training rows {train.shape[1]}"
        )
    mu, s = train.mean(axis=0), train.std(axis=0, ddof=1)
    train, test = (train - mu) / s, (test - mu) / s
    keep = [j for j in range(train.shape[1]) if np.sum(train[:, j] == train[:, j].min()) <= 5]
    train, test = train[:, keep], test[:, keep]
    n_val = int(0.1 * train.shape[0])
    if n_val < 1:
        raise ValueError(f"hepmass: need at least 10 signal training events, got {len(train)}")
    return train[:-n_val], train[-n_val:], test


# --- data modules --------------------------------------------------------------------------
class UCIDataModule(FlowDataModule):
    """Base of the MAF tabular data modules (see :mod:`survae.data.uci`).

    Args:
        cache: cache the processed splits in ``<folder>/maf_splits.npz``.
        context_columns: indices of columns of the processed data (negative ones count from
            the end) to split off as the context: batches become ``(x, context)`` with ``x``
            the remaining columns in their order, for conditional density estimation
            ``p(x | context)`` (implies ``conditional=True``). ``None``: all columns are ``x``.
        **kwargs: see :class:`~survae.data.base.FlowDataModule`.
    """

    kind = "tabular"
    num_bins = None
    folder: str = ""
    files: tuple[str, ...] = ()

    def __init__(
        self,
        cache: bool = True,
        batch_size: int = 100,
        context_columns: Sequence[int] | None = None,
        **kwargs,
    ):
        self.context_columns = _check_context_columns(self.name, context_columns, self.shape[0])
        if self.context_columns is not None:
            self.context_features = len(self.context_columns)
            kwargs["conditional"] = True
        super().__init__(batch_size=batch_size, **kwargs)
        self.cache = bool(cache)
        if self.context_columns is not None:
            self.shape = (self.shape[0] - len(self.context_columns),)

    @property
    def raw_paths(self) -> list[str]:
        return [self.path(self.folder, f) for f in self.files]

    @property
    def cache_path(self) -> str:
        return self.path(self.folder, "maf_splits.npz")

    def how_to_get(self) -> str:
        return (
            f"`{python_command()} -m survae.data.fetch maf --root {self.root}` downloads MAF's "
            "data.tar.gz (about 1 GB, zenodo.org/record/1161203) and unpacks "
            f"data/{self.folder}/ into {self.path(self.folder)} (data.download=true does the "
            "same at the start of a run), or unpack that folder of the archive there yourself."
        )

    def _download(self) -> None:
        if not all(os.path.isfile(p) for p in self.raw_paths):
            from survae.data.fetch import download_maf_data

            download_maf_data(self.root, [self.folder])

    def _process(self) -> Splits:
        raise NotImplementedError

    def _sources(self) -> dict:
        """The cache key: preprocessing version and each source file's name and SHA-256."""
        return {
            "version": PREPROCESSING_VERSION,
            "files": [[os.path.basename(p), file_sha256(p)] for p in self.raw_paths],
        }

    def _read_cache(self) -> Splits | None:
        if not (self.cache and os.path.isfile(self.cache_path)):
            return None
        try:
            with np.load(self.cache_path, allow_pickle=False) as f:
                key = json.loads(str(f["sources"]))
                splits = tuple(f[k] for k in ("train", "validation", "test"))
        except (ValueError, KeyError, OSError, EOFError, zipfile.BadZipFile) as err:
            if all(os.path.isfile(p) for p in self.raw_paths):
                return None  # a damaged cache is rebuilt from the source files
            raise DatasetCorruptedError(
                f"{self.cache_path}: damaged cache and no source files to rebuild it from "
                f"({type(err).__name__}); delete it and provide {', '.join(self.files)}"
            ) from err
        try:
            if key != self._sources():
                return None
        except OSError:  # raw files gone: the cache is all there is
            pass
        return splits

    def _write_cache(self, splits: Splits) -> None:
        tmp = self.cache_path + ".tmp.npz"
        try:
            np.savez(
                tmp,
                train=splits[0],
                validation=splits[1],
                test=splits[2],
                sources=np.array(json.dumps(self._sources())),
            )
            os.replace(tmp, self.cache_path)
        except OSError as err:  # read-only data folder: work without the cache
            warnings.warn(f"{self.name}: could not write {self.cache_path}: {err}", stacklevel=2)

    def load_splits(self) -> Splits:
        """Train, validation and test arrays (float32), from the cache or the raw files."""
        splits = self._read_cache()
        if splits is None:
            missing = [p for p in self.raw_paths if not os.path.isfile(p)]
            if missing:
                raise DatasetNotFoundError(self.name, missing, self.how_to_get())
            splits = tuple(np.ascontiguousarray(s, dtype=np.float32) for s in self._process())
            if self.cache:
                self._write_cache(splits)
        return splits

    def _prepare(self) -> None:
        if self.cache and all(os.path.isfile(p) for p in self.raw_paths):
            self.load_splits()

    def _load(self):
        splits = self.load_splits()
        dim = splits[0].shape[1]
        published = type(self).shape[0]
        if dim != published:
            warnings.warn(
                f"{self.name}: the processed data has {dim} dimensions, not the published "
                f"{published}; using {dim}.",
                stacklevel=2,
            )
        if self.context_columns is None:
            self.shape = (dim,)
            return tuple(ArrayDataset(torch.from_numpy(np.asarray(s))) for s in splits)
        cols = _check_context_columns(self.name, self.context_columns, dim)
        ctx = [c % dim for c in cols]
        keep = [c for c in range(dim) if c not in ctx]
        self.shape = (len(keep),)
        return tuple(
            ArrayDataset(
                torch.from_numpy(np.ascontiguousarray(s[:, keep])),
                context=torch.from_numpy(np.ascontiguousarray(s[:, ctx])),
            )
            for s in splits
        )

    def sample_contexts(self) -> torch.Tensor | None:
        """None: tabular data has no sample figure."""
        return None


def _check_context_columns(name: str, columns: Sequence[int] | None, dim: int) -> list[int] | None:
    """``columns`` as a list of distinct integers in ``[-dim, dim)`` leaving at least one
    column for ``x``; raises a one-line :class:`ConfigError` naming ``data.context_columns``."""
    if columns is None:
        return None
    where = f"data.context_columns ({name}, {dim} columns)"
    if isinstance(columns, str | bytes) or not isinstance(columns, Sequence):
        raise ConfigError(f"{where}: expected a list of column indices, got {columns!r}")
    cols = list(columns)
    bad = [c for c in cols if isinstance(c, bool) or not isinstance(c, int | np.integer)]
    if bad:
        raise ConfigError(f"{where}: column indices must be integers, got {bad!r}")
    cols = [int(c) for c in cols]
    out = [c for c in cols if not -dim <= c < dim]
    if out:
        raise ConfigError(f"{where}: indices {out} out of range; valid: {-dim}..{dim - 1}")
    if len({c % dim for c in cols}) != len(cols):
        raise ConfigError(f"{where}: repeated columns in {cols}")
    if not cols or len(cols) >= dim:
        raise ConfigError(
            f"{where}: give 1..{dim - 1} columns (at least one column must remain as x), "
            f"got {len(cols)}"
        )
    return cols


@register("dataset", "power")
class PowerDataModule(UCIDataModule):
    """POWER (6-D, 1.6 M training rows); see :func:`preprocess_power`."""

    name = "power"
    shape = (6,)
    folder = "power"
    files = ("data.npy",)

    def _process(self) -> Splits:
        return preprocess_power(load_npy(self.raw_paths[0]))


@register("dataset", "gas")
class GasDataModule(UCIDataModule):
    """GAS (8-D, 0.85 M training rows); see :func:`preprocess_gas`. Needs ``pandas``."""

    name = "gas"
    shape = (8,)
    folder = "gas"
    files = ("ethylene_CO.pickle",)

    def _process(self) -> Splits:
        try:
            import pandas as pd
        except ImportError as err:
            raise ImportError(
                "gas: reading ethylene_CO.pickle (a pandas DataFrame) needs pandas: "
                "`pip install pandas`"
            ) from err
        path = self.raw_paths[0]
        frame = restricted_load(path, PANDAS_FRAME_GLOBALS, "GAS pandas DataFrame pickle")
        if not isinstance(frame, pd.DataFrame):
            raise DatasetCorruptedError(
                f"{path}: expected a pandas DataFrame, got {type(frame).__name__}"
            )
        try:
            table = frame.to_numpy(dtype=np.float64)
        except (TypeError, ValueError) as err:
            raise DatasetCorruptedError(f"{path}: non-numeric cells ({err})") from err
        return preprocess_gas([str(c) for c in frame.columns], check_finite_table(path, table))


@register("dataset", "hepmass")
class HepmassDataModule(UCIDataModule):
    """HEPMASS (21-D, 0.3 M training rows); see :func:`preprocess_hepmass`."""

    name = "hepmass"
    shape = (21,)
    folder = "hepmass"
    files = ("1000_train.csv", "1000_test.csv")

    def _process(self) -> Splits:
        # pandas.read_csv in MAF: the first line is a header; comma separated numbers follow.
        def read(path: str) -> np.ndarray:
            try:
                table = np.loadtxt(path, delimiter=",", skiprows=1, comments=None, ndmin=2)
            except ValueError as err:  # empty or non-numeric cells, ragged rows
                detail = " ".join(str(err).split())[:200]
                raise DatasetCorruptedError(f"{path}: not a numeric CSV table ({detail})") from err
            return check_finite_table(path, table)

        return preprocess_hepmass(read(self.raw_paths[0]), read(self.raw_paths[1]))


@register("dataset", "miniboone")
class MiniBooNEDataModule(UCIDataModule):
    """MINIBOONE (43-D, 30k training rows); see :func:`preprocess_miniboone`."""

    name = "miniboone"
    shape = (43,)
    folder = "miniboone"
    files = ("data.npy",)

    def _process(self) -> Splits:
        return preprocess_miniboone(load_npy(self.raw_paths[0]))


@register("dataset", "bsds300")
class BSDS300DataModule(UCIDataModule):
    """BSDS300 patches (63-D, 1 M training rows): the HDF5 file's ``train``, ``validation`` and
    ``test`` arrays as they are (MAF preprocessed them already). Needs ``h5py``."""

    name = "bsds300"
    shape = (63,)
    folder = "BSDS300"
    files = ("BSDS300.hdf5",)

    def _process(self) -> Splits:
        try:
            import h5py
        except ImportError as err:
            raise ImportError(
                "bsds300: reading BSDS300.hdf5 needs h5py: `pip install h5py`"
            ) from err
        with h5py.File(self.raw_paths[0], "r") as f:
            missing = [k for k in ("train", "validation", "test") if k not in f]
            if missing:
                raise DatasetCorruptedError(
                    f"{self.raw_paths[0]}: missing data sets {missing} (has {list(f.keys())})"
                )
            return tuple(
                check_finite_table(f"{self.raw_paths[0]}:{k}", np.asarray(f[k], dtype=np.float32))
                for k in ("train", "validation", "test")
            )
