"""Experiment loggers: W&B by default (offline when there is no API key), CSV, TensorBoard.

W&B runs are quiet (no banners, tips or sync reminders on the console) and are written under
the run folder, ``<output_dir>/wandb/offline-run-*`` when offline (under ``logger.dir`` when
set: a sweep's jobs share ``<sweep>/wandb/``); upload them later with ``wandb sync
<dir>/wandb/offline-run-*``. A run keeps its W&B id in ``<output_dir>/wandb-run-id``, so a
requeued or resumed run continues the same W&B run. W&B's service process is started with the
scheduler's time-limit signals blocked, and a run survives the loss of the service (Slurm
signals every process of a job; on a preemption's SIGTERM the service exits): logging calls that
fail then are dropped with one warning, so the run still saves its checkpoint and stops
cleanly, and the requeued job continues the W&B run. :func:`finish_logger` closes a run and
marks it failed when the training failed.
"""

from __future__ import annotations

import netrc
import os
import secrets
import sys
import warnings
from collections.abc import Mapping
from typing import Any

from pytorch_lightning.loggers import CSVLogger, Logger, TensorBoardLogger, WandbLogger
from pytorch_lightning.utilities import rank_zero_only

from survae.config_check import ConfigError
from survae.training.run_folder import atomic_write_text
from survae.training.slurm import scheduler_signals_blocked

LOGGERS = ("wandb", "csv", "tensorboard", "none")
#: the file in a run folder that holds the run's W&B id
WANDB_ID_FILE = "wandb-run-id"


def wandb_credentials_present() -> bool:
    """Whether an API key is configured (env var or ~/.netrc); decides online vs offline."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        path = os.path.expanduser("~/.netrc")
        return os.path.exists(path) and netrc.netrc(path).authenticators("api.wandb.ai") is not None
    except (OSError, netrc.NetrcParseError):
        return False


def resolve_wandb_mode(mode: str | None) -> str:
    """``WANDB_MODE`` if set, else the config's mode; ``auto`` is online only with credentials."""
    mode = os.environ.get("WANDB_MODE") or mode or "auto"
    if mode == "auto":
        return "online" if wandb_credentials_present() else "offline"
    return mode


def build_logger(
    cfg: Mapping[str, Any], save_dir: str, run_config: Mapping[str, Any] | None = None
) -> Logger | None:
    """A Lightning logger from ``{type, project, name, tags, group, mode, ...}``."""
    kind = cfg.get("type", "wandb")
    if kind not in LOGGERS:
        raise ConfigError(f"logger.type: unknown logger {kind!r}; valid: {', '.join(LOGGERS)}")
    name = cfg.get("name")
    if kind == "none":
        return None
    if kind == "csv":
        _keep_earlier_metrics(os.path.join(save_dir, name or "csv"))
        return CSVLogger(save_dir=save_dir, name=name or "csv", version="")
    if kind == "tensorboard":
        return TensorBoardLogger(save_dir=save_dir, name=name or "tensorboard", version="")
    mode = resolve_wandb_mode(cfg.get("mode"))
    os.environ.setdefault("WANDB_SILENT", "true")  # no banners, tips or sync reminders
    run_id = wandb_run_id(save_dir)
    wandb_dir = str(cfg.get("dir") or save_dir)
    os.makedirs(wandb_dir, exist_ok=True)
    try:
        logger = _wandb_logger(cfg, name, wandb_dir, mode, run_id)
    except Exception as err:  # no network, bad key, server down: keep the run, log offline
        if mode != "online":
            raise
        warnings.warn(f"W&B could not start online ({err}); logging offline instead", stacklevel=2)
        logger = _wandb_logger(cfg, name, wandb_dir, "offline", run_id)
    if run_config is not None:
        logger.log_hyperparams(dict(run_config))
    return logger


def _keep_earlier_metrics(folder: str) -> None:
    """A resumed (requeued) run's CSV logger would delete the ``metrics.csv`` of its earlier
    sessions: keep it as ``metrics-<n>.csv`` (n = 1, 2, ... in session order)."""
    path = os.path.join(folder, "metrics.csv")
    if rank_zero_only.rank != 0 or not os.path.isfile(path):
        return
    n = 1
    while os.path.exists(os.path.join(folder, f"metrics-{n}.csv")):
        n += 1
    os.replace(path, os.path.join(folder, f"metrics-{n}.csv"))


def wandb_run_id(run_dir: str) -> str:
    """The W&B id of the run in ``run_dir``: the one it had (a requeued or resumed run
    continues its W&B run), else a new one, recorded there."""
    path = os.path.join(run_dir, WANDB_ID_FILE)
    try:
        with open(path) as f:
            run_id = f.read().strip()
        if run_id:
            return run_id
    except OSError:
        pass
    run_id = secrets.token_hex(4)
    if rank_zero_only.rank == 0:  # a distributed run's logger lives on rank 0
        atomic_write_text(path, run_id + "\n")
    return run_id


class ResilientWandbLogger(WandbLogger):
    """Lightning's W&B logger whose logging calls, once W&B's service process is gone (killed
    by the scheduler's signal), are dropped with one warning instead of failing the run."""

    _service_lost = False

    def _guarded(self, method: Any, *args: Any) -> Any:
        if self._service_lost:
            return None
        try:
            return method(*args)
        except (ConnectionError, OSError) as err:
            self._service_lost = True
            warnings.warn(f"W&B's service is gone ({err}); no more W&B logging", stacklevel=3)
            return None

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        self._guarded(super().log_metrics, metrics, step)

    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        self._guarded(super().log_hyperparams, params)

    def after_save_checkpoint(self, checkpoint_callback: Any) -> None:
        self._guarded(super().after_save_checkpoint, checkpoint_callback)


def _wandb_logger(
    cfg: Mapping[str, Any], name: str | None, save_dir: str, mode: str, run_id: str
) -> WandbLogger:
    kwargs: dict[str, Any] = {"mode": mode} if mode == "disabled" else {}
    logger = ResilientWandbLogger(
        id=run_id,
        resume="allow",
        project=cfg.get("project", "survae"),
        entity=cfg.get("entity"),
        name=name,
        group=cfg.get("group"),
        tags=list(cfg.get("tags") or []),
        save_dir=save_dir,
        offline=mode == "offline",
        log_model=False,
        settings={
            "init_timeout": float(cfg.get("init_timeout", 60)),
            "silent": True,
            "quiet": True,
        },
        **kwargs,
    )
    # Lightning passes ``anonymous=None``, which W&B >= 0.19 answers with a deprecation warning
    getattr(logger, "_wandb_init", {}).pop("anonymous", None)
    with scheduler_signals_blocked():  # W&B's service (started now) inherits the block
        _ = logger.experiment  # start now, so a failure to connect is caught here (bounded wait)
    return logger


def wandb_run_dir(logger: Logger | None) -> str | None:
    """The folder of a started W&B run (``.../wandb/offline-run-*`` when offline), else None."""
    run = getattr(logger, "_experiment", None) if isinstance(logger, WandbLogger) else None
    run_dir = getattr(run, "dir", None)  # <run folder>/files
    return os.path.dirname(run_dir) if run_dir else None


def finish_logger(logger: Logger | None, failed: bool) -> str | None:
    """Close a run's logger once training is over or has failed.

    A W&B run is finished with exit code 1 when ``failed`` (W&B shows it as failed, not as
    running or crashed, and ``survae/status`` in its summary says ``failed`` for
    ``scripts/report.py``), else 0; a run that never started is left alone. Other loggers get
    Lightning's ``finalize("failed" | "success")``. Returns the W&B run's folder when it was
    logged offline (what ``wandb sync`` uploads), else None.
    """
    if logger is None:
        return None
    if not isinstance(logger, WandbLogger):
        logger.finalize("failed" if failed else "success")
        return None
    return _finish_run(getattr(logger, "_experiment", None), failed)


def finish_wandb_run(failed: bool) -> str | None:
    """:func:`finish_logger` for the active W&B run of this process, where the logger object is
    out of reach (the training pipeline's exception path); nothing when W&B was never used."""
    wandb = sys.modules.get("wandb")
    return _finish_run(getattr(wandb, "run", None) if wandb is not None else None, failed)


def _finish_run(run: Any, failed: bool) -> str | None:
    """Finish a started W&B run (exit code 1 and ``survae/status`` when failed); its folder
    when it was logged offline."""
    if run is None:
        return None
    offline = getattr(run.settings, "_offline", False)
    offline_dir = os.path.dirname(run.dir) if offline and getattr(run, "dir", None) else None
    try:
        if failed:
            run.summary["survae/status"] = "failed"
        run.finish(exit_code=1 if failed else 0)
    except (ConnectionError, OSError) as err:  # the service was killed (e.g. by a scheduler)
        warnings.warn(f"W&B run {run.id} could not be finished ({err})", stacklevel=2)
        _teardown_lost_service()
    return offline_dir


def _teardown_lost_service() -> None:
    """Let go of a W&B service that is gone: its exit hook would fail again at exit (with a
    traceback), and a later run in this process needs a new one. W&B has no public call for
    this (``wandb.teardown`` also stops W&B for the process), hence the guarded look-up."""
    setup = sys.modules.get("wandb.sdk.wandb_setup")
    singleton = getattr(setup, "_singleton", None)
    connection = getattr(singleton, "_connection", None)
    cleanup = getattr(connection, "_cleanup", None)
    if callable(cleanup):
        cleanup()  # unregisters the exit hook
        singleton._connection = None
        token = sys.modules.get("wandb.sdk.lib.service.service_token")
        clear = getattr(token, "clear_service_in_env", None)
        if callable(clear):
            clear()  # the next run starts its own service instead of looking for this one
