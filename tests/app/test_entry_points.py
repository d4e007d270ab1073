"""The packaged commands (``[project.scripts]``): each names a callable of the package, and
``survae-report``, ``survae-eval-loglik``, ``survae-eval-sample`` (also ``survae report|
eval-loglik|eval-sample``) run from the package with ``--help`` and stop with one line on a bad
input. The built wheel's console scripts: tests/test_packaging.py (slow)."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python >= 3.11

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]


def _python(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, timeout=300, cwd=cwd, env=env
    )


def test_every_console_script_names_a_callable_of_the_package():
    expected = {"survae", "survae-run", "survae-report", "survae-eval-loglik", "survae-eval-sample"}
    assert expected <= set(SCRIPTS)
    for name, target in SCRIPTS.items():
        module, _, attr = target.partition(":")
        assert module.startswith("survae"), name
        assert callable(getattr(importlib.import_module(module), attr)), name


def test_commands_run_from_the_package_with_help(tmp_path):
    """``python -m survae eval-loglik --help`` (what ``survae eval-loglik`` runs) and the module
    behind ``survae-eval-sample``, from a folder outside the checkout's scripts."""
    loglik = _python("-m", "survae", "eval-loglik", "--help", cwd=tmp_path)
    assert loglik.returncode == 0, loglik.stderr[-2000:]
    assert loglik.stdout.startswith("usage: survae eval-loglik") and "--k" in loglik.stdout
    sample = _python("-m", "survae.app.eval_sample", "--help", cwd=tmp_path)
    assert sample.returncode == 0, sample.stderr[-2000:]
    assert sample.stdout.startswith("usage: survae-eval-sample")
    assert "--inception-weights" in sample.stdout
    report = _python("-m", "survae.app.report", "--help", cwd=tmp_path)
    assert report.returncode == 0 and report.stdout.startswith("usage: survae-report")


def test_a_bad_input_is_one_line_named_after_the_command(tmp_path):
    missing = tmp_path / "nowhere.ckpt"
    proc = _python("-m", "survae", "eval-loglik", str(missing), cwd=tmp_path)
    assert proc.returncode == 1
    assert proc.stderr.strip() == f"survae eval-loglik: checkpoint {missing} does not exist"
