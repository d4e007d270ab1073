"""What the command line says about itself: ``--help`` opens with survae's own text naming
``--list-experiments`` and ``resume=``, ``--version`` is ``survae --version``'s line, and
``--list-experiments`` gives each experiment's first sentence whole."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from survae.app.cli import first_sentence, list_experiments

ROOT = Path(__file__).resolve().parents[2]


def _run(*args: str) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    return subprocess.run(
        [sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600
    )


def test_help_opens_with_survae_text_naming_list_experiments_and_resume():
    proc = _run(str(ROOT / "run.py"), "--help")
    assert proc.returncode == 0, proc.stderr
    head = "\n".join(proc.stdout.splitlines()[:12])
    assert proc.stdout.startswith("survae-run (python run.py): train a survae experiment")
    assert "--list-experiments" in head and "resume=RUN_FOLDER" in head
    assert "powered by Hydra" not in proc.stdout


def test_run_py_version_is_survae_version():
    run_py = _run(str(ROOT / "run.py"), "--version")
    survae = _run("-m", "survae", "--version")
    assert run_py.returncode == 0 and survae.returncode == 0
    assert run_py.stdout == survae.stdout
    assert run_py.stdout.startswith("survae ") and "torch" in run_py.stdout


def test_every_experiment_description_is_a_whole_sentence():
    rows = list_experiments()
    assert len(rows) > 50
    for name, description in rows:
        assert description, name
        assert description.endswith((".", ")", "!", "?")), (name, description)
        assert "  " not in description, (name, description)


@pytest.mark.parametrize(
    "text,expected",
    [
        ("One. Two.", "One."),
        ("A (see Sec. 5, et al. 2019). Rest.", "A (see Sec. 5, et al. 2019)."),
        ("Uses e.g. Adam. Then more", "Uses e.g. Adam."),
        ("examples/mnist_vae.py: a VAE. More", "examples/mnist_vae.py: a VAE."),
        ("no full stop", "no full stop"),
    ],
)
def test_first_sentence(text, expected):
    assert first_sentence(text) == expected
