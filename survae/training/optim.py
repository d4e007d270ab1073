"""Optimisers and learning-rate schedules used by the papers."""

from __future__ import annotations

import inspect
import math
from collections.abc import Iterable, Mapping
from typing import Any

import torch

from survae.config_check import ConfigError, check_bool, check_choice, check_int, check_number

OPTIMIZERS = {"adam": torch.optim.Adam, "adamax": torch.optim.Adamax, "adamw": torch.optim.AdamW}

#: every key of the ``optim`` config group
OPTIM_KEYS = (
    "name", "lr", "betas", "weight_decay", "eps", "fused", "warmup_steps", "decay",
    "decay_every", "decay_start", "min_lr", "reset_lr_on_resume", "schedule", "cosine_steps",
)  # fmt: skip

#: learning-rate schedules after the warm-up (``optim.schedule``)
SCHEDULES = ("exponential", "cosine")


def validate_optim_config(cfg: Mapping[str, Any], where: str = "optim") -> None:
    """Raise :class:`ConfigError` naming the first unknown key or out-of-range value of an
    ``optim`` config: ``lr`` > 0, ``betas`` two numbers in [0, 1), ``weight_decay`` >= 0,
    ``eps`` > 0, ``warmup_steps``/``decay_start`` integers >= 0, ``decay`` in (0, 1],
    ``decay_every`` epoch|step, ``min_lr`` in [0, lr], ``fused`` and ``reset_lr_on_resume``
    booleans (``fused`` may be null), ``schedule`` exponential|cosine, ``cosine_steps`` an
    integer > ``decay_start`` when ``schedule=cosine``."""
    unknown = [k for k in cfg if k not in OPTIM_KEYS]
    if unknown:
        raise ConfigError(
            f"{where}: unknown key(s) {', '.join(map(repr, unknown))}; "
            f"valid: {', '.join(OPTIM_KEYS)}"
        )
    if "name" in cfg:
        check_choice(f"{where}.name", cfg["name"], tuple(OPTIMIZERS))
    lr = cfg.get("lr", 1e-3)
    check_number(f"{where}.lr", lr, gt=0.0)
    betas = cfg.get("betas")
    if betas is not None:
        if isinstance(betas, str | bytes) or not isinstance(betas, Iterable) or len(betas) != 2:
            raise ConfigError(f"{where}.betas: must be two numbers in [0, 1), got {betas!r}")
        for i, b in enumerate(betas):
            check_number(f"{where}.betas[{i}]", b, ge=0.0, lt=1.0)
    check_number(f"{where}.weight_decay", cfg.get("weight_decay"), ge=0.0, optional=True)
    check_number(f"{where}.eps", cfg.get("eps"), gt=0.0, optional=True)
    check_bool(f"{where}.fused", cfg.get("fused"), optional=True)
    check_int(f"{where}.warmup_steps", cfg.get("warmup_steps", 0), 0)
    check_number(f"{where}.decay", cfg.get("decay", 1.0), gt=0.0, le=1.0)
    check_choice(f"{where}.decay_every", cfg.get("decay_every", "epoch"), ("epoch", "step"))
    check_int(f"{where}.decay_start", cfg.get("decay_start", 0), 0)
    check_number(f"{where}.min_lr", cfg.get("min_lr", 0.0), ge=0.0, le=float(lr))
    check_bool(f"{where}.reset_lr_on_resume", cfg.get("reset_lr_on_resume", False))
    schedule = cfg.get("schedule", "exponential")
    check_choice(f"{where}.schedule", schedule, SCHEDULES)
    if schedule == "cosine":
        steps = cfg.get("cosine_steps")
        if steps is None:
            raise ConfigError(
                f"{where}.cosine_steps: schedule=cosine needs the length of the annealing in "
                "optimiser steps (e.g. ${trainer.max_steps}), got null"
            )
        check_int(f"{where}.cosine_steps", steps, int(cfg.get("decay_start", 0)) + 1)


def has_fused(name: str) -> bool:
    """Whether this torch has a fused (single-kernel) implementation of optimiser ``name``."""
    return "fused" in inspect.signature(OPTIMIZERS[name].__init__).parameters


def build_optimizer(params: Iterable[torch.nn.Parameter], cfg: Mapping[str, Any]):
    """Adam / Adamax / AdamW from ``{name, lr, betas, weight_decay, eps, fused}``.

    ``fused``: ``null`` (default) uses the fused kernel wherever torch has one for this
    optimiser (Adam, AdamW) and every parameter is a floating-point CPU or CUDA tensor, else
    torch's default (multi-tensor ``foreach`` on CUDA, a loop over tensors on the CPU); ``true``
    demands it, ``false`` refuses it. Both compute the same update; on a 2-core CPU the fused
    Adam step is ~2.5× (6 M parameters) to ~2× (105 M) faster than the default.
    """
    validate_optim_config(cfg)
    name = cfg.get("name", "adam")
    params = list(params)
    fused = cfg.get("fused")
    if fused and not has_fused(name):
        raise ConfigError(
            f"optim.fused=true: torch {torch.__version__} has no fused {name}; "
            "use optim.fused=null (foreach)"
        )
    kwargs: dict[str, Any] = {"lr": float(cfg.get("lr", 1e-3))}
    if fused is None:
        fused = has_fused(name) and all(
            _fusable(p["params"] if isinstance(p, Mapping) else [p]) for p in params
        )
    if has_fused(name):
        kwargs["fused"] = bool(fused)
    if cfg.get("betas") is not None:
        kwargs["betas"] = tuple(float(b) for b in cfg["betas"])
    for key in ("weight_decay", "eps"):
        if cfg.get(key) is not None:
            kwargs[key] = float(cfg[key])
    return OPTIMIZERS[name](params, **kwargs)


def _fusable(params: Iterable[torch.Tensor]) -> bool:
    return all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in params)


def lr_factor(
    step: int,
    warmup_steps: int = 0,
    decay: float = 1.0,
    decay_every: int = 1,
    min_factor: float = 0.0,
    decay_start: int = 0,
    cosine_steps: int = 0,
) -> float:
    """Linear warm-up over ``warmup_steps``, then exponential decay
    ``decay ** ((step - decay_start) // every)`` from step ``decay_start`` on, floored at
    ``min_factor``.

    ``cosine_steps > 0`` replaces the exponential decay by cosine annealing (Loshchilov &
    Hutter 2017) from 1 at ``decay_start`` to ``min_factor`` at step ``cosine_steps``
    (``min_factor + (1 − min_factor)·(1 + cos(π t / T)) / 2``, constant afterwards), as
    torch's ``CosineAnnealingLR(T_max=cosine_steps)`` when ``decay_start = 0``.

    SurVAE: warm-up 5000 steps, decay 0.995 per epoch; Flow++: 2000 warm-up steps; VFlow: peak
    until step 50,000, then 0.99999 per step down to a quarter; NSF: cosine over all steps.
    """
    warm = min(1.0, (step + 1) / warmup_steps) if warmup_steps > 0 else 1.0
    decay_steps = max(0, step - decay_start)
    if cosine_steps > 0:
        progress = min(1.0, decay_steps / max(1, cosine_steps - decay_start))
        cosine = min_factor + (1.0 - min_factor) * 0.5 * (1.0 + math.cos(math.pi * progress))
        return warm * cosine
    return max(min_factor, warm * decay ** (decay_steps // max(1, decay_every)))


def build_scheduler(
    optimizer: torch.optim.Optimizer, cfg: Mapping[str, Any], steps_per_epoch: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """A per-step LambdaLR from ``{warmup_steps, decay, decay_every: epoch|step, decay_start,
    min_lr, schedule: exponential|cosine, cosine_steps}`` (``decay_start`` and
    ``cosine_steps`` count optimiser steps)."""
    validate_optim_config(cfg)
    every = cfg.get("decay_every", "epoch")
    every_steps = steps_per_epoch if every == "epoch" else 1
    warmup = int(cfg.get("warmup_steps", 0))
    decay = float(cfg.get("decay", 1.0))
    min_factor = float(cfg.get("min_lr", 0.0)) / float(cfg.get("lr", 1e-3))
    decay_start = int(cfg.get("decay_start", 0))
    cosine = int(cfg["cosine_steps"]) if cfg.get("schedule", "exponential") == "cosine" else 0
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda step: lr_factor(step, warmup, decay, every_steps, min_factor, decay_start, cosine),
    )
