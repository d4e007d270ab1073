"""Checkpoints from elsewhere: crafted (a pickle payload), damaged, foreign, of another model
or data set, and a disk that fills up. No survae entry point runs a payload; every fault is
one clear error naming the file; survae's own checkpoints load as before."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parents[1] / "training"))
from conftest import QUIET, compose_config, run_cli, tiny_data  # noqa: E402

from survae import load_model  # noqa: E402
from survae.app.evaluation import checkpoint_hparams, load_for_eval  # noqa: E402
from survae.checkpoints import CheckpointError, load_checkpoint  # noqa: E402
from survae.config_check import ConfigError  # noqa: E402
from survae.training import train  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
TINY = ["experiment=plain_flow_checkerboard", *tiny_data(256), *QUIET, "trainer.max_steps=8"]
TINY += ["test=false"]


class Payload:
    """Unpickling this creates a folder: the marker of code run from a file."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("trained") / "run"
    train(compose_config(TINY, run))
    return run / "checkpoints" / "last.ckpt"


@pytest.fixture
def crafted(trained, tmp_path) -> tuple[Path, Path]:
    """A real survae checkpoint with a payload added (it would still load normally)."""
    ckpt = load_checkpoint(trained)
    marker = tmp_path / "payload-ran"
    ckpt["hyper_parameters"]["note"] = Payload(marker)
    path = tmp_path / "run" / "checkpoints" / "last.ckpt"
    path.parent.mkdir(parents=True)
    torch.save(ckpt, path)
    shutil.copy(trained.parents[1] / "run_config.yaml", tmp_path / "run" / "run_config.yaml")
    return path, marker


def _refused(err: BaseException, path: Path) -> bool:
    text = str(err)
    return str(path) in text and "trust" in text and "could run code" in text


def test_survae_checkpoints_load_safely(trained):
    model = load_model(trained)
    assert model.sample(3).shape == (3, 2)
    assert checkpoint_hparams(trained)["data_info"]["shape"] == [2]


@pytest.mark.parametrize(
    "entry",
    [
        lambda p: load_model(p),
        lambda p: load_for_eval(p),
        lambda p: checkpoint_hparams(p),
        lambda p: load_checkpoint(p),
    ],
    ids=["load_model", "load_for_eval", "checkpoint_hparams", "load_checkpoint"],
)
def test_crafted_checkpoint_is_refused_by_the_library(crafted, entry):
    path, marker = crafted
    with pytest.raises(CheckpointError) as err:
        entry(path)
    assert _refused(err.value, path)
    assert not marker.exists(), "the payload ran"


def test_crafted_checkpoint_is_refused_when_resuming(crafted, tmp_path):
    path, marker = crafted
    with pytest.raises(CheckpointError) as err:
        train(compose_config([*TINY, f"ckpt_path={path}"], tmp_path / "other"))
    assert _refused(err.value, path) and not marker.exists()


@pytest.mark.parametrize("script", ["eval_loglik.py", "eval_sample.py"])
def test_crafted_checkpoint_is_refused_by_the_scripts(crafted, script):
    path, marker = crafted
    args = [str(path)] + (["--small-features", "--num-samples", "10"] if "sample" in script else [])
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / script), *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert proc.returncode != 0
    assert str(path) in proc.stderr and "--trust-checkpoint" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not marker.exists(), "the payload ran"


def test_crafted_checkpoint_is_refused_by_run_resume(crafted):
    path, marker = crafted
    proc = run_cli([f"resume={path.parents[1]}"], path.parents[2])
    assert proc.returncode != 0 and str(path) in proc.stderr
    assert not marker.exists(), "the payload ran"


def test_trusted_checkpoint_loads_when_asked_explicitly(crafted):
    path, marker = crafted
    assert load_model(path, trust=True).sample(2).shape == (2, 2)
    assert marker.exists()  # trust means exactly that: the file's code ran


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda b: b"", "is empty"),
        (lambda b: b[: len(b) // 2], "truncated or corrupt"),
        (lambda b: b[:200] + bytes(x ^ 0xFF for x in b[200:400]) + b[400:], "corrupt"),
    ],
    ids=["zero_bytes", "truncated", "bytes_flipped"],
)
def test_damaged_checkpoints_give_one_clear_error(trained, tmp_path, damage, message):
    path = tmp_path / "damaged.ckpt"
    path.write_bytes(damage(trained.read_bytes()))
    with pytest.raises(CheckpointError) as err:
        load_model(path)
    assert str(path) in str(err.value) and message in str(err.value)
    assert len(str(err.value).splitlines()) == 1


def test_foreign_checkpoint_is_named_as_such(tmp_path):
    path = tmp_path / "foreign.ckpt"
    torch.save({"weights": torch.zeros(3)}, path)
    with pytest.raises(CheckpointError, match="not a survae training checkpoint"):
        train(compose_config([*TINY, f"ckpt_path={path}"], tmp_path / "run"))


def test_missing_checkpoint_is_named(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        train(compose_config([*TINY, f"ckpt_path={tmp_path}/nope.ckpt"], tmp_path / "run"))


def test_resume_refuses_another_model_or_data_unless_forced(trained, tmp_path):
    with pytest.raises(ConfigError) as err:
        train(
            compose_config(
                [*TINY, f"ckpt_path={trained}", "data=corners", "model.hidden=[32]"],
                tmp_path / "a",
            )
        )
    text = str(err.value)
    assert "data.name: checkpoint 'checkerboard', config 'corners'" in text
    assert "model.hidden" in text and "force_resume=true" in text
    with pytest.warns(UserWarning, match="force_resume"):
        results = train(
            compose_config(
                [*TINY, f"ckpt_path={trained}", "data=corners", "force_resume=true"]
                + ["trainer.max_steps=12"],
                tmp_path / "b",
            )
        )
    assert load_checkpoint(results["last_checkpoint"])["global_step"] == 12


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small tmpfs needs root")
def test_full_disk_keeps_the_previous_checkpoint_and_says_so(trained, tmp_path):
    mount = tmp_path / "small"
    mount.mkdir()
    size_kib = int(trained.stat().st_size * 1.5) // 1024
    if subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size_kib}k", "tmpfs", str(mount)]
    ).returncode:
        pytest.skip("cannot mount a tmpfs here")
    try:
        run = mount / "run"
        with pytest.raises(OSError) as err:
            train(
                compose_config(
                    [*TINY, "trainer.max_steps=30", "callbacks.checkpoint_every_n_steps=2"], run
                )
            )
        assert "no space left" in str(err.value) and "previous version" in str(err.value)
        last = run / "checkpoints" / "last.ckpt"
        assert load_checkpoint(last)["global_step"] >= 2  # the last good one is intact
        assert not list((run / "checkpoints").glob(".tmp-*"))
    finally:
        subprocess.run(["umount", str(mount)])


def test_full_disk_inside_the_serialiser_is_still_a_full_disk(tmp_path):
    """torch.save's zip writer reports ENOSPC as a RuntimeError raised while the OSError is
    handled; that is still the one full-disk error, and the previous file stays."""
    import errno

    from survae.training.run_folder import atomic_write

    path = tmp_path / "last.ckpt"
    path.write_bytes(b"previous")

    def write(f):
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError:
            raise RuntimeError("[enforce fail at inline_container.cc] unexpected pos")  # noqa: B904

    with pytest.raises(OSError) as err:
        atomic_write(path, write, binary=True, suffix=".ckpt")
    assert err.value.errno == errno.ENOSPC and "previous version" in str(err.value)
    assert path.read_bytes() == b"previous" and not list(tmp_path.glob(".tmp-*"))
