"""A small plain convolutional network for quick tests and toy image models."""

from __future__ import annotations

import torch
from torch import nn

from survae.errors import check_shape
from survae.nn.build import zero_init_
from survae.nn.conv import Conv2d
from survae.nn.mlp import activation
from survae.registry import register


@register("network", "conv_net")
class ConvNet(nn.Module):
    """``[B, in, H, W] → [B, out, H, W]``: ``num_layers`` × (conv, activation) then a conv to
    ``out_channels``, zero-initialised by default so a coupling starts at the identity. All
    convolutions are ``kernel_size``×``kernel_size`` with "same" padding (odd sizes only)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        hidden_channels: int = 64,
        num_layers: int = 2,
        kernel_size: int = 3,
        activation_name: str = "relu",
        zero_init_output: bool = True,
    ):
        super().__init__()
        if kernel_size % 2 == 0:
            raise ValueError(
                f"ConvNet: kernel_size must be odd for same padding, got {kernel_size}"
            )
        self.in_channels, self.out_channels = in_channels, out_channels
        pad = kernel_size // 2
        layers: list[nn.Module] = []
        c = in_channels
        for _ in range(num_layers):
            layers += [Conv2d(c, hidden_channels, kernel_size, padding=pad)]
            layers.append(activation(activation_name))
            c = hidden_channels
        out = Conv2d(c, out_channels, kernel_size, padding=pad)
        layers.append(zero_init_(out) if zero_init_output else out)
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_shape(self, x, (None, self.in_channels, None, None))
        return self.net(x)
