"""Max pooling as an inference surjection (SurVAE Flows' MaxPoolFlow)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from survae.errors import ShapeError, check_ndim
from survae.registry import register
from survae.transforms.base import Surjection

_HALF_NORMAL_CONST = math.log(2.0) - 0.5 * math.log(2 * math.pi)


@register("layer", "max_pool")
class MaxPoolSurjection2d(Surjection):
    """Inference surjection ``[B, C, H, W] → [B, C, H/k, W/k]``: the maximum of each
    non-overlapping ``k×k`` window (stride = kernel = ``kernel_size``) (Nielsen et al. 2020).

    The inverse model ``p(x | z)`` puts the maximum at a uniformly chosen position of its window
    and the ``k² − 1`` other values at ``z − δ`` with ``δ`` half-normal of scale ``σ``. The exact
    likelihood contribution per window is
    ``Σ_{j ≠ argmax} log HalfNormal(z − x_j; σ) − log k²``.
    ``σ`` is 1 (SurVAE's standard half-normal), or a learned per-channel scale when
    ``learn_scale=True`` (then ``channels`` is required). ``inverse`` samples a position and
    ``δ`` (``δ`` scaled by ``self.temperature``).
    """

    def __init__(
        self, kernel_size: int = 2, channels: int | None = None, learn_scale: bool = False
    ):
        super().__init__()
        if kernel_size < 2:
            raise ValueError(f"MaxPoolSurjection2d: kernel_size must be >= 2, got {kernel_size}")
        if learn_scale and channels is None:
            raise ValueError("MaxPoolSurjection2d: learn_scale=True needs `channels`")
        self.kernel_size = int(kernel_size)
        self.channels = channels
        self.learn_scale = learn_scale
        self.temperature = 1.0
        if learn_scale:
            self.log_scale = nn.Parameter(torch.zeros(int(channels)))
        else:
            self.register_parameter("log_scale", None)

    def _log_scale(self, x: torch.Tensor) -> torch.Tensor:
        """Per-channel log σ broadcastable to ``[B, C, h, w, k²]``."""
        if self.log_scale is None:
            return x.new_zeros(1, 1, 1, 1, 1)
        return self.log_scale.to(x.dtype).view(1, -1, 1, 1, 1)

    def _check_channels(self, x: torch.Tensor, what: str) -> None:
        if self.channels is not None and x.shape[1] != self.channels:
            raise ShapeError(
                f"MaxPoolSurjection2d: expected {what} of shape (*, {self.channels}, *, *), "
                f"got {tuple(x.shape)}"
            )

    def forward(self, x, context=None):
        check_ndim(self, x, 4)
        self._check_channels(x, "input")
        B, C, H, W = x.shape
        k = self.kernel_size
        if H % k or W % k:
            raise ShapeError(
                f"MaxPoolSurjection2d: expected input of shape (*, *, multiple of {k}, "
                f"multiple of {k}) (H and W divisible by kernel_size={k}), got {tuple(x.shape)}"
            )
        h, w = H // k, W // k
        windows = x.reshape(B, C, h, k, w, k).permute(0, 1, 2, 4, 3, 5).reshape(B, C, h, w, k * k)
        z, idx = windows.max(dim=-1)
        not_max = 1.0 - F.one_hot(idx, k * k).to(x.dtype)
        log_scale = self._log_scale(x)
        delta = (z.unsqueeze(-1) - windows) * torch.exp(-log_scale)
        log_hn = _HALF_NORMAL_CONST - log_scale - 0.5 * delta**2
        per_example = (log_hn * not_max).reshape(B, -1).sum(-1)
        ldj = per_example - (C * h * w) * math.log(k * k)
        return z, ldj

    def inverse(self, z, context=None):
        check_ndim(self, z, 4, "latent")
        self._check_channels(z, "latent")
        B, C, h, w = z.shape
        k = self.kernel_size
        idx = torch.randint(0, k * k, (B, C, h, w), device=z.device)
        not_max = 1.0 - F.one_hot(idx, k * k).to(z.dtype)
        scale = torch.exp(self._log_scale(z)) * self.temperature
        delta = torch.randn(B, C, h, w, k * k, device=z.device, dtype=z.dtype).abs() * scale
        windows = z.unsqueeze(-1) - delta * not_max
        return (
            windows.reshape(B, C, h, w, k, k).permute(0, 1, 2, 4, 3, 5).reshape(B, C, h * k, w * k)
        )
