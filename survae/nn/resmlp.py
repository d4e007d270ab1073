"""Residual MLP: the coupling network of neural spline flows on vectors (NSF's ``ResidualNet``).

``in → hidden``, then ``num_blocks`` pre-activation residual blocks
``h + W₂ · drop(act(W₁ · act(norm(h))))``, then ``hidden → out`` (zero-initialised by
default, so a coupling built on it starts at the identity).
"""

from __future__ import annotations

import torch
from torch import nn

from survae.nn.build import zero_init_
from survae.nn.dropout import Dropout
from survae.nn.mlp import activation
from survae.registry import register


class _ResidualBlock(nn.Module):
    def __init__(self, features: int, activation_name: str, dropout: float, batch_norm: bool):
        super().__init__()
        self.norm1 = nn.BatchNorm1d(features, eps=1e-3) if batch_norm else nn.Identity()
        self.norm2 = nn.BatchNorm1d(features, eps=1e-3) if batch_norm else nn.Identity()
        self.linear1 = nn.Linear(features, features)
        self.linear2 = nn.Linear(features, features)
        self.act = activation(activation_name)
        self.drop = Dropout(dropout) if dropout > 0 else nn.Identity()

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        u = self.linear1(self.act(self.norm1(h)))
        u = self.linear2(self.drop(self.act(self.norm2(u))))
        return h + u


@register("network", "residual_mlp")
class ResidualMLP(nn.Module):
    """Residual MLP ``[B, in_channels] → [B, out_channels]`` (NSF's coupling network):
    ``num_blocks`` pre-activation residual blocks of width ``hidden``, with optional
    ``dropout`` inside each block and optional batch normalisation (``batch_norm``)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        hidden: int = 256,
        num_blocks: int = 2,
        activation_name: str = "relu",
        dropout: float = 0.0,
        batch_norm: bool = False,
        zero_init_output: bool = True,
    ):
        super().__init__()
        if num_blocks < 0 or hidden < 1:
            raise ValueError(
                f"ResidualMLP: need hidden >= 1 and num_blocks >= 0, got {hidden}, {num_blocks}"
            )
        self.in_channels, self.out_channels = in_channels, out_channels
        self.inp = nn.Linear(in_channels, hidden)
        self.blocks = nn.Sequential(
            *[
                _ResidualBlock(hidden, activation_name, dropout, batch_norm)
                for _ in range(num_blocks)
            ]
        )
        self.out = nn.Linear(hidden, out_channels)
        if zero_init_output:
            zero_init_(self.out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.blocks(self.inp(x)))
