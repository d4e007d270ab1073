"""Tiny stand-ins for the file-based data sets, written in their real on-disk formats.

Random values in the right files, shapes and dtypes: enough to check that a config, a data
module and a model fit together (tests, or a smoke run on a new cluster before the real data is
copied there) without any download. Nothing written here is real data.

    python -m survae.data.fake cifar10 --root /tmp/fake-data [--num 64]

Every data set folder written here gets a marker file, :data:`MARKER`, naming what wrote it
and the size and SHA-256 of each file it wrote. :func:`fake_data_marker` finds it for a data
set and root, and checks that the files are still the ones written (real files copied over
the stand-ins are real again); the training pipeline records ``"fake_data": true`` in
``results.json`` from it, whatever the data set is called, and the report never compares such
runs with published numbers.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import pickle
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from survae.data.io import write_idx


def _mnist(root: Path, num: int, rng: np.random.Generator, folder: str = "MNIST") -> None:
    raw = root / folder / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", num), ("t10k", max(8, num // 4))):
        images = np.zeros((n, 28, 28), np.uint8)
        images[:, 6:22, 6:22] = rng.integers(0, 256, (n, 16, 16), dtype=np.uint8)
        write_idx(raw / f"{split}-images-idx3-ubyte", images)
        write_idx(raw / f"{split}-labels-idx1-ubyte", rng.integers(0, 10, n, dtype=np.uint8))


def _cifar10(root: Path, num: int, rng: np.random.Generator) -> None:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    per_batch = max(2, num // 5)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        n = max(8, num // 4) if name == "test_batch" else per_batch
        data = rng.integers(0, 256, (n, 3 * 32 * 32), dtype=np.uint8)
        with open(folder / name, "wb") as f:
            pickle.dump({"data": data, "labels": [int(v) for v in rng.integers(0, 10, n)]}, f)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": [f"class{i}" for i in range(10)]}, f)


def _imagenet(resolution: int) -> Callable[[Path, int, np.random.Generator], None]:
    def write(root: Path, num: int, rng: np.random.Generator) -> None:
        folder = root / f"imagenet{resolution}"
        folder.mkdir(parents=True, exist_ok=True)
        dims = 3 * resolution * resolution
        for k, n in ((1, num // 2), (2, num - num // 2)):
            np.savez(folder / f"train_data_batch_{k}.npz",
                     data=rng.integers(0, 256, (n, dims), dtype=np.uint8),
                     labels=rng.integers(1, 1001, n))  # fmt: skip
        n_val = max(8, num // 4)
        np.savez(folder / "val_data.npz", data=rng.integers(0, 256, (n_val, dims), dtype=np.uint8),
                 labels=rng.integers(1, 1001, n_val))  # fmt: skip

    return write


def _power(root: Path, num: int, rng: np.random.Generator) -> None:
    (root / "power").mkdir(parents=True, exist_ok=True)
    np.save(root / "power" / "data.npy", rng.normal(size=(max(num, 40), 8)))


def _miniboone(root: Path, num: int, rng: np.random.Generator) -> None:
    (root / "miniboone").mkdir(parents=True, exist_ok=True)
    np.save(root / "miniboone" / "data.npy", rng.normal(size=(max(num, 40), 43)))


def _gas(root: Path, num: int, rng: np.random.Generator) -> None:
    import pandas as pd

    n = max(num, 60)
    # 16 sensors in 8 nearly identical pairs: MAF's correlation pruning keeps 8, as on real data
    base = rng.normal(size=(n, 8)).cumsum(0)
    sensors = np.hstack([base + 0.01 * rng.normal(size=(n, 8)), base])
    meta = np.stack([np.arange(n), rng.normal(size=n), rng.normal(size=n)], 1)
    columns = ["Time", "Meth", "Eth"] + [f"S{i}" for i in range(16)]
    (root / "gas").mkdir(parents=True, exist_ok=True)
    # object-dtype labels: the same pickle whichever string backend pandas defaults to
    frame = pd.DataFrame(np.hstack([meta, sensors]), columns=pd.Index(columns, dtype=object))
    frame.to_pickle(root / "gas" / "ethylene_CO.pickle")


def _hepmass(root: Path, num: int, rng: np.random.Generator) -> None:
    def table(n: int, extra: bool) -> np.ndarray:
        feats = rng.normal(size=(n, 27))
        feats[: n // 4, :6] = -10.0  # 6 features with a repeated minimum: MAF drops them → 21
        mass = rng.choice([500.0, 750.0, 1000.0], size=(n, 1))
        label = np.ones((n, 1))
        return np.hstack([label, feats, mass] + ([np.zeros((n, 1))] if extra else []))

    folder = root / "hepmass"
    folder.mkdir(parents=True, exist_ok=True)
    header = "# label," + ",".join(f"f{i}" for i in range(27)) + ",mass"
    n = max(num, 60)
    np.savetxt(folder / "1000_train.csv", table(n, False), delimiter=",", header=header,
               comments="")  # fmt: skip
    np.savetxt(folder / "1000_test.csv", table(max(8, n // 4), True), delimiter=",",
               header=header, comments="")  # fmt: skip


def _bsds300(root: Path, num: int, rng: np.random.Generator) -> None:
    import h5py

    (root / "BSDS300").mkdir(parents=True, exist_ok=True)
    with h5py.File(root / "BSDS300" / "BSDS300.hdf5", "w") as f:
        for key, n in (
            ("train", num),
            ("validation", max(8, num // 4)),
            ("test", max(8, num // 4)),
        ):
            f.create_dataset(key, data=rng.normal(size=(n, 63)))


WRITERS: dict[str, Callable[[Path, int, np.random.Generator], None]] = {
    "mnist": _mnist,
    "fashion_mnist": lambda root, num, rng: _mnist(root, num, rng, folder="FashionMNIST"),
    "spatial_mnist": _mnist,  # built from the MNIST files
    "cifar10": _cifar10,
    "imagenet32": _imagenet(32),
    "imagenet64": _imagenet(64),
    "power": _power,
    "gas": _gas,
    "hepmass": _hepmass,
    "miniboone": _miniboone,
    "bsds300": _bsds300,
}


#: the folder under the data root that each data set reads (and its stand-in is written to)
FOLDERS: dict[str, str] = {
    "mnist": "MNIST",
    "fashion_mnist": "FashionMNIST",
    "spatial_mnist": "MNIST",
    "cifar10": "cifar-10-batches-py",
    "imagenet32": "imagenet32",
    "imagenet64": "imagenet64",
    "power": "power",
    "gas": "gas",
    "hepmass": "hepmass",
    "miniboone": "miniboone",
    "bsds300": "BSDS300",
}

#: the marker file left in every folder of stand-in files
MARKER = "SURVAE_FAKE_DATA"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _write_marker(folder: Path, name: str, before: dict[Path, int], written_by: str) -> Path:
    """The marker in ``folder``: what wrote the stand-in (``written_by``), when, and the files
    written (those new or changed since ``before``), each with its size and SHA-256."""
    files = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and p.name != MARKER):
        if before.get(path) != path.stat().st_mtime_ns:
            rel = path.relative_to(folder).as_posix()
            files[rel] = {"size": path.stat().st_size, "sha256": _sha256(path)}
    marker = {
        "written_by": written_by,
        "dataset": name,
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "note": "random stand-in files, not real data; never compare results on them",
        "files": files,
    }
    path = folder / MARKER
    path.write_text(json.dumps(marker, indent=2) + "\n")
    return path


def write_fake_dataset(
    name: str,
    root: str | Path,
    num: int = 64,
    seed: int = 0,
    written_by: str = "survae.data.fake.write_fake_dataset",
) -> Path:
    """Write ``num`` random training examples of data set ``name`` under ``root`` in its real
    on-disk format, with the :data:`MARKER` file (naming ``written_by``) beside them, and
    return ``root``. Data sets generated in memory (toy, digits) need none."""
    if name not in WRITERS:
        raise ValueError(
            f"no fake files for data set {name!r}; file-based data sets: {', '.join(WRITERS)}"
        )
    root = Path(root)
    folder = root / FOLDERS[name]
    before = {p: p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file()}
    WRITERS[name](root, int(num), np.random.default_rng(seed))
    _write_marker(folder, name, before, written_by)
    return root


def fake_data_marker(name: str | None, root: str | os.PathLike | None) -> dict[str, Any] | None:
    """The marker of stand-in files for data set ``name`` under ``root`` (with ``"path"`` added),
    or None: no marker, or the files it lists are no longer the ones written (a file missing, of
    another size or content). Data sets generated in memory have none."""
    if not name or root is None or name not in FOLDERS:
        return None
    path = Path(root).expanduser() / FOLDERS[name] / MARKER
    try:
        marker = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    files = marker.get("files") if isinstance(marker, dict) else None
    if not isinstance(files, dict):
        return None
    for rel, entry in files.items():
        file = path.parent / rel
        if not file.is_file() or file.stat().st_size != entry.get("size"):
            return None
        if _sha256(file) != entry.get("sha256"):
            return None
    return {**marker, "path": str(path.resolve())}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name", choices=sorted(WRITERS))
    parser.add_argument("--root", required=True)
    parser.add_argument("--num", type=int, default=64)
    args = parser.parse_args(argv)
    command = " ".join(["python -m survae.data.fake", *(sys.argv[1:] if argv is None else argv)])
    root = write_fake_dataset(args.name, args.root, args.num, written_by=command)
    print(f"{root} (stand-in files, marked by {Path(FOLDERS[args.name]) / MARKER})")


if __name__ == "__main__":
    main()
