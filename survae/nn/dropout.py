"""Dropout that is cheap on the CPU.

``nn.Dropout`` on a CPU tensor draws its mask with ``bernoulli_``, one Mersenne-Twister draw and
a float conversion per element, and keeps a float mask for the backward pass: about 5.7 ns per
element forward and backward on this project's 2-core machine. In the point-set transformers
(dropout on attention weights, feed-forward activations and residual branches: ~440 M elements
per PermuteFlow training step) that is about half the step. Here the keep-mask compares
independent uniform 32-bit integers with ``round(p · 2³²)``: the same Bernoulli(1 − p) mask
(the drop probability resolved to 2⁻³², finer than ``torch.rand``'s 2⁻²⁴), drawn from the same
global generator, but two 32-bit lanes come out of each 64-bit draw and nothing is converted.
The mask is stored as ``bool`` (a quarter of the float mask's memory). About 3 ns per element
forward and backward. On other devices the fused ``F.dropout`` kernel is already the fast path
and is used unchanged.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F


class _KeepMask(torch.autograd.Function):
    """``x · keep / (1 − p)`` with the boolean ``keep`` mask saved for the backward pass."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, keep: torch.Tensor, scale: float) -> torch.Tensor:
        ctx.save_for_backward(keep)
        ctx.scale = scale
        return x.mul(keep).mul_(scale)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (keep,) = ctx.saved_tensors
        return grad.mul(keep).mul_(ctx.scale), None, None


def dropout(x: torch.Tensor, p: float, training: bool = True) -> torch.Tensor:
    """Inverted dropout: zeroes each element with probability ``p`` and scales the rest by
    ``1 / (1 − p)``, so the expectation is unchanged. Identity when not training or ``p == 0``."""
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout probability must be in [0, 1], got {p}")
    if not training or p == 0.0:
        return x
    if x.device.type != "cpu" or p == 1.0:
        return F.dropout(x, p, training=True)
    return _KeepMask.apply(x, _keep_mask_like(x, p), 1.0 / (1.0 - p))


def keep_mask(shape: torch.Size | tuple[int, ...], p: float) -> torch.Tensor:
    """A CPU ``bool`` tensor of ``shape``, each element ``True`` independently with probability
    ``1 − round(p · 2³²) / 2³²``, from the global generator."""
    n = math.prod(shape)
    # random_(int64 min, None) fills every one of the 64 bits uniformly (two int32 lanes).
    bits = torch.empty((n + 1) // 2, dtype=torch.int64).random_(-(2**63), None)
    lanes = bits.view(torch.int32)[:n].view(shape)
    return lanes >= round(p * 2**32) - 2**31


# An opaque operator for torch.compile: traced as one call (no graph break, which the in-place
# random_ would cause), never merged with another call (tagged nondeterministic), and run with
# the global generator at run time, so compiled and eager models draw the same masks.
@torch.library.custom_op(
    "survae::keep_mask", mutates_args=(), tags=(torch.Tag.nondeterministic_seeded,)
)
def _keep_mask_like(x: torch.Tensor, p: float) -> torch.Tensor:
    return keep_mask(x.shape, p)


@_keep_mask_like.register_fake
def _(x: torch.Tensor, p: float) -> torch.Tensor:
    return torch.empty(x.shape, dtype=torch.bool, device=x.device)


class Dropout(nn.Module):
    """Drop-in ``nn.Dropout`` using :func:`dropout` (the fast CPU mask); no parameters, so
    state dicts are unchanged."""

    def __init__(self, p: float = 0.5):
        super().__init__()
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"Dropout: probability must be in [0, 1], got {p}")
        self.p = float(p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return dropout(x, self.p, self.training)

    def extra_repr(self) -> str:
        return f"p={self.p}"
