"""The official SurVAE library's multi-scale DenseNet: a U-Net of DenseNets for coupling
networks that need a large receptive field on large images."""

from __future__ import annotations

import torch
from torch import nn

from survae.nn.densenet import DenseNet
from survae.registry import register


@register("network", "multiscale_densenet")
class MultiscaleDenseNet(nn.Module):
    """A DenseNet to ``mid_channels``; ``num_scales − 1`` times down (a stride-2 2×2
    convolution, then a DenseNet); as many times up (a DenseNet, then a stride-2 2×2 transposed
    convolution) adding the skip from the same scale; a last DenseNet to ``out_channels``
    (zero-initialised with ``zero_init_output``). Height and width must be divisible by
    ``2^(num_scales − 1)``. Each DenseNet has ``num_blocks`` blocks of ``depth`` layers growing
    by ``growth`` channels (see :class:`~survae.nn.densenet.DenseNet`)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        num_scales: int = 2,
        num_blocks: int = 1,
        mid_channels: int = 64,
        depth: int = 4,
        growth: int = 16,
        dropout: float = 0.0,
        gated_conv: bool = False,
        zero_init_output: bool = True,
    ):
        super().__init__()
        if num_scales < 2:
            raise ValueError(f"MultiscaleDenseNet: num_scales must be >= 2, got {num_scales}")
        self.num_scales = int(num_scales)

        def dense(cin: int, cout: int, zero: bool = False) -> DenseNet:
            return DenseNet(
                cin, cout, num_blocks, mid_channels, depth, growth, dropout, gated_conv, zero
            )

        m = mid_channels
        self.down_in = dense(in_channels, m)
        self.down = nn.ModuleList(
            nn.Sequential(nn.Conv2d(m, m, 2, stride=2), dense(m, m))
            for _ in range(self.num_scales - 1)
        )
        self.up = nn.ModuleList(
            nn.Sequential(dense(m, m), nn.ConvTranspose2d(m, m, 2, stride=2))
            for _ in range(self.num_scales - 1)
        )
        self.up_out = dense(m, out_channels, zero_init_output)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        factor = 2 ** (self.num_scales - 1)
        if x.shape[-1] % factor or x.shape[-2] % factor:
            raise ValueError(
                f"MultiscaleDenseNet: height and width must be divisible by {factor}, got "
                f"{tuple(x.shape[-2:])}"
            )
        skips = [self.down_in(x)]
        for layer in self.down:
            skips.append(layer(skips[-1]))
        h = skips[-1]
        for i, layer in enumerate(self.up):
            h = layer(h) + skips[self.num_scales - 2 - i]
        return self.up_out(h)
