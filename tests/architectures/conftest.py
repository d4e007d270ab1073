"""Shared fixtures of the architecture tests: one intra-op thread, and the smoke-training loop
with its toy image data."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch


@pytest.fixture(autouse=True)
def one_thread():
    """These models are tiny: one intra-op thread is as fast as several, and it avoids OpenMP
    threads waiting on each other when other processes share the CPU cores."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _digits_like(n: int, seed: int = 0) -> torch.Tensor:
    """Tiny digits-like images: ten random 8×8 binary glyphs, drawn with noise in 17 grey
    levels (the value range of scikit-learn's digits), as uint8 ``[n, 1, 8, 8]``."""
    g = torch.Generator().manual_seed(seed)
    glyphs = (torch.rand(10, 1, 8, 8, generator=g) > 0.6).float()
    which = torch.randint(0, 10, (n,), generator=g)
    noisy = glyphs[which] * 13 + 4 * torch.rand(n, 1, 8, 8, generator=g)
    return noisy.floor().clamp(0, 16).to(torch.uint8)


def _ramp_images() -> torch.Tensor:
    """16 colour 8×8 uint8 images: a flat colour per image, a horizontal ramp and a little
    integer noise."""
    g = torch.Generator().manual_seed(1)
    base = torch.randint(60, 200, (16, 3, 1, 1), generator=g).float()
    ramp = torch.linspace(-20, 20, 8).view(1, 1, 1, 8)
    noise = torch.randint(-4, 5, (16, 3, 8, 8), generator=g).float()
    return (base + ramp + noise).clamp(0, 255).to(torch.uint8)


def _train_bits_per_dim(
    model: torch.nn.Module,
    data: torch.Tensor,
    optimizer: torch.optim.Optimizer,
    steps: int,
    batch_size: int | None = None,
) -> tuple[float, float, list[float]]:
    """Trains ``model`` on ``data`` (the whole set per step, or random batches of
    ``batch_size``) and returns the mean bits/dim of the first and of the last five steps, and
    every step's value."""
    dims = data[0].numel()
    losses = []
    for _ in range(steps):
        batch = data if batch_size is None else data[torch.randint(0, len(data), (batch_size,))]
        loss = -model.log_prob(batch).mean() / (math.log(2) * dims)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return sum(losses[:5]) / 5, sum(losses[-5:]) / 5, losses


@pytest.fixture
def digits_like() -> Callable[..., torch.Tensor]:
    return _digits_like


@pytest.fixture
def ramp_images() -> torch.Tensor:
    return _ramp_images()


@pytest.fixture
def train_bits_per_dim() -> Callable[..., tuple[float, float, list[float]]]:
    return _train_bits_per_dim
