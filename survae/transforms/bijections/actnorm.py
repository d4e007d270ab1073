"""Activation normalisation (Glow, Kingma & Dhariwal 2018)."""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from survae.errors import check_ndim, check_shape
from survae.registry import register
from survae.transforms.base import Bijection
from survae.utils import spatial_size


def channel_view(p: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """A per-channel vector ``[C]`` shaped to broadcast against ``x`` of shape ``[B, C, ...]``."""
    return p.view(1, -1, *([1] * (x.dim() - 2)))


def channel_moments(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Per-channel sum and sum of squares of ``x`` over batch and spatial positions, and the
    count of values per channel."""
    dims = [0, *range(2, x.dim())]
    count = x.numel() // x.shape[1]
    return x.sum(dims), (x * x).sum(dims), count


@register("layer", "actnorm")
class ActNorm(Bijection):
    """Per-channel affine map ``z = (x - loc) · exp(log_scale)`` (Glow).

    Likelihood contribution: ``spatial_size · Σ_c log_scale_c`` (``spatial_size`` = H·W for
    images, L for sequences, 1 for vectors).

    Data-dependent initialisation: the first forward pass in training mode sets ``loc`` and
    ``log_scale`` so that that batch has zero mean and unit variance per channel. Under
    ``torch.distributed`` the statistics are summed over all processes first, so every rank
    starts from the same parameters computed from the global batch. The persistent buffer
    ``initialized`` records that it happened, so a loaded checkpoint is not re-initialised;
    a Python flag mirrors it so the forward pass never reads a device tensor to decide.

    ``log_scale_factor`` (openai/glow's ``logscale_factor``, 3 there): the parameter stores
    ``log_scale / factor`` and is multiplied back, which lets it move ``factor`` times faster
    under Adam; the function and the initial values are the same.
    """

    def __init__(self, num_channels: int, eps: float = 1e-6, log_scale_factor: float = 1.0):
        super().__init__()
        if log_scale_factor <= 0:
            raise ValueError(f"ActNorm: log_scale_factor must be > 0, got {log_scale_factor}")
        self.num_channels = num_channels
        self.eps = eps
        self.log_scale_factor = float(log_scale_factor)
        self.loc = nn.Parameter(torch.zeros(num_channels))
        self.log_scale = nn.Parameter(torch.zeros(num_channels))
        self.register_buffer("initialized", torch.tensor(False))
        self._initialized = False

    @torch.no_grad()
    def data_init(self, x: torch.Tensor) -> None:
        """Set ``loc``/``log_scale`` from the statistics of ``x`` (all ranks together)."""
        # float64 keeps the sum-of-squares variance accurate; MPS has no float64
        acc = torch.float32 if x.device.type == "mps" else torch.float64
        s, ss, n = channel_moments(x.detach().to(acc))
        stats = torch.cat([s, ss, s.new_full((1,), float(n))])
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(stats, op=dist.ReduceOp.SUM)
        C = self.num_channels
        total = stats[2 * C]
        mean = stats[:C] / total
        var = (stats[C : 2 * C] / total - mean * mean).clamp(min=0.0)
        self.loc.copy_(mean.to(self.loc.dtype))
        log_scale = -torch.log(var.sqrt() + self.eps) / self.log_scale_factor
        self.log_scale.copy_(log_scale.to(self.log_scale.dtype))
        self.initialized.fill_(True)
        self._initialized = True

    def _check(self, x: torch.Tensor, what: str) -> None:
        check_ndim(self, x, (2, 3, 4), what)
        check_shape(self, x, (None, self.num_channels, *x.shape[2:]), what)

    def effective_log_scale(self) -> torch.Tensor:
        """The per-channel log-scale of the map: the parameter times ``log_scale_factor``."""
        if self.log_scale_factor == 1.0:
            return self.log_scale
        return self.log_scale * self.log_scale_factor

    def _ldj(self, x: torch.Tensor, log_scale: torch.Tensor) -> torch.Tensor:
        return (log_scale.sum() * spatial_size(x)).expand(x.shape[0]).contiguous()

    def forward(
        self, x: torch.Tensor, context: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        self._check(x, "input")
        if self.training and not self._initialized:
            self.data_init(x)
        log_scale = self.effective_log_scale()
        z = (x - channel_view(self.loc, x)) * channel_view(log_scale.exp(), x)
        return z, self._ldj(x, log_scale)

    def inverse_with_ldj(
        self, z: torch.Tensor, context: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        self._check(z, "latent")
        log_scale = self.effective_log_scale()
        x = z * channel_view(torch.exp(-log_scale), z) + channel_view(self.loc, z)
        return x, -self._ldj(z, log_scale)

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
        super()._load_from_state_dict(state_dict, prefix, *args)
        # read once at load time, never in the forward pass
        self._initialized = bool(self.initialized)

    def extra_repr(self) -> str:
        f = self.log_scale_factor
        return f"num_channels={self.num_channels}" + (f", log_scale_factor={f}" if f != 1 else "")
