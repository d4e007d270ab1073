"""Evaluating trained checkpoints: importance-weighted likelihoods and sample quality.

The commands (``survae-eval-loglik``, ``survae-eval-sample``: :mod:`survae.app.eval_loglik`,
:mod:`survae.app.eval_sample`) check their inputs with
:func:`check_output_path` and :func:`survae.runtime.devices.check_device` before any work, and show
progress with :func:`progress_iter`.
"""

from __future__ import annotations

import itertools
import math
import os
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

import torch

from survae.checkpoints import import_saved_modules, load_checkpoint, saved_imports
from survae.flows import Flow
from survae.metrics import importance_weighted_log_prob, metric_for
from survae.models import model_from_checkpoint

T = TypeVar("T")


def progress_iter(
    items: Iterable[T], description: str, total: int | None = None, enabled: bool = True
) -> Iterator[T]:
    """``items`` with a progress bar on stderr (rich: count, elapsed and remaining time);
    ``total`` defaults to ``len(items)``. With ``enabled`` false, just ``items``."""
    if not enabled:
        yield from items
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=Console(stderr=True)) as bar:
        task = bar.add_task(description, total=total)
        for item in items:
            yield item
            bar.advance(task)


def check_output_path(path: str | os.PathLike | None, option: str) -> None:
    """``FileNotFoundError`` naming ``option`` when ``path``'s folder does not exist or is not
    writable (checked before the work whose result would be lost)."""
    if path is None:
        return
    folder = Path(path).expanduser().resolve().parent
    if not folder.is_dir():
        raise FileNotFoundError(f"{option} {path}: the folder {folder} does not exist")
    if not os.access(folder, os.W_OK):
        raise PermissionError(f"{option} {path}: the folder {folder} is not writable")


def input_errors() -> tuple[type[BaseException], ...]:
    """Exceptions that mean a bad input to an evaluation script (a missing or unsafe
    checkpoint, data set or weights file, an absent device, a bad option): the scripts print
    their one-line message instead of a traceback."""
    from survae.checkpoints import CheckpointError
    from survae.config_check import ConfigError
    from survae.data.errors import DatasetCorruptedError
    from survae.runtime.devices import DeviceUnavailableError

    return (
        CheckpointError,
        ConfigError,
        DatasetCorruptedError,
        DeviceUnavailableError,
        FileNotFoundError,  # also DatasetNotFoundError and missing Inception weights
        PermissionError,
        IsADirectoryError,
    )


def checkpoint_hparams(path: str | Path, trust: bool = False) -> dict[str, Any]:
    """The hyperparameters stored in a training checkpoint (model spec, data info/config),
    read without running code unless ``trust``."""
    return dict(load_checkpoint(path, trust=trust)["hyper_parameters"])


def datamodule_from_checkpoint(
    path: str | Path, trust: bool = False, trust_config: bool = False, **overrides: Any
):
    """The data module a checkpoint was trained on, with ``overrides`` (e.g. ``root``); the
    run's ``imports`` (its own data sets) as :func:`load_for_eval` imports them."""
    from survae.training.pipeline import build_datamodule

    ckpt = load_checkpoint(path, trust=trust)
    import_saved_modules(saved_imports(ckpt, path), path, trust=trust_config)
    hp = dict(ckpt["hyper_parameters"])
    cfg = dict(hp.get("data_config") or {})
    if not cfg:
        raise ValueError(f"{path} stores no data config; pass the data set explicitly")
    cfg.update({k: v for k, v in overrides.items() if v is not None})
    return build_datamodule(cfg, seed=int(cfg.pop("seed", 0)))


@torch.no_grad()
def evaluate_log_likelihood(
    model: Flow,
    loader,
    kind: str,
    shape: list[int],
    num_samples: int = 1,
    chunk_size: int | None = None,
    device: str | torch.device = "cpu",
    max_batches: int | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Mean metric over ``loader``: exact for exact models, else the k-sample IW bound
    (``progress``: a progress bar over the batches)."""
    model = model.to(device).eval()
    metric = metric_for(kind)
    size = shape[0] if kind == "points" else math.prod(shape)
    total, count = 0.0, 0
    num_batches = len(loader) if hasattr(loader, "__len__") else None
    if max_batches is not None:
        num_batches = max_batches if num_batches is None else min(num_batches, max_batches)
    what = "log-likelihood" if model.exact or num_samples == 1 else f"IW bound, k={num_samples}"
    batches = itertools.islice(loader, max_batches)  # max_batches None: all of them
    for x in progress_iter(batches, f"{what} (batches)", num_batches, enabled=progress):
        x = x.to(device)
        log_prob = importance_weighted_log_prob(model.log_prob, x, num_samples, chunk_size)
        total += metric(log_prob, size).sum().item()
        count += x.shape[0]
    return {
        "metric": metric.name,
        "value": total / max(count, 1),
        "exact": model.exact,
        "iw_samples": 1 if model.exact else num_samples,
        "num_examples": count,
    }


def load_for_eval(
    path: str | Path, device: str = "cpu", trust: bool = False, trust_config: bool = False
) -> tuple[Flow, Mapping[str, Any]]:
    """``(model, data_info)`` of a checkpoint, model in eval mode on ``device``; the file is
    read once, without running code unless ``trust``. The run's own modules (``imports``)
    are imported only with ``trust_config`` (``--trust-config``) or when already imported."""
    ckpt = load_checkpoint(path, trust=trust)
    import_saved_modules(saved_imports(ckpt, path), path, trust=trust_config)
    return model_from_checkpoint(ckpt).to(device), ckpt["hyper_parameters"]["data_info"]
