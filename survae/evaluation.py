"""Evaluating trained checkpoints: importance-weighted likelihoods and sample quality."""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from survae.flows import Flow
from survae.metrics import importance_weighted_log_prob, metric_for
from survae.models import load_model


def checkpoint_hparams(path: str | Path) -> dict[str, Any]:
    """The hyperparameters stored in a training checkpoint (model spec, data info/config)."""
    ckpt = torch.load(str(path), map_location="cpu", weights_only=False)
    return dict(ckpt.get("hyper_parameters", {}))


def datamodule_from_checkpoint(path: str | Path, **overrides: Any):
    """The data module a checkpoint was trained on, with ``overrides`` (e.g. ``root``)."""
    from survae.training.pipeline import build_datamodule

    hp = checkpoint_hparams(path)
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
) -> dict[str, Any]:
    """Mean metric over ``loader``: exact for exact models, else the k-sample IW bound."""
    model = model.to(device).eval()
    metric = metric_for(kind)
    size = shape[0] if kind == "points" else math.prod(shape)
    total, count = 0.0, 0
    for i, x in enumerate(loader):
        if max_batches is not None and i >= max_batches:
            break
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


def load_for_eval(path: str | Path, device: str = "cpu") -> tuple[Flow, Mapping[str, Any]]:
    """``(model, data_info)`` of a checkpoint, model in eval mode on ``device``."""
    hp = checkpoint_hparams(path)
    return load_model(path, map_location=device).to(device), hp["data_info"]
