"""validate_run_config and the scalar checks: valid values pass (including the special ones such
as ``-1`` and ``null``), invalid ones fail with the key and the range in one line."""

from __future__ import annotations

import pytest

from survae.config_check import (
    ConfigError,
    check_bool,
    check_int,
    check_kwargs,
    check_number,
)
from survae.training.optim import validate_optim_config
from survae.training.validation import validate_run_config

GOOD = {
    "seed": 0,
    "test": True,
    "test_iw_samples": 1,
    "test_iw_chunk": None,
    "check_finite": False,
    "ema_decay": 0.999,
    "trainer": {
        "max_epochs": -1,
        "max_steps": -1,
        "gradient_clip_val": 0,
        "accumulate_grad_batches": 4,
        "val_check_interval": 0.25,
        "limit_train_batches": 20,
        "limit_val_batches": 0.5,
        "num_sanity_val_steps": -1,
        "fast_dev_run": True,
        "deterministic": "warn",
    },
    "data": {"batch_size": 64, "eval_batch_size": None, "num_workers": 0, "download": False},
    "callbacks": {"early_stopping": {"patience": None}, "samples": {"every_n_epochs": 0}},
    "optim": {"name": "adamax", "lr": 1e-3, "betas": [0.9, 0.999], "warmup_steps": 0,
              "decay": 1.0, "decay_every": "step", "min_lr": 1e-4, "fused": None},
}  # fmt: skip


def test_valid_values_pass():
    validate_run_config(GOOD)
    validate_run_config({})  # nothing given: defaults are valid


@pytest.mark.parametrize(
    "section,key,value,expected",
    [
        (None, "seed", -1, "seed: must be an integer in [0, 4294967295], got -1"),
        (None, "seed", True, "seed: must be an integer"),  # a bool is not a seed
        (None, "test_iw_samples", 2.5, "test_iw_samples: must be an integer >= 1, got 2.5"),
        (None, "ema_decay", "high", "ema_decay: must be a number in (0, 1), or null"),
        ("trainer", "max_epochs", -2, "trainer.max_epochs: must be an integer >= 1, or -1"),
        ("trainer", "limit_val_batches", 1.5, "trainer.limit_val_batches: must be a number in"),
        ("trainer", "gradient_clip_val", float("nan"), "trainer.gradient_clip_val: must be a"),
        ("trainer", "fast_dev_run", -1, "trainer.fast_dev_run: must be an integer >= 0"),
        ("data", "eval_batch_size", 0, "data.eval_batch_size: must be an integer >= 1"),
        ("data", "download", "yes", "data.download: must be true or false, got 'yes'"),
        ("optim", "min_lr", 0.1, "optim.min_lr: must be a number in [0, 0.001], got 0.1"),
        ("optim", "betas", [0.9], "optim.betas: must be two numbers in [0, 1), got [0.9]"),
        ("optim", "eps", 0, "optim.eps: must be a number > 0, or null, got 0"),
        ("optim", "decay_every", "week", "optim.decay_every: must be one of epoch, step"),
        ("optim", "lr", float("inf"), "optim.lr: must be a number > 0, got inf"),
        ("callbacks", "checkpoint_every_n_epochs", 0, "callbacks.checkpoint_every_n_epochs"),
    ],
)
def test_invalid_value_names_key_and_range(section, key, value, expected):
    cfg = {k: dict(v) if isinstance(v, dict) else v for k, v in GOOD.items()}
    (cfg if section is None else cfg[section])[key] = value
    with pytest.raises(ConfigError) as err:
        validate_run_config(cfg)
    assert "\n" not in str(err.value) and expected in str(err.value)


def test_a_section_that_is_not_a_mapping():
    with pytest.raises(ConfigError, match="trainer: must be a mapping"):
        validate_run_config({"trainer": 3})


def test_scalar_checks():
    check_int("k", 3, 1, 5)
    check_int("k", -1, 1, special={-1: "no limit"})
    check_int("k", None, 1, optional=True)
    check_number("k", 1, gt=0)  # an int is a number
    check_bool("k", None, optional=True)
    for call, message in (
        (lambda: check_int("k", 6, 1, 5), "k: must be an integer in [1, 5], got 6"),
        (lambda: check_int("k", "3", 1), "k: must be an integer >= 1, got '3'"),
        (lambda: check_int("k", False, 0), "k: must be an integer >= 0, got False"),
        (lambda: check_number("k", True, gt=0), "k: must be a number > 0, got True"),
        (lambda: check_number("k", 0.5, ge=1, le=2), "k: must be a number in [1, 2], got 0.5"),
        (lambda: check_bool("k", 1), "k: must be true or false, got 1"),
    ):
        with pytest.raises(ConfigError) as err:
            call()
        assert str(err.value) == message


def test_optim_unknown_key_lists_the_valid_ones():
    with pytest.raises(ConfigError, match=r"optim: unknown key\(s\) 'warmup'; valid: name, lr"):
        validate_optim_config({"warmup": 10})


def test_check_kwargs_checks_values_by_annotation_and_name():
    def builder(num_layers: int = 2, dropout: float = 0.0, flag: bool = False, note: str = ""):
        return None

    check_kwargs(builder, {"num_layers": 3, "dropout": 0.5, "flag": True, "note": "x"}, "model")
    for kwargs, message in (
        ({"num_layers": 0}, "model.num_layers: must be an integer >= 1, got 0"),
        ({"num_layers": 2.0}, "model.num_layers: must be an integer"),
        ({"dropout": 1.0}, "model.dropout: must be a number in [0, 1), got 1.0"),
        ({"flag": "no"}, "model.flag: must be true or false, got 'no'"),
    ):
        with pytest.raises(ConfigError) as err:
            check_kwargs(builder, kwargs, "model")
        assert message in str(err.value)
