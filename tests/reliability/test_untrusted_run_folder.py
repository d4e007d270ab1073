"""A run folder received from elsewhere never runs code through ``run.py resume=`` or a lone
``ckpt_path=``: its saved ``imports`` are refused (one line naming the modules) unless the
command line says ``trust_config=true``, its own ``trust_*`` keys count for nothing, and a Hydra
``_target_`` in it instantiates nothing. Each hostile module writes a marker file when
imported; the tests first show the marker works, then that it is never written."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

sys.path.insert(0, str(Path(__file__).parents[1] / "training"))
from conftest import QUIET, compose_config, run_cli, tiny_data  # noqa: E402

from survae.checkpoints import load_checkpoint  # noqa: E402
from survae.training import train  # noqa: E402

#: writes the marker named by $MARKER when imported
HOSTILE = "import os\nopen(os.environ['MARKER'], 'w').close()\n"
TINY = ["experiment=plain_flow_checkerboard", *tiny_data(128), *QUIET, "test=false"]


class Payload:
    """Unpickling this creates a folder: the marker of code run from a checkpoint."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


@pytest.fixture(scope="module")
def genuine(tmp_path_factory) -> Path:
    """A run folder survae wrote (2 steps of a toy flow)."""
    run = tmp_path_factory.mktemp("genuine") / "run"
    train(compose_config([*TINY, "trainer.max_steps=2"], run))
    return run


@pytest.fixture
def received(genuine, tmp_path) -> tuple[Path, dict[str, str], Path]:
    """That run folder as received from elsewhere: its saved config names a hostile module
    under ``imports`` (and asks for trust itself); the folder holding the module is on
    PYTHONPATH and the marker's path in the environment."""
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "hostile_layers.py").write_text(HOSTILE)
    marker = tmp_path / "marker"
    env = {"PYTHONPATH": str(tmp_path / "pkg"), "MARKER": str(marker)}
    check = subprocess.run(
        [sys.executable, "-c", "import hostile_layers"], env=env, capture_output=True, text=True
    )
    assert check.returncode == 0 and marker.exists(), check.stderr  # the payload works
    marker.unlink()
    run = tmp_path / "received"
    shutil.copytree(genuine, run, ignore=shutil.ignore_patterns(".survae-run.lock"))
    _edit_config(run, imports=["hostile_layers"], trust_config=True, trust_checkpoint=True)
    return run, env, marker


def _edit_config(run: Path, **changes: Any) -> None:
    cfg = yaml.safe_load((run / "run_config.yaml").read_text())
    cfg.update(changes)
    (run / "run_config.yaml").write_text(yaml.safe_dump(cfg))


def _one_line_error(proc: subprocess.CompletedProcess) -> str:
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr[-3000:]
    return lines[0]


@pytest.mark.parametrize("how", ["resume", "ckpt_path"])
def test_saved_imports_are_refused_without_trust_config(received, how):
    run, env, marker = received
    target = f"resume={run}" if how == "resume" else f"ckpt_path={run}/checkpoints/last.ckpt"
    line = _one_line_error(run_cli([target], run.parent, env))
    assert "hostile_layers" in line and "trust_config=true" in line
    assert str(run / "run_config.yaml") in line
    assert not marker.exists(), "a module named by a received config was imported"


def test_trust_config_from_the_command_line_imports_them(received):
    run, env, marker = received
    proc = run_cli([f"resume={run}", "trust_config=true", "trainer.max_steps=3"], run.parent, env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert marker.exists()  # trust means exactly that: the module ran
    assert load_checkpoint(run / "checkpoints" / "last.ckpt")["global_step"] == 3


def test_trust_checkpoint_in_a_saved_config_does_not_count(received, tmp_path):
    run, env, _ = received
    ckpt = load_checkpoint(run / "checkpoints" / "last.ckpt")
    payload = tmp_path / "payload-ran"
    ckpt["hyper_parameters"]["note"] = Payload(payload)
    torch.save(ckpt, run / "checkpoints" / "last.ckpt")
    _edit_config(run, imports=[])  # the file still says trust_checkpoint: true
    proc = run_cli([f"resume={run}"], run.parent, env)
    assert proc.returncode != 0 and "--trust-checkpoint" in proc.stderr
    assert not payload.exists(), "the checkpoint's payload ran"


def test_hydra_target_in_a_saved_config_instantiates_nothing(received):
    run, env, marker = received
    target = "hostile_layers.build"
    hydra = {"callbacks": {"hostile": {"_target_": "hostile_layers.Callback"}}}
    _edit_config(run, imports=[], trust_config=False, _target_=target, hydra=hydra)
    cfg = yaml.safe_load((run / "run_config.yaml").read_text())
    _edit_config(run, callbacks={**cfg["callbacks"], "_target_": target})
    proc = run_cli([f"resume={run}", "trainer.max_steps=3"], run.parent, env)
    assert proc.returncode == 0, proc.stderr[-3000:]  # resumed, the _target_ keys ignored
    assert not marker.exists(), "a _target_ of a received config was imported"
