"""Residual convolutional coupling network as in RealNVP (Dinh et al. 2017, Sec. 4.1):
pre-activation residual blocks (He et al. 2016) with batch or weight normalisation."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.parametrizations import weight_norm

from survae.errors import check_shape
from survae.nn.build import zero_init_
from survae.nn.conv import Conv2d
from survae.registry import register

_NORMS = ("batch", "weight", "none")


def _check_norm(norm: str) -> None:
    if norm not in _NORMS:
        raise ValueError(f"Unknown norm {norm!r}; valid: {', '.join(_NORMS)}")


def _conv(in_channels: int, out_channels: int, kernel_size: int, norm: str) -> nn.Module:
    conv = Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2)
    return weight_norm(conv) if norm == "weight" else conv


def _norm(channels: int, norm: str) -> nn.Module:
    return nn.BatchNorm2d(channels) if norm == "batch" else nn.Identity()


class ResidualBlock(nn.Module):
    """``x + conv(ReLU(norm(conv(ReLU(norm(x))))))`` with 3×3 convolutions.

    ``norm="batch"`` puts batch normalisation before each ReLU; ``norm="weight"`` instead
    weight-normalises the convolutions; ``norm="none"`` uses neither.
    """

    def __init__(self, channels: int, norm: str = "batch", kernel_size: int = 3):
        super().__init__()
        _check_norm(norm)
        self.net = nn.Sequential(
            _norm(channels, norm),
            nn.ReLU(),
            _conv(channels, channels, kernel_size, norm),
            _norm(channels, norm),
            nn.ReLU(),
            _conv(channels, channels, kernel_size, norm),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.net(x)


@register("network", "resnet")
class ResNet(nn.Module):
    """RealNVP-style coupling network ``[B, in, H, W] → [B, out, H, W]``.

    conv (in→hidden) → ``num_blocks`` :class:`ResidualBlock` → norm – ReLU → conv (hidden→out).
    The output convolution is a plain (never weight-normalised) convolution, zero-initialised by
    default so that the coupling starts at the identity.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        hidden_channels: int = 64,
        num_blocks: int = 8,
        norm: str = "batch",
        kernel_size: int = 3,
        zero_init_output: bool = True,
    ):
        super().__init__()
        _check_norm(norm)
        self.in_channels, self.out_channels = in_channels, out_channels
        self.inp = _conv(in_channels, hidden_channels, kernel_size, norm)
        self.blocks = nn.Sequential(
            *[ResidualBlock(hidden_channels, norm, kernel_size) for _ in range(num_blocks)]
        )
        self.out_norm = _norm(hidden_channels, norm)
        self.out = Conv2d(hidden_channels, out_channels, kernel_size, padding=kernel_size // 2)
        if zero_init_output:
            zero_init_(self.out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_shape(self, x, (None, self.in_channels, None, None))
        h = self.blocks(self.inp(x))
        return self.out(torch.relu(self.out_norm(h)))
