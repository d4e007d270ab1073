"""Densely connected coupling networks of SurVAE Flows (Nielsen et al. 2020, Appendix; the
dense blocks follow Huang et al. 2017, "Densely Connected Convolutional Networks").

With ``in_channels=6, out_channels=12, mid_channels=64, depth=10, growth=64, gated_conv=True``
:class:`DenseNet` has 3,745,228 parameters, the count of the official SurVAE image couplings.
"""

from __future__ import annotations

import torch
from torch import nn

from survae.errors import check_shape
from survae.nn.build import zero_init_
from survae.nn.dropout import Dropout
from survae.registry import register


class GatedConv2d(nn.Module):
    """Gated convolution ``a + b·sigmoid(c)``, where ``(a, b, c)`` are the three channel
    chunks of one convolution with ``3·out_channels`` outputs.

    The linear path ``a`` keeps gradients flowing while ``b·sigmoid(c)`` adds a multiplicative
    gate; this three-chunk form is the one SurVAE's dense blocks use (and what makes the
    parameter count match theirs).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 1):
        super().__init__()
        self.out_channels = out_channels
        self.conv = nn.Conv2d(in_channels, 3 * out_channels, kernel_size, padding=kernel_size // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b, c = self.conv(x).chunk(3, dim=1)
        return a + b * torch.sigmoid(c)


class DenseLayer(nn.Module):
    """1×1 conv (in→in) – ReLU – [dropout] – 3×3 conv (in→growth) – ReLU, concatenated with the
    input, so the output has ``in_channels + growth`` channels."""

    def __init__(self, in_channels: int, growth: int, dropout: float = 0.0):
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(in_channels, in_channels, 1), nn.ReLU(inplace=True)]
        if dropout > 0:
            layers.append(Dropout(dropout))
        layers += [nn.Conv2d(in_channels, growth, 3, padding=1), nn.ReLU(inplace=True)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, self.net(x)], dim=1)


@register("network", "dense_block")
class DenseBlock(nn.Module):
    """``depth`` dense layers (channels grow by ``growth`` each) followed by a 1×1 convolution
    (gated when ``gated_conv``) to ``out_channels``. Used alone as a context/feature network
    (e.g. the MaxPoolFlow dequantiser's context net) and, residually, inside :class:`DenseNet`.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        depth: int = 4,
        growth: int = 16,
        dropout: float = 0.0,
        gated_conv: bool = True,
        zero_init_output: bool = False,
    ):
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.layers = nn.Sequential(
            *[DenseLayer(in_channels + i * growth, growth, dropout) for i in range(depth)]
        )
        width = in_channels + depth * growth
        if gated_conv:
            self.out = GatedConv2d(width, out_channels, 1)
            out_conv = self.out.conv
        else:
            self.out = out_conv = nn.Conv2d(width, out_channels, 1)
        if zero_init_output:
            zero_init_(out_conv)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_shape(self, x, (None, self.in_channels, None, None))
        return self.out(self.layers(x))


class ResidualDenseBlock(nn.Module):
    """``x + DenseBlock(x)`` with as many output as input channels."""

    def __init__(
        self,
        channels: int,
        depth: int,
        growth: int,
        dropout: float = 0.0,
        gated_conv: bool = True,
    ):
        super().__init__()
        self.dense = DenseBlock(channels, channels, depth, growth, dropout, gated_conv)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.dense(x)


@register("network", "densenet")
class DenseNet(nn.Module):
    """SurVAE's coupling network ``[B, in, H, W] → [B, out, H, W]``.

    1×1 conv (in→mid) → ``num_blocks`` residual dense blocks → 1×1 conv (mid→out), the last
    zero-initialised by default so that the coupling starts at the identity.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        num_blocks: int = 1,
        mid_channels: int = 64,
        depth: int = 10,
        growth: int = 64,
        dropout: float = 0.0,
        gated_conv: bool = True,
        zero_init_output: bool = True,
    ):
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.inp = nn.Conv2d(in_channels, mid_channels, 1)
        self.blocks = nn.Sequential(
            *[
                ResidualDenseBlock(mid_channels, depth, growth, dropout, gated_conv)
                for _ in range(num_blocks)
            ]
        )
        self.out = nn.Conv2d(mid_channels, out_channels, 1)
        if zero_init_output:
            zero_init_(self.out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_shape(self, x, (None, self.in_channels, None, None))
        return self.out(self.blocks(self.inp(x)))
