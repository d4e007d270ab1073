"""Cosine annealing of the learning rate (optim.schedule=cosine), as NSF trains its flows."""

from __future__ import annotations

import math

import pytest
import torch

from survae.config_check import ConfigError
from survae.training.optim import build_scheduler, lr_factor, validate_optim_config


def _rates(cfg: dict, steps: int) -> list[float]:
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([param], lr=cfg["lr"])
    sched = build_scheduler(opt, cfg, steps_per_epoch=7)
    rates = []
    for _ in range(steps):
        rates.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return rates


def test_cosine_matches_torch_cosine_annealing():
    """Same rates as torch's CosineAnnealingLR(T_max, eta_min=0), which NSF's uci.py uses."""
    T = 20
    ours = _rates({"lr": 5e-4, "schedule": "cosine", "cosine_steps": T}, T + 5)
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([param], lr=5e-4)
    ref_sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=T, eta_min=0.0)
    ref = []
    for _ in range(T + 1):
        ref.append(opt.param_groups[0]["lr"])
        opt.step()
        ref_sched.step()
    assert ours[: T + 1] == pytest.approx(ref, abs=1e-12)
    assert ours[0] == pytest.approx(5e-4)
    assert ours[T // 2] == pytest.approx(2.5e-4)
    # after the annealing the rate stays at its floor (torch's would rise again)
    assert ours[T:] == pytest.approx([0.0] * 5, abs=1e-15)


def test_cosine_by_hand_with_floor_hold_and_warmup():
    # floor: min_factor + (1 - min_factor) * (1 + cos(pi t / T)) / 2
    assert lr_factor(5, min_factor=0.2, cosine_steps=10) == pytest.approx(0.6)
    assert lr_factor(10, min_factor=0.2, cosine_steps=10) == pytest.approx(0.2)
    assert lr_factor(50, min_factor=0.2, cosine_steps=10) == pytest.approx(0.2)
    # held at the peak until decay_start, then annealed over the remaining steps
    assert lr_factor(4, decay_start=4, cosine_steps=12) == pytest.approx(1.0)
    expected = 0.5 * (1 + math.cos(math.pi * 2 / 8))
    assert lr_factor(6, decay_start=4, cosine_steps=12) == pytest.approx(expected)
    # warm-up multiplies the cosine
    assert lr_factor(1, warmup_steps=4, cosine_steps=100) == pytest.approx(
        0.5 * 0.5 * (1 + math.cos(math.pi / 100))
    )
    # exponential decay is ignored by the cosine schedule
    assert lr_factor(3, decay=0.5, decay_every=1, cosine_steps=6) == pytest.approx(0.5)


def test_exponential_schedule_unchanged_by_default():
    rates = _rates({"lr": 1e-3, "decay": 0.5, "decay_every": "step"}, 4)
    assert rates == pytest.approx([1e-3, 5e-4, 2.5e-4, 1.25e-4])
    same = _rates({"lr": 1e-3, "decay": 0.5, "decay_every": "step", "schedule": "exponential"}, 4)
    assert same == rates


@pytest.mark.parametrize(
    "cfg, key",
    [
        ({"schedule": "cosine"}, "optim.cosine_steps"),
        ({"schedule": "cosine", "cosine_steps": 0}, "optim.cosine_steps"),
        ({"schedule": "cosine", "cosine_steps": 10, "decay_start": 10}, "optim.cosine_steps"),
        ({"schedule": "linear"}, "optim.schedule"),
    ],
)
def test_bad_cosine_settings_name_the_key(cfg, key):
    with pytest.raises(ConfigError, match=key):
        validate_optim_config({"lr": 1e-3, **cfg})
