"""The fake-file writer produces files every file-based data module loads, and marks them as
stand-ins by where they came from (a marker file checked against the files), never by name."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from survae import registry
from survae.data.fake import FOLDERS, MARKER, WRITERS, fake_data_marker, write_fake_dataset

EXPECTED_SHAPE = {
    "mnist": (1, 28, 28), "fashion_mnist": (1, 28, 28), "cifar10": (3, 32, 32),
    "imagenet32": (3, 32, 32), "imagenet64": (3, 64, 64), "spatial_mnist": (50, 2),
    "power": (6,), "gas": (8,), "hepmass": (21,), "miniboone": (43,), "bsds300": (63,),
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(WRITERS))
def test_fake_files_load_with_the_real_loader(name, tmp_path):
    write_fake_dataset(name, tmp_path, num=48)
    cls = registry.get("dataset", name)
    kwargs = {"root": str(tmp_path), "batch_size": 4}
    if name in ("mnist", "fashion_mnist", "cifar10", "imagenet32", "imagenet64", "spatial_mnist"):
        kwargs["val_size"] = 8
    if name == "cifar10":
        kwargs["check_integrity"] = False
    dm = cls(**kwargs)
    dm.setup()
    x = next(iter(dm.train_dataloader()))
    assert tuple(x.shape[1:]) == EXPECTED_SHAPE[name] == tuple(dm.shape)
    assert x.dtype == (torch.uint8 if dm.kind == "image" else torch.float32)
    marker = fake_data_marker(name, tmp_path)
    assert marker is not None and marker["dataset"] == name and marker["files"]
    assert Path(marker["path"]) == (tmp_path / FOLDERS[name] / MARKER).resolve()
    folder = getattr(dm, "folder", None)  # the loader reads the folder the marker is in
    if isinstance(folder, str):
        assert Path(folder).name == FOLDERS[name]


def test_command_line_marks_the_folder_and_the_marker_checks_the_files(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "survae.data.fake", "power", "--root", str(tmp_path), "--num", "50"],
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        cwd=Path(__file__).resolve().parents[2],  # the checkout's survae
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "stand-in files, marked by power/SURVAE_FAKE_DATA" in proc.stdout
    marker = json.loads((tmp_path / "power" / MARKER).read_text())
    assert marker["written_by"].startswith("python -m survae.data.fake power --root")
    assert set(marker["files"]) == {"data.npy"}
    assert fake_data_marker("power", tmp_path)["dataset"] == "power"
    assert fake_data_marker("gas", tmp_path) is None  # another data set's folder: no marker
    assert fake_data_marker("two_moons", tmp_path) is None  # generated in memory
    # real files copied over the stand-ins (same size, other content) are real again
    data = np.load(tmp_path / "power" / "data.npy")
    np.save(tmp_path / "power" / "data.npy", data + 1.0)
    assert fake_data_marker("power", tmp_path) is None
    (tmp_path / "power" / "data.npy").unlink()
    assert fake_data_marker("power", tmp_path) is None


def test_no_marker_means_real_data_whatever_the_name(tmp_path):
    write_fake_dataset("power", tmp_path, num=50)
    (tmp_path / "power" / MARKER).unlink()
    assert fake_data_marker("power", tmp_path) is None
    (tmp_path / "power" / MARKER).write_text("not json")
    assert fake_data_marker("power", tmp_path) is None


def test_unknown_fake_name_lists_choices(tmp_path):
    with pytest.raises(ValueError, match="cifar10"):
        write_fake_dataset("svhn", tmp_path)
