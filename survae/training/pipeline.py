"""One training run from a plain config mapping: data → model → Lightning → logger.

The mapping has the groups ``data``, ``model``, ``optim``, ``trainer``, ``logger``,
``callbacks``, ``paths`` plus ``seed``, ``ckpt_path`` and ``test``; ``run.py`` composes it with
Hydra, but nothing here depends on Hydra.
"""

from __future__ import annotations

import datetime
import importlib
import json
import os
import platform
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import (
    EarlyStopping,
    LearningRateMonitor,
    ModelCheckpoint,
)
from pytorch_lightning.utilities.exceptions import SIGTERMException

from survae import registry
from survae.checkpoints import load_checkpoint
from survae.config_check import ConfigError, check_kwargs
from survae.data.fake import fake_data_marker
from survae.runtime.heap import retain_heap
from survae.runtime.threads import configure_threads
from survae.training import slurm
from survae.training.callbacks import SampleFigures
from survae.training.checkpoint import (
    AtomicCheckpointIO,
    ExactResumeState,
    LatestCheckpoint,
    RunInterruptedError,
    remove_orphan_temporaries,
)
from survae.training.loggers import build_logger, finish_logger, finish_wandb_run
from survae.training.module import FlowModule
from survae.training.progress import RunClock, ValidateAtEnd, progress_bar
from survae.training.run_folder import (
    RunFolder,
    atomic_write_text,
    check_resume_compatible,
    quiet_lightning,
    resume_command,
    write_config_record,
)
from survae.training.run_record import epochs_trained, state_and_reason, write_failure_record
from survae.training.validation import validate_run_config


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


def load_data_before_the_model(dm: pl.LightningDataModule) -> None:
    """Download (``data.download=true``) and load the splits now, so that a missing data set
    or a failed download is reported before a model is built. Only the first process of a
    node does it; the other ranks of a multi-GPU run wait for Lightning's own call."""
    if int(os.environ.get("LOCAL_RANK", "0")) == 0:
        dm.prepare_data()
        dm.setup("fit")


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
        "sample_context_labels": _context_labels(dm),
    }


def _context_labels(dm: pl.LightningDataModule) -> list[str] | None:
    """The figures' labels of the sample contexts (data modules without names: None)."""
    labels = getattr(dm, "sample_context_labels", None)
    return labels() if callable(labels) else None


def build_callbacks(
    cfg: Mapping[str, Any],
    ckpt_dir: str,
    out_dir: str,
    metric: Any,
    has_logger: bool = True,
    show_progress: bool = True,
) -> list:
    """Checkpointing (best by the validation metric, and the latest state as ``last.ckpt``;
    both atomic), exact-resume state, a validation at the end of training, the run's clock,
    early stopping, LR monitor, samples, progress (``rich_progress_bar``: Rich's bar in a
    terminal, else plain lines every ``progress_every_n_steps`` steps and per epoch)."""
    monitor = f"val/{metric.name}"
    cbs: list[pl.Callback] = [ExactResumeState(), ValidateAtEnd(), RunClock(monitor)]
    mode = "max" if metric.higher_is_better else "min"
    cbs.append(
        ModelCheckpoint(
            dirpath=ckpt_dir,
            filename="best-{epoch:03d}-{step}",
            monitor=monitor,
            mode=mode,
            save_last=False,  # last.ckpt is LatestCheckpoint's: the latest state, not the best
            save_top_k=1,
            auto_insert_metric_name=False,
            every_n_epochs=int(cfg.get("checkpoint_every_n_epochs", 1)),
        )
    )
    cbs.append(
        LatestCheckpoint(
            ckpt_dir,
            every_n_steps=cfg.get("checkpoint_every_n_steps"),
            every_minutes=cfg.get("checkpoint_every_minutes"),
        )
    )
    early = cfg.get("early_stopping") or {}
    if early.get("patience") is not None:  # MAF: stop after 30 epochs without improvement
        cbs.append(
            EarlyStopping(
                monitor=monitor,
                mode=mode,
                patience=int(early["patience"]),
                min_delta=float(early.get("min_delta", 0.0)),
                strict=False,  # a run shorter than one validation has nothing to monitor yet
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
                title=samples.get("title"),
            )
        )
    if show_progress:
        every = int(cfg.get("progress_every_n_steps") or 50)
        cbs.append(progress_bar(bool(cfg.get("rich_progress_bar", True)), every))
    return cbs


def import_user_modules(modules: Sequence[str] | None) -> None:
    """Import the modules a config lists under ``imports`` (the user's own layers, networks or
    data sets register themselves on import); a module that cannot be imported stops the run."""
    for name in modules or []:
        try:
            importlib.import_module(str(name))
        except ImportError as err:
            raise ConfigError(
                f"imports: cannot import {name!r} ({err}); put its folder on PYTHONPATH "
                "or install it"
            ) from None


def train(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """Fit, test, and return ``{"checkpoint", "test", "val", "metric", "output_dir"}``.

    The run owns ``paths.output_dir`` while it runs (a second run there is refused). If the
    folder already holds a ``last.ckpt`` and no ``ckpt_path`` is given (a requeued job), the run
    continues from it. A resumed run refuses a checkpoint whose model or data spec differs from
    the config unless ``force_resume``. SIGTERM or Ctrl-C saves ``last.ckpt`` and returns with
    ``results["interrupted"]`` set and no test.
    """
    validate_run_config(cfg)
    import_user_modules(cfg.get("imports"))
    seed = int(cfg.get("seed", 0))
    pl.seed_everything(seed, workers=True, verbose=False)
    out_dir = str(cfg["paths"]["output_dir"])
    ckpt_dir = os.path.join(out_dir, "checkpoints")
    stage = {"trained": False}  # set once training starts: see write_failure_record
    with RunFolder(out_dir), quiet_lightning():
        try:
            return _train_in_folder(cfg, seed, out_dir, ckpt_dir, stage)
        except BaseException as err:
            write_failure_record(out_dir, cfg, err, trained=stage["trained"])
            finish_wandb_run(failed=True)  # W&B shows the run as failed, not as running
            raise


def _checkpoint_to_resume(cfg: Mapping[str, Any], ckpt_dir: str) -> str | None:
    """The checkpoint this run continues from: ``ckpt_path``, else the folder's own
    ``last.ckpt`` (a stopped or requeued run), checked against the config; None for a new run."""
    for path in remove_orphan_temporaries(ckpt_dir) if os.path.isdir(ckpt_dir) else []:
        print(f"[survae] removed {path}: left by a checkpoint write that was killed")
    ckpt_path = cfg.get("ckpt_path")
    latest = os.path.join(ckpt_dir, LatestCheckpoint.FILENAME)
    if ckpt_path is None and os.path.isfile(latest):
        ckpt_path = latest  # this folder's run was stopped (e.g. a requeued job): continue it
    if ckpt_path is not None:
        trust = bool(cfg.get("trust_checkpoint", False))
        check_resume_compatible(
            load_checkpoint(ckpt_path, trust=trust), cfg, str(ckpt_path), cfg.get("force_resume")
        )
    return ckpt_path


def _build_module(cfg: Mapping[str, Any], seed: int, ckpt_dir: str) -> tuple[Any, FlowModule, int]:
    """The data module, the Lightning module of the config and its number of parameters, with
    the process's threads and heap set for them."""
    dm = build_datamodule(cfg["data"], seed)
    load_data_before_the_model(dm)
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
        loss=dict(cfg.get("loss") or {}),
        imports=list(cfg.get("imports") or []),
    )
    num_params = sum(p.numel() for p in module.model.parameters())
    print(f"[survae] model: {num_params:,} parameters; data: {info['name']} {tuple(info['shape'])}")
    configure_threads(  # intra-op threads from the cores this run really has (runtime.threads)
        cfg.get("threads", "auto"),
        dataloader_workers=int(cfg["data"].get("num_workers") or 0),
        data_kind=info["kind"],
        num_params=num_params,
    )
    if cfg.get("retain_heap", True) and retain_heap():  # no page faults re-paid every step
        print("[survae] heap: freed memory stays in the process (retain_heap=true)")
    return dm, module, num_params


def _build_trainer(
    cfg: Mapping[str, Any], module: FlowModule, num_params: int, out_dir: str, ckpt_dir: str
) -> tuple[pl.Trainer, Any]:
    """The Lightning trainer of the config, with survae's callbacks, atomic checkpoint writes
    and the logger (None when ``logger.type`` is none)."""
    logger = build_logger(cfg.get("logger") or {"type": "none"}, out_dir, run_config=cfg)
    trainer_kwargs = dict(cfg.get("trainer") or {})
    check_kwargs(pl.Trainer, trainer_kwargs, "trainer")
    show_progress = trainer_kwargs.get("enable_progress_bar", True) is not False
    callbacks = build_callbacks(
        cfg.get("callbacks") or {}, ckpt_dir, out_dir, module.metric, logger is not None,
        show_progress,
    )  # fmt: skip
    # the logger has the run's config already: the module's arguments again (model_spec,
    # data_config) would list every value twice
    trainer_kwargs.setdefault("enable_autolog_hparams", False)
    slurm.silence_srun_hint()  # for the duration of quiet_lightning()
    trainer = pl.Trainer(
        **trainer_kwargs,
        logger=logger if logger is not None else False,
        callbacks=callbacks,
        plugins=[AtomicCheckpointIO()],
        default_root_dir=out_dir,
    )
    if logger is not None:
        exact = "exact" if module.model.exact else "bound"
        info = module.hparams.get("data_info") or {}
        extra = {
            "num_parameters": num_params,
            "likelihood": exact,
            "data_kind": info.get("kind"),
            "data_shape": list(info.get("shape") or []),
        }
        if (cfg.get("logger") or {}).get("type", "wandb") != "wandb":  # W&B has it already
            extra = {**cfg, **extra}
        logger.log_hyperparams(extra)
    return trainer, logger


def _fit(
    trainer: pl.Trainer, module: FlowModule, dm: Any, ckpt_path: str | None, trust: bool
) -> tuple[str | None, float]:
    """Train; returns the name of the signal that stopped training (None: it finished) and
    the seconds it took."""
    started = time.time()
    interrupted: str | None = None
    try:
        trainer.fit(module, datamodule=dm, ckpt_path=ckpt_path, weights_only=not trust)
    except RunInterruptedError as stop:
        interrupted = stop.signame
    except SIGTERMException:  # SIGTERM outside a training step (e.g. in validation)
        interrupted = "SIGTERM"
    return interrupted, time.time() - started


def _tests_best(cfg: Mapping[str, Any]) -> bool:
    """Whether the tested weights are the best-validation ones (else the final ones)."""
    return cfg.get("test_checkpoint", "best") == "best"


def _fit_results(
    cfg: Mapping[str, Any],
    trainer: pl.Trainer,
    module: FlowModule,
    out_dir: str,
    latest: str,
    interrupted: str | None,
) -> dict[str, Any]:
    """The checkpoints (the tested one first), the validation values and the stop reason."""
    ckpt_cb = trainer.checkpoint_callback
    best = getattr(ckpt_cb, "best_model_path", "") or ""
    last = latest if os.path.isfile(latest) else ""
    # the weights that are (or would be) tested: best by validation, or the final ones
    use_best = _tests_best(cfg)
    metric = module.metric.name
    last_val = trainer.callback_metrics.get(f"val/{metric}")
    if last_val is None:  # this session did not validate (e.g. resumed at its end)
        clock = next((c for c in trainer.callbacks if isinstance(c, RunClock)), None)
        last_val = clock.last_value if clock is not None else None
    return {
        "checkpoint": (best or last) if use_best else last,
        "best_checkpoint": best,
        "last_checkpoint": last,
        "metric": metric,
        "output_dir": out_dir,
        "val": {
            "best": _as_float(getattr(ckpt_cb, "best_model_score", None)),
            "last": _as_float(last_val),
        },
        "interrupted": interrupted,
        "epochs": epochs_trained(trainer),  # before testing replaces the trainer's loaders
    }


def _test(
    cfg: Mapping[str, Any], trainer: pl.Trainer, module: FlowModule, dm: Any, results: dict
) -> None:
    """Test the chosen weights into ``results["test"]`` (or say how to continue a stopped
    run), and print the checkpoint and the test value."""
    metric, out_dir = results["metric"], results["output_dir"]
    if results["interrupted"]:
        print(
            f"[survae] stopped by {results['interrupted']} at step {trainer.global_step}; latest "
            f"state: {results['last_checkpoint']}\n"
            + (
                "[survae] the Slurm job is requeued and continues from there"
                if slurm.requeues_itself(results["interrupted"])
                else f"[survae] continue with: {resume_command(out_dir)}"
            )
        )
    elif cfg.get("test", True):
        # best: the best-validation weights; last: the final (in-memory) weights, as the
        # SurVAE code tests
        best = results["best_checkpoint"]
        use_best = _tests_best(cfg)
        fast_dev_run = dict(cfg.get("trainer") or {}).get("fast_dev_run")
        ckpt = best if use_best and best and not fast_dev_run else None
        tested = trainer.test(module, datamodule=dm, ckpt_path=ckpt, verbose=False)
        results["test"] = tested[0] if tested else {}
        results["tested"] = "best" if ckpt else "last"  # what was tested, not what was asked
        if not ckpt:
            results["checkpoint"] = results["last_checkpoint"]
    value = results.get("test", {}).get(f"test/{metric}")
    exact = "exact" if module.model.exact else "bound"
    print(f"[survae] checkpoint: {results['checkpoint'] or '(none written)'}")
    if value is not None:
        print(f"[survae] test/{metric} = {value:.4f} ({exact})")


def _train_in_folder(
    cfg: Mapping[str, Any], seed: int, out_dir: str, ckpt_dir: str, stage: dict[str, bool]
) -> dict:
    ckpt_path = _checkpoint_to_resume(cfg, ckpt_dir)
    write_config_record(out_dir, cfg)
    dm, module, num_params = _build_module(cfg, seed, ckpt_dir)
    trainer, logger = _build_trainer(cfg, module, num_params, out_dir, ckpt_dir)
    if ckpt_path is not None:
        print(f"[survae] resuming from {ckpt_path}")
    trust = bool(cfg.get("trust_checkpoint", False))
    stage["trained"] = True
    interrupted, fit_seconds = _fit(trainer, module, dm, ckpt_path, trust)
    latest = os.path.join(ckpt_dir, LatestCheckpoint.FILENAME)
    results = _fit_results(cfg, trainer, module, out_dir, latest, interrupted)
    _test(cfg, trainer, module, dm, results)
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()
    if trainer.is_global_zero:
        write_run_record(
            out_dir, cfg, results, trainer, num_params, fit_seconds, module.model.exact
        )
    # close the W&B run now (in-process sweep jobs would otherwise share it); an interrupted
    # run shows as not completed
    finish_logger(logger, failed=bool(interrupted))
    return results


def _as_float(value: Any) -> float | None:
    return None if value is None else float(value)


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
    run_info = cfg.get("run_info") or {}
    state, reason = state_and_reason(results, int(trainer.global_step))
    clock = next((c for c in trainer.callbacks if isinstance(c, RunClock)), None)
    total_seconds = clock.total_seconds() if clock is not None else fit_seconds
    data_cfg = cfg.get("data") or {}
    data_name = data_cfg.get("name")
    marker = fake_data_marker(data_name, data_cfg.get("root"))
    record = {
        "experiment": cfg.get("task_name"),
        "run_name": cfg.get("task_name"),
        "overrides": list(run_info.get("overrides") or []),
        "data_name": data_name,
        "fake_data": marker is not None,  # the stand-in writer's marker, never the name
        "fake_data_marker": marker["path"] if marker else None,
        "debug": bool(run_info.get("debug") or (cfg.get("trainer") or {}).get("fast_dev_run")),
        "state": state,  # finished | interrupted (failed, diverged: write_failure_record)
        "reason": reason,
        "finished": not results.get("interrupted"),
        "interrupted": results.get("interrupted"),
        "metric": metric,
        "val": results.get("val", {}).get("best"),
        "val_last": results.get("val", {}).get("last"),
        "test": results.get("test", {}).get(f"test/{metric}"),
        "exact": exact,
        "test_iw_samples": int(cfg.get("test_iw_samples", 1)),
        "steps": int(trainer.global_step),
        "epochs": results.get("epochs"),  # a fraction: survae.training.run_record
        "completed_epochs": int(results.get("epochs") or 0),
        "wall_time_s": round(total_seconds, 1),  # all sessions of a resumed run
        "session_wall_time_s": round(fit_seconds, 1),
        "hardware": hardware_description(),
        "num_parameters": num_params,
        "seed": cfg.get("seed"),
        "command": run_info.get("command") or " ".join(sys.argv),
        "checkpoint": results.get("checkpoint"),  # the tested weights
        "test_checkpoint": results.get("tested") or cfg.get("test_checkpoint", "best"),
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
    }
    path = os.path.join(out_dir, "results.json")
    atomic_write_text(path, json.dumps(record, indent=2))
    return path
