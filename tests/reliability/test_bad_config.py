"""Bad config values get a one-line ConfigError naming the key and the valid range, before
anything is built or trained (values come in as Hydra parses command-line overrides)."""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parents[1] / "training"))
from conftest import compose_config  # noqa: E402  (tests/training/conftest.py)

from survae.config_check import ConfigError  # noqa: E402
from survae.models import build_model  # noqa: E402
from survae.training.optim import build_optimizer, build_scheduler  # noqa: E402
from survae.training.pipeline import train  # noqa: E402
from survae.training.validation import validate_run_config  # noqa: E402

EXPERIMENTS = sorted(
    p.stem for p in (Path(__file__).parents[2] / "configs/experiment").glob("*.yaml")
)

#: (config key, bad value, text the message must contain: the key and the valid range)
BAD_VALUES = [
    ("trainer.max_epochs", 0, "trainer.max_epochs: must be an integer >= 1, or -1 (no limit)"),
    ("test_iw_samples", 0, "test_iw_samples: must be an integer >= 1, got 0"),
    ("check_finite", "maybe", "check_finite: must be true or false, got 'maybe'"),
    ("optim.warmup_steps", -10, "optim.warmup_steps: must be an integer >= 0, got -10"),
    ("trainer.gradient_clip_val", -1, "trainer.gradient_clip_val: must be a number >= 0, or null"),
    ("optim.lr", 0, "optim.lr: must be a number > 0, got 0"),
    ("data.batch_size", "abc", "data.batch_size: must be an integer >= 1, got 'abc'"),
    ("seed", "abc", "seed: must be an integer in [0, 4294967295], got 'abc'"),
    ("optim.lr", "fast", "optim.lr: must be a number > 0, got 'fast'"),
    ("optim.decay", 1.5, "optim.decay: must be a number in (0, 1], got 1.5"),
    ("optim.betas", [0.9, 1.5], "optim.betas[1]: must be a number in [0, 1), got 1.5"),
    ("optim.lrr", 0.1, "optim: unknown key(s) 'lrr'; valid: name, lr,"),
    ("trainer.max_steps", 0, "trainer.max_steps: must be an integer >= 1, or -1 (no limit)"),
    ("trainer.accumulate_grad_batches", 0,
     "trainer.accumulate_grad_batches: must be an integer >= 1, got 0"),
    ("trainer.val_check_interval", 1.5, "trainer.val_check_interval: must be a number in (0, 1]"),
    ("test_iw_chunk", 0, "test_iw_chunk: must be an integer >= 1, or null, got 0"),
    ("ema_decay", 1.0, "ema_decay: must be a number in (0, 1), or null, got 1.0"),
    ("data.num_workers", -2, "data.num_workers: must be an integer >= 0, got -2"),
    ("test", "maybe", "test: must be true or false, got 'maybe'"),
    ("callbacks.early_stopping.patience", 0, "callbacks.early_stopping.patience: must be an"),
]  # fmt: skip


@pytest.fixture(scope="module")
def default_cfg(tmp_path_factory) -> dict:
    return compose_config([], tmp_path_factory.mktemp("run"))


def _one_line(err: pytest.ExceptionInfo) -> str:
    assert "\n" not in str(err.value)
    return str(err.value)


def test_default_config_is_valid(default_cfg):
    validate_run_config(default_cfg)


@pytest.mark.parametrize(
    "key,value,expected", BAD_VALUES, ids=[f"{k}={v}" for k, v, _ in BAD_VALUES]
)
def test_bad_value_is_a_config_error_naming_the_key(default_cfg, key, value, expected):
    cfg = copy.deepcopy(default_cfg)
    *path, last = key.split(".")
    section = cfg
    for part in path:
        section = section[part]
    section[last] = value
    with pytest.raises(ConfigError) as err:
        validate_run_config(cfg)
    assert expected in _one_line(err)


def test_command_line_strings_are_refused(tmp_path):
    """What Hydra makes of ``seed=abc`` etc. on the command line (strings, not errors)."""
    for override, expected in (
        ("seed=abc", "seed: must be an integer in [0, 4294967295], got 'abc'"),
        ("data.batch_size=abc", "data.batch_size: must be an integer >= 1, got 'abc'"),
        ("optim.lr=fast", "optim.lr: must be a number > 0, got 'fast'"),
        ("check_finite=maybe", "check_finite: must be true or false, got 'maybe'"),
    ):
        with pytest.raises(ConfigError) as err:
            validate_run_config(compose_config([override], tmp_path / "run"))
        assert expected in _one_line(err)


def test_train_refuses_before_it_starts(tmp_path):
    out = tmp_path / "run"
    cfg = compose_config(["trainer.max_epochs=0", "logger=none"], out)
    with pytest.raises(ConfigError, match="trainer.max_epochs"):
        train(cfg)
    assert not out.exists() or not any(out.iterdir())  # nothing written: refused up front


def test_zero_lr_in_the_scheduler_is_a_config_error_not_a_division():
    params = [torch.nn.Parameter(torch.zeros(2))]
    optimizer = torch.optim.Adam(params, lr=1.0)
    with pytest.raises(ConfigError, match=r"optim.lr: must be a number > 0, got 0"):
        build_scheduler(optimizer, {"lr": 0, "min_lr": 0.0}, steps_per_epoch=10)
    with pytest.raises(ConfigError, match=r"optim.warmup_steps: must be an integer >= 0"):
        build_scheduler(optimizer, {"lr": 1e-3, "warmup_steps": -10}, steps_per_epoch=10)
    with pytest.raises(ConfigError, match=r"optim.lr: .*got 'fast'"):
        build_optimizer(params, {"lr": "fast"})


@pytest.mark.parametrize(
    "spec,expected",
    [
        ({"architecture": "abs_flow_2d", "num_couplings": -1},
         "model.num_couplings (architecture 'abs_flow_2d'): must be an integer >= 1, got -1"),
        ({"architecture": "plain_flow_2d", "num_couplings": "abc"},
         "model.num_couplings (architecture 'plain_flow_2d'): must be an integer"),
        ({"architecture": "abs_flow_2d", "hidden": [64, 0]},
         "model.hidden (architecture 'abs_flow_2d'): must be an integer >= 1, got 0"),
        ({"architecture": "abs_flow_2d", "bound": -4.0},
         "model.bound (architecture 'abs_flow_2d'): must be a number > 0, got -4.0"),
        ({"architecture": "maf", "num_layers": 0},
         "model.num_layers (architecture 'maf'): must be an integer >= 1"),
        ({"architecture": "maf", "batch_norm": "maybe"},
         "model.batch_norm (architecture 'maf'): must be true or false"),
    ],
)  # fmt: skip
def test_architecture_hyperparameters_out_of_range(spec, expected):
    with pytest.raises(ConfigError) as err:
        build_model(spec, (2,))
    assert expected in _one_line(err)


def _coupling(net: object) -> dict:
    return {"layers": [{"name": "affine_coupling", "num_channels": 2, "net": net}]}


@pytest.mark.parametrize(
    "net,expected",
    [
        ({"name": "mlp", "widht": [8]},
         "model.layers[0].net: unknown key(s) 'widht' for 'mlp'. Valid keys:"),
        ({"name": "mlpp"}, "model.layers[0].net: unknown network 'mlpp'; valid:"),
        ("mlpp", "model.layers[0].net: unknown network 'mlpp'; valid:"),
        ({"name": "mlp", "hidden": [8, -3]},
         "model.layers[0].net.hidden: must be an integer >= 1, got -3"),
        ({"name": "mlp", "dropout": 1.5},
         "model.layers[0].net.dropout: must be a number in [0, 1), got 1.5"),
    ],
)  # fmt: skip
def test_nested_network_spec_errors_name_the_location(net, expected):
    with pytest.raises(ConfigError) as err:
        build_model(_coupling(net), (2,))
    message = _one_line(err)
    assert expected in message
    if "Valid keys" in expected:
        assert "hidden" in message  # the valid keys are listed


def test_good_nested_network_spec_still_builds():
    model = build_model(_coupling({"name": "mlp", "hidden": [8]}), (2,))
    assert model.log_prob(torch.zeros(3, 2)).shape == (3,)


@pytest.mark.slow
@pytest.mark.parametrize("name", EXPERIMENTS)
def test_every_experiment_config_is_valid(tmp_path, name):
    validate_run_config(compose_config([f"experiment={name}"], tmp_path / "run"))
