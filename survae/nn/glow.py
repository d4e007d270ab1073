"""Glow's coupling network (Kingma & Dhariwal 2018, "Glow", Sec. 3.3 and Appendix).

conv3×3 → actnorm → ReLU → conv1×1 → actnorm → ReLU → zero-initialised conv3×3 whose output is
multiplied by a learned per-channel ``exp(3·logs)``, so every coupling starts as the identity.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from survae.errors import check_shape
from survae.nn.build import zero_init_
from survae.registry import register


class ActNorm2d(nn.Module):
    """Per-channel affine normalisation inside a network, ``y = (x + bias)·exp(logs)``.

    On the first forward pass in training mode ``bias`` and ``logs`` are set from the batch so
    that the output has zero mean and unit variance per channel (Glow's data-dependent
    initialisation). This is a network layer, not a transform: it has no log-determinant.
    The "initialised" state is a Python flag (no host sync per call) mirrored in a buffer so it
    survives ``state_dict`` round trips.
    """

    def __init__(self, num_channels: int, eps: float = 1e-6):
        super().__init__()
        self.num_channels, self.eps = num_channels, eps
        self.bias = nn.Parameter(torch.zeros(num_channels))
        self.logs = nn.Parameter(torch.zeros(num_channels))
        self.register_buffer("initialized", torch.tensor(False))
        self._is_initialized = False

    @torch.no_grad()
    def _data_init(self, x: torch.Tensor) -> None:
        dims = [0, *range(2, x.dim())]
        mean = x.mean(dim=dims)
        std = x.var(dim=dims, unbiased=False).add(self.eps).sqrt()
        self.bias.copy_(-mean)
        self.logs.copy_(-std.log())
        self.initialized.fill_(True)
        self._is_initialized = True

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        # Loading is not on the hot path; reading the buffer here is fine.
        self._is_initialized = bool(self.initialized)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and not self._is_initialized:
            self._data_init(x)
        shape = (1, self.num_channels) + (1,) * (x.dim() - 2)
        return (x + self.bias.view(shape)) * self.logs.exp().view(shape)


class ZeroConv2d(nn.Module):
    """Glow's zero-initialised output convolution: ``conv(x) · exp(logscale_factor · logs)``.

    Weight, bias and the per-channel ``logs`` start at zero, so the output is zero at
    initialisation; the learned scale (``logscale_factor`` = 3 in Glow) lets the output grow
    quickly once training starts.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        logscale_factor: float = 3.0,
        zero_init: bool = True,
    ):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2)
        if zero_init:
            zero_init_(self.conv)
        self.logs = nn.Parameter(torch.zeros(out_channels))
        self.logscale_factor = logscale_factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = (self.logscale_factor * self.logs).exp().view(1, -1, 1, 1)
        return self.conv(x) * scale


@register("network", "glow_net")
class GlowNet(nn.Module):
    """Glow coupling network ``[B, in, H, W] → [B, out, H, W]``.

    conv3×3(in→hidden) – ReLU – conv1×1(hidden→hidden) – ReLU – :class:`ZeroConv2d`(hidden→out).
    With ``actnorm=True`` (Glow's choice) the two hidden convolutions have no bias and are
    followed by :class:`ActNorm2d`; with ``actnorm=False`` they are plain biased convolutions.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        hidden_channels: int = 512,
        actnorm: bool = True,
        zero_init_output: bool = True,
    ):
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        h = hidden_channels
        self.conv1 = nn.Conv2d(in_channels, h, 3, padding=1, bias=not actnorm)
        self.norm1 = ActNorm2d(h) if actnorm else nn.Identity()
        self.conv2 = nn.Conv2d(h, h, 1, bias=not actnorm)
        self.norm2 = ActNorm2d(h) if actnorm else nn.Identity()
        self.out = ZeroConv2d(h, out_channels, 3, zero_init=zero_init_output)
        if actnorm:  # Glow initialises hidden convolutions with N(0, 0.05²)
            nn.init.normal_(self.conv1.weight, std=0.05)
            nn.init.normal_(self.conv2.weight, std=0.05)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_shape(self, x, (None, self.in_channels, None, None))
        h = F.relu(self.norm1(self.conv1(x)))
        h = F.relu(self.norm2(self.conv2(h)))
        return self.out(h)
