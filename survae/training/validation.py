"""Checks of a run config's values before anything is built or trained.

Hydra passes ``key=value`` overrides through as strings, ints, floats or bools, so a typo such
as ``batch_size=abc`` or ``max_epochs=0`` would otherwise surface minutes later as a bare
``TypeError`` deep in Lightning, or not at all. :func:`validate_run_config` refuses each with a
one-line :class:`~survae.config_check.ConfigError` naming the key and its valid range. Keys that
are absent are not checked (their defaults are valid); model hyperparameters are checked when
the model is built (:func:`survae.config_check.check_kwargs`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytorch_lightning as pl
import torch

from survae.config_check import (
    ConfigError,
    check_bool,
    check_int,
    check_kwargs,
    check_number,
    is_int,
)
from survae.runtime.speed import validate_speed_options
from survae.training.optim import validate_optim_config

#: seeds must fit numpy's and Lightning's unsigned 32-bit seed
MAX_SEED = 2**32 - 1


def _section(cfg: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = cfg.get(key)
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigError(f"{key}: must be a mapping of keys to values, got {value!r}")
    return value


def validate_trainer_config(trainer: Mapping[str, Any]) -> None:
    """The numeric ``pytorch_lightning.Trainer`` arguments survae configs set or sweep."""
    t = trainer
    if "max_epochs" in t:
        check_int("trainer.max_epochs", t["max_epochs"], 1, optional=True, special={-1: "no limit"})
    if "max_steps" in t:
        check_int("trainer.max_steps", t["max_steps"], 1, special={-1: "no limit"})
    for key in ("min_epochs", "min_steps"):
        if key in t:
            check_int(f"trainer.{key}", t[key], 0, optional=True)
    if "gradient_clip_val" in t:
        check_number("trainer.gradient_clip_val", t["gradient_clip_val"], ge=0.0, optional=True)
    if "accumulate_grad_batches" in t:
        check_int("trainer.accumulate_grad_batches", t["accumulate_grad_batches"], 1)
    if "check_val_every_n_epoch" in t:
        check_int("trainer.check_val_every_n_epoch", t["check_val_every_n_epoch"], 1, optional=True)
    if "log_every_n_steps" in t:
        check_int("trainer.log_every_n_steps", t["log_every_n_steps"], 1, optional=True)
    if "num_sanity_val_steps" in t:
        check_int(
            "trainer.num_sanity_val_steps", t["num_sanity_val_steps"], 0,
            optional=True, special={-1: "all"},
        )  # fmt: skip
    if t.get("val_check_interval") is not None:
        value = t["val_check_interval"]
        if isinstance(value, float):
            check_number("trainer.val_check_interval", value, gt=0.0, le=1.0)
        else:
            check_int("trainer.val_check_interval", value, 1)
    for key in ("limit_train_batches", "limit_val_batches", "limit_test_batches"):
        value = t.get(key)
        if isinstance(value, float):
            check_number(f"trainer.{key}", value, ge=0.0, le=1.0)
        elif value is not None:
            check_int(f"trainer.{key}", value, 0)
    if "fast_dev_run" in t and not isinstance(t["fast_dev_run"], bool):
        check_int("trainer.fast_dev_run", t["fast_dev_run"], 0)
    for key in ("deterministic", "enable_progress_bar", "enable_model_summary"):
        if key in t and t[key] is not None and t[key] != "warn":
            check_bool(f"trainer.{key}", t[key])
    check_kwargs(pl.Trainer, t, "trainer", values=False)
    check_accelerator(t)


#: ``trainer.accelerator`` values that need a CUDA device
_CUDA_ACCELERATORS = ("gpu", "cuda")


def check_accelerator(trainer: Mapping[str, Any]) -> None:
    """A GPU accelerator (``trainer=gpu``, ``trainer=ddp``) needs a CUDA device here, and
    ``devices`` no more than there are: refused before the model is built, not by Lightning
    after it."""
    accelerator = str(trainer.get("accelerator", "auto")).lower()
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if accelerator in _CUDA_ACCELERATORS and count == 0:
        cuda = torch.version.cuda
        build = f"CUDA {cuda}" if cuda else "a CPU-only build"
        raise ConfigError(
            f"trainer.accelerator: {accelerator!r} needs a CUDA GPU, but this machine has none "
            f"(torch {torch.__version__}, {build}); use trainer=cpu or "
            "trainer.accelerator=auto (valid here: auto, cpu)"
        )
    if accelerator == "mps" and not torch.backends.mps.is_available():
        raise ConfigError("trainer.accelerator: 'mps' is not available here; valid: auto, cpu")
    devices = trainer.get("devices")
    if accelerator in _CUDA_ACCELERATORS and is_int(devices) and devices > count:
        raise ConfigError(
            f"trainer.devices: {devices} GPUs asked for, this machine has {count}; "
            f"valid: 1..{count} or -1 (all)"
        )


def validate_data_config(data: Mapping[str, Any]) -> None:
    """The data keys every data module shares (module-specific ones are checked against the
    module's signature when it is built)."""
    if "batch_size" in data:
        check_int("data.batch_size", data["batch_size"], 1)
    if "eval_batch_size" in data:
        check_int("data.eval_batch_size", data["eval_batch_size"], 1, optional=True)
    if "num_workers" in data:
        check_int("data.num_workers", data["num_workers"], 0)
    for key in ("seed", "data_seed"):
        if key in data:
            check_int(f"data.{key}", data[key], 0, MAX_SEED)
    for key in ("download", "check_integrity", "drop_last"):
        if key in data:
            check_bool(f"data.{key}", data[key])
    if "pin_memory" in data:
        check_bool("data.pin_memory", data["pin_memory"], optional=True)


def validate_callbacks_config(callbacks: Mapping[str, Any]) -> None:
    """Checkpoint frequency, early stopping and sample figures."""
    if "checkpoint_every_n_epochs" in callbacks:
        check_int("callbacks.checkpoint_every_n_epochs", callbacks["checkpoint_every_n_epochs"], 1)
    if "checkpoint_every_n_steps" in callbacks:
        check_int(
            "callbacks.checkpoint_every_n_steps",
            callbacks["checkpoint_every_n_steps"],
            1,
            optional=True,
        )
    if "checkpoint_every_minutes" in callbacks:
        check_number(
            "callbacks.checkpoint_every_minutes",
            callbacks["checkpoint_every_minutes"],
            gt=0.0,
            optional=True,
        )
    if "rich_progress_bar" in callbacks:
        check_bool("callbacks.rich_progress_bar", callbacks["rich_progress_bar"])
    if "progress_every_n_steps" in callbacks:
        check_int("callbacks.progress_every_n_steps", callbacks["progress_every_n_steps"], 1)
    early = callbacks.get("early_stopping") or {}
    if isinstance(early, Mapping):
        check_int("callbacks.early_stopping.patience", early.get("patience"), 1, optional=True)
        check_number(
            "callbacks.early_stopping.min_delta", early.get("min_delta"), ge=0.0, optional=True
        )
    samples = callbacks.get("samples") or {}
    if isinstance(samples, Mapping):
        if "every_n_epochs" in samples:
            check_int("callbacks.samples.every_n_epochs", samples["every_n_epochs"], 0)
        if "num_samples" in samples:
            check_int("callbacks.samples.num_samples", samples["num_samples"], 1)
        if "temperature" in samples:
            check_number("callbacks.samples.temperature", samples["temperature"], gt=0.0)


#: what a sweeper may optimise (``survae.app.cli.sweep_objective``): never a test metric
OBJECTIVES = ("val_best", "val_last")


def validate_run_config(cfg: Mapping[str, Any]) -> None:
    """Raise :class:`~survae.config_check.ConfigError` naming the first invalid value.

    Checks ``seed``, ``test``, ``test_iw_samples``, ``test_iw_chunk``, ``check_finite``,
    ``ema_decay``, the numeric ``trainer`` arguments, the shared ``data`` keys, ``callbacks``
    the whole ``optim`` group (:func:`~survae.training.optim.validate_optim_config`), the
    ``speed`` options, the ``trainer`` keys (any ``pytorch_lightning.Trainer`` argument) and
    whether its accelerator exists on this machine.
    """
    if "seed" in cfg:
        check_int("seed", cfg["seed"], 0, MAX_SEED)
    if "test" in cfg:
        check_bool("test", cfg["test"])
    if "test_iw_samples" in cfg:
        check_int("test_iw_samples", cfg["test_iw_samples"], 1)
    if "test_iw_chunk" in cfg:
        check_int("test_iw_chunk", cfg["test_iw_chunk"], 1, optional=True)
    if "check_finite" in cfg:
        check_bool("check_finite", cfg["check_finite"])
    if "ema_decay" in cfg:
        check_number("ema_decay", cfg["ema_decay"], gt=0.0, lt=1.0, optional=True)
    for key in ("force_resume", "trust_checkpoint", "trust_config"):
        if key in cfg:
            check_bool(key, cfg[key])
    objective = cfg.get("objective", "val_best")
    if objective not in OBJECTIVES:
        raise ConfigError(
            f"objective: must be one of {', '.join(OBJECTIVES)} (sweepers tune on validation, "
            f"never on test), got {objective!r}"
        )
    if cfg.get("test_checkpoint", "best") not in ("best", "last"):
        raise ConfigError(
            f"test_checkpoint: must be best or last, got {cfg.get('test_checkpoint')!r}"
        )
    imports = cfg.get("imports") or []
    if not isinstance(imports, list | tuple) or not all(isinstance(m, str) for m in imports):
        raise ConfigError(f"imports: must be a list of module names, got {imports!r}")
    validate_trainer_config(_section(cfg, "trainer"))
    validate_data_config(_section(cfg, "data"))
    validate_callbacks_config(_section(cfg, "callbacks"))
    validate_optim_config(_section(cfg, "optim"))
    validate_speed_options(_section(cfg, "speed"))
