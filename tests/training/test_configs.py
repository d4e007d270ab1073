"""Every config group option composes; bad configs fail fast with the valid choices."""

from __future__ import annotations

from pathlib import Path

import pytest

from survae import registry
from survae.config_check import ConfigError
from survae.models import build_model
from survae.training.pipeline import build_datamodule, train

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
GROUPS = ["data", "model", "optim", "trainer", "logger", "callbacks", "paths", "debug"]


def _options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONFIGS / group).glob("*.yaml"))


@pytest.mark.parametrize(
    "group,option", [(g, o) for g in GROUPS for o in _options(g)], ids=lambda v: str(v)
)
def test_every_group_option_composes(make_config, group, option):
    cfg = make_config(f"{group}={option}", tiny=False)
    for key in ("data", "model", "optim", "trainer", "logger", "callbacks", "paths"):
        assert key in cfg, f"{key} missing after {group}={option}"


def test_every_data_config_names_a_registered_dataset():
    valid = set(registry.available("dataset"))
    for option in _options("data"):
        text = (CONFIGS / "data" / f"{option}.yaml").read_text()
        name = next(
            ln.split(":", 1)[1].strip() for ln in text.splitlines() if ln.startswith("name:")
        )
        assert name in valid, f"configs/data/{option}.yaml names unknown dataset {name!r}"


def test_launcher_and_sweep_configs_compose(make_config):
    assert make_config("hydra/launcher=local")["seed"] == 0
    assert make_config("hydra/launcher=slurm")["seed"] == 0
    for option in _options("hparams_search"):
        make_config(f"hparams_search={option}")


def test_unknown_dataset_lists_valid_names(make_config):
    cfg = make_config()
    cfg["data"]["name"] = "cifar100"
    with pytest.raises(registry.UnknownNameError, match="cifar10") as info:
        build_datamodule(cfg["data"], seed=0)
    assert "checkerboard" in str(info.value)


def test_unknown_data_key_names_key_and_valid_keys(make_config):
    cfg = make_config("+data.batch_sise=3")
    with pytest.raises(ConfigError, match=r"batch_sise.*Valid keys:.*batch_size"):
        train(cfg)


def test_unknown_layer_in_a_layer_stack_lists_layers():
    spec = {"layers": [{"name": "affine_couplin", "num_channels": 2, "net": "mlp"}]}
    with pytest.raises(registry.UnknownNameError, match="affine_coupling"):
        build_model(spec, data_shape=(2,))


def test_unknown_layer_argument_names_the_layer():
    spec = {"layers": [{"name": "reverse", "dims": 1}]}
    with pytest.raises(ConfigError, match=r"model.layers\[0\].*'dims'.*reverse"):
        build_model(spec, data_shape=(2,))


def test_unknown_architecture_lists_architectures():
    with pytest.raises(registry.UnknownNameError, match="abs_flow_2d"):
        build_model({"architecture": "abs_flow"}, data_shape=(2,))


def test_unknown_trainer_key_is_rejected(make_config):
    cfg = make_config("+trainer.max_epoch=1")
    with pytest.raises(ConfigError, match=r"trainer: unknown key.*max_epoch"):
        train(cfg)


def test_layer_stack_infers_base_shape():
    spec = {
        "layers": [
            {"name": "affine_coupling", "num_channels": 2, "net": {"name": "mlp", "hidden": [8]}},
            {"name": "reverse"},
        ]
    }
    model = build_model(spec, data_shape=(2,))
    assert model.base_dist.shape == (2,)
    assert model.sample(3).shape == (3, 2)
