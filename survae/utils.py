"""Small tensor helpers shared by layers and distributions."""

from __future__ import annotations

import math

import torch


def sum_except_batch(x: torch.Tensor, num_batch_dims: int = 1) -> torch.Tensor:
    """Sum over all dimensions but the leading ``num_batch_dims``."""
    return x.reshape(*x.shape[:num_batch_dims], -1).sum(-1)


def num_elements_per_sample(x: torch.Tensor) -> int:
    """Number of elements in one batch item."""
    return math.prod(x.shape[1:])


def spatial_size(x: torch.Tensor) -> int:
    """Number of positions per channel: H·W for images, L for sequences, 1 for vectors."""
    return math.prod(x.shape[2:]) if x.dim() > 2 else 1
