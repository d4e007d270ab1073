"""One training run from a plain config mapping: data → model → Lightning → logger.

The mapping has the groups ``data``, ``model``, ``optim``, ``trainer``, ``logger``,
``callbacks``, ``paths`` plus ``seed``, ``ckpt_path`` and ``test``; ``run.py`` composes it with
Hydra, but nothing here depends on Hydra.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import (
    EarlyStopping,
    LearningRateMonitor,
    ModelCheckpoint,
    RichProgressBar,
)

from survae import registry
from survae.config_check import ConfigError, check_kwargs
from survae.threads import configure_threads
from survae.training.callbacks import SampleFigures
from survae.training.checkpoint import AtomicCheckpointIO, RNGStateCallback
from survae.training.loggers import build_logger
from survae.training.module import FlowModule


def build_datamodule(cfg: Mapping[str, Any], seed: int) -> pl.LightningDataModule:
    """The registered data module named by ``data.name`` with the other ``data`` keys."""
    cfg = dict(cfg)
    if "name" not in cfg:
        raise ConfigError(
            f"data.name is missing; valid: {', '.join(registry.available('dataset'))}"
        )
    cls = registry.get("dataset", cfg.pop("name"))
    cfg.setdefault("seed", seed)  # every FlowDataModule takes the run seed (training shuffle)
    check_kwargs(cls, cfg, "data")
    return cls(**cfg)


def data_info(dm: pl.LightningDataModule) -> dict[str, Any]:
    """What the model needs to know about the data (plain values, stored in checkpoints)."""
    return {
        "name": getattr(dm, "name", type(dm).__name__),
        "kind": dm.kind,
        "shape": list(dm.shape),
        "num_bins": getattr(dm, "num_bins", None),
        **conditional_info(dm),
    }


def conditional_info(dm: pl.LightningDataModule) -> dict[str, Any]:
    """For ``data.conditional=true``: the context size, the class count (labelled sets) and
    the contexts sample figures show; empty for unconditional data (so its info is unchanged)."""
    size = getattr(dm, "context_size", None)
    if not size:
        return {}
    contexts = dm.sample_contexts()
    return {
        "context_features": int(size),
        "num_classes": getattr(dm, "num_classes", None),
        "sample_contexts": None if contexts is None else contexts.tolist(),
    }


def build_callbacks(
    cfg: Mapping[str, Any], ckpt_dir: str, out_dir: str, metric: Any, has_logger: bool = True
) -> list:
    """Checkpointing (best and last, atomic), RNG state, early stopping, LR monitor, samples,
    progress bar."""
    cbs: list[pl.Callback] = [RNGStateCallback()]
    monitor = f"val/{metric.name}"
    cbs.append(
        ModelCheckpoint(
            dirpath=ckpt_dir,
            filename="best-{epoch:03d}-{step}",
            monitor=monitor,
            mode="max" if metric.higher_is_better else "min",
            save_last=True,
            save_top_k=1,
            auto_insert_metric_name=False,
            every_n_epochs=int(cfg.get("checkpoint_every_n_epochs", 1)),
        )
    )
    early = cfg.get("early_stopping") or {}
    if early.get("patience") is not None:  # MAF: stop after 30 epochs without improvement
        cbs.append(
            EarlyStopping(
                monitor=monitor,
                mode="max" if metric.higher_is_better else "min",
                patience=int(early["patience"]),
                min_delta=float(early.get("min_delta", 0.0)),
            )
        )
    if cfg.get("lr_monitor", True) and has_logger:
        cbs.append(LearningRateMonitor(logging_interval="step"))
    samples = cfg.get("samples") or {}
    if samples.get("every_n_epochs", 0) > 0:
        cbs.append(
            SampleFigures(
                folder=os.path.join(out_dir, "samples"),
                every_n_epochs=int(samples["every_n_epochs"]),
                num_samples=int(samples.get("num_samples", 64)),
                temperature=float(samples.get("temperature", 1.0)),
            )
        )
    if cfg.get("rich_progress_bar", True):
        cbs.append(RichProgressBar(leave=True))
    return cbs


def train(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """Fit, test, and return ``{"checkpoint", "test", "metric", "output_dir"}``."""
    seed = int(cfg.get("seed", 0))
    pl.seed_everything(seed, workers=True)
    out_dir = str(cfg["paths"]["output_dir"])
    ckpt_dir = os.path.join(out_dir, "checkpoints")
    Path(out_dir).mkdir(parents=True, exist_ok=True)

    dm = build_datamodule(cfg["data"], seed)
    info = data_info(dm)
    module = FlowModule(
        model_spec=dict(cfg["model"]),
        data_info=info,
        optim=dict(cfg.get("optim") or {}),
        ema_decay=cfg.get("ema_decay"),
        test_iw_samples=int(cfg.get("test_iw_samples", 1)),
        test_iw_chunk=cfg.get("test_iw_chunk"),
        check_finite=bool(cfg.get("check_finite", True)),
        nonfinite_checkpoint_dir=ckpt_dir,
        data_config=dict(cfg["data"]),
        speed=dict(cfg.get("speed") or {}),
    )
    num_params = sum(p.numel() for p in module.model.parameters())
    print(f"[survae] model: {num_params:,} parameters; data: {info['name']} {tuple(info['shape'])}")
    configure_threads(  # intra-op threads from the cores this run really has (survae.threads)
        cfg.get("threads", "auto"),
        dataloader_workers=int(cfg["data"].get("num_workers") or 0),
        data_kind=info["kind"],
        num_params=num_params,
    )

    logger = build_logger(cfg.get("logger") or {"type": "none"}, out_dir, run_config=cfg)
    callbacks = build_callbacks(
        cfg.get("callbacks") or {}, ckpt_dir, out_dir, module.metric, logger is not None
    )
    trainer_kwargs = dict(cfg.get("trainer") or {})
    check_kwargs(pl.Trainer, trainer_kwargs, "trainer")
    trainer = pl.Trainer(
        **trainer_kwargs,
        logger=logger if logger is not None else False,
        callbacks=callbacks,
        plugins=[AtomicCheckpointIO()],
        default_root_dir=out_dir,
    )
    if logger is not None:
        logger.log_hyperparams(
            {"num_parameters": num_params, "likelihood": "exact" if module.model.exact else "bound"}
        )

    started = time.time()
    trainer.fit(module, datamodule=dm, ckpt_path=cfg.get("ckpt_path"))
    fit_seconds = time.time() - started

    ckpt_cb = trainer.checkpoint_callback
    best = getattr(ckpt_cb, "best_model_path", "") or getattr(ckpt_cb, "last_model_path", "")
    results: dict[str, Any] = {
        "checkpoint": best,
        "metric": module.metric.name,
        "output_dir": out_dir,
    }
    if cfg.get("test", True):
        ckpt = best if best and not trainer_kwargs.get("fast_dev_run") else None
        tested = trainer.test(module, datamodule=dm, ckpt_path=ckpt, verbose=False)
        results["test"] = tested[0] if tested else {}
    value = results.get("test", {}).get(f"test/{module.metric.name}")
    exact = "exact" if module.model.exact else "bound"
    print(f"[survae] checkpoint: {best or '(none written)'}")
    if value is not None:
        print(f"[survae] test/{module.metric.name} = {value:.4f} ({exact})")
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()
    if trainer.is_global_zero:
        write_run_record(
            out_dir, cfg, results, trainer, num_params, fit_seconds, module.model.exact
        )
    return results


def hardware_description() -> str:
    """The accelerator (or CPU) a run used, for result tables."""
    if torch.cuda.is_available():
        return f"{torch.cuda.device_count()}x {torch.cuda.get_device_name(0)}"
    return f"CPU ({os.cpu_count()} cores, {platform.processor() or platform.machine()})"


def write_run_record(
    out_dir: str,
    cfg: Mapping[str, Any],
    results: Mapping[str, Any],
    trainer: pl.Trainer,
    num_params: int,
    fit_seconds: float,
    exact: bool,
) -> str:
    """``results.json`` in the run folder: what ``scripts/report.py`` tabulates."""
    metric = results["metric"]
    record = {
        "experiment": cfg.get("task_name"),
        "metric": metric,
        "test": results.get("test", {}).get(f"test/{metric}"),
        "exact": exact,
        "test_iw_samples": int(cfg.get("test_iw_samples", 1)),
        "steps": int(trainer.global_step),
        "epochs": int(trainer.current_epoch),
        "wall_time_s": round(fit_seconds, 1),
        "hardware": hardware_description(),
        "num_parameters": num_params,
        "seed": cfg.get("seed"),
        "command": " ".join(sys.argv),
        "checkpoint": results.get("checkpoint"),
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
    }
    path = os.path.join(out_dir, "results.json")
    with open(path, "w") as f:
        json.dump(record, f, indent=2)
    return path
