"""Helpers to compose the project's Hydra configs inside tests."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf, open_dict

from survae.training import resolvers

ROOT = Path(__file__).resolve().parents[2]
CONFIG_DIR = str(ROOT / "configs")

#: small toy data and no figures or progress bars: a run takes a second or two
TINY_TOY = [
    "data.train_size=512",
    "data.val_size=128",
    "data.test_size=128",
    "logger=none",
    "callbacks.rich_progress_bar=false",
    "callbacks.samples.every_n_epochs=0",
    "trainer.enable_progress_bar=false",
]


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
