"""Helpers to compose the project's Hydra configs inside tests."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf, open_dict

from survae.training import resolvers

ROOT = Path(__file__).resolve().parents[2]
CONFIG_DIR = str(ROOT / "configs")

#: no logger, figures or progress bars
QUIET = [
    "logger=none",
    "callbacks.rich_progress_bar=false",
    "callbacks.samples.every_n_epochs=0",
    "trainer.enable_progress_bar=false",
]
#: small toy data and no figures or progress bars: a run takes a second or two
TINY_TOY = ["data.train_size=512", "data.val_size=128", "data.test_size=128", *QUIET]


def tiny_data(train_size: int) -> list[str]:
    """Overrides for a toy data set of ``train_size`` points in batches of 64."""
    return [f"data.train_size={train_size}", "data.val_size=64", "data.test_size=64"] + [
        "data.batch_size=64"
    ]


def cli_process(args: list[str], cwd: Path, env: dict | None = None) -> subprocess.Popen:
    """``run.py ARGS`` as a user starts it (one thread, W&B offline), not waited for."""
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline", **(env or {})}
    full_env.pop("SURVAE_RUN_STAMP", None)
    return subprocess.Popen(
        [sys.executable, str(ROOT / "run.py"), *args],
        cwd=cwd,
        env=full_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def run_cli(
    args: list[str], cwd: Path, env: dict | None = None, timeout: int = 300
) -> subprocess.CompletedProcess:
    """``run.py ARGS`` run to its end: return code, stdout and stderr."""
    proc = cli_process(args, cwd, env)
    out, err = proc.communicate(timeout=timeout)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def compose_config(overrides: list[str], output_dir: Path) -> dict:
    """The resolved run config as ``run.py`` would build it, writing into ``output_dir``."""
    resolvers.register()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("train", overrides=overrides, return_hydra_config=True)
        with open_dict(cfg):
            cfg.hydra.runtime.output_dir = str(output_dir)
            cfg.hydra.job.num = 0
        HydraConfig.instance().set_config(cfg)
        cfg.paths.output_dir = str(output_dir)
        container = OmegaConf.to_container(cfg, resolve=True)
    container.pop("hydra", None)
    GlobalHydra.instance().clear()
    return container


@pytest.fixture
def make_config(tmp_path):
    def _make(*overrides: str, tiny: bool = True, out: Path | None = None) -> dict:
        return compose_config([*(TINY_TOY if tiny else []), *overrides], out or tmp_path / "run")

    return _make
