"""Residual MADE: the autoregressive network of neural spline flows, RQ-NSF (AR) (Durkan et al.
2019, the "ResMADE" of Sec. 5.1 / App. B.1; Nash & Durkan 2019).

Layout (as the official NSF code builds it, ``nde/transforms/made.py``): a masked input layer
``D → hidden`` (plus a linear map of the context), ``num_blocks`` residual blocks
``h + W₂ · drop(act(W₁ · act(h)))`` with two masked layers each (a context gates the block's
update through ``sigmoid(V · context)``), and a masked output layer ``hidden → out`` applied to
the last block's output without an activation. Hidden degrees are ``1..D-1`` in turn, so each
residual update keeps a unit's degree and the network stays strictly autoregressive.
"""

from __future__ import annotations

import torch
from torch import nn

from survae.errors import ShapeError
from survae.nn.build import zero_init_
from survae.nn.dropout import Dropout
from survae.nn.made import MaskedLinear, _input_order
from survae.nn.mlp import activation
from survae.registry import register


class _MaskedResidualBlock(nn.Module):
    """``h + W₂ · drop(act(W₁ · act(h)))`` with masked ``W₁, W₂`` (degrees kept), optionally
    gated by the context."""

    def __init__(
        self,
        degrees: torch.Tensor,
        context_features: int,
        activation_name: str,
        dropout: float,
    ):
        super().__init__()
        mask = degrees[:, None] >= degrees[None, :]
        self.linear1 = MaskedLinear(mask)
        self.linear2 = MaskedLinear(mask)
        # NSF starts each block near zero (uniform ±1e-3), so the network starts near its
        # input layer composed with the output layer
        nn.init.uniform_(self.linear2.weight, -1e-3, 1e-3)
        nn.init.uniform_(self.linear2.bias, -1e-3, 1e-3)
        self.act = activation(activation_name)
        self.drop = Dropout(dropout) if dropout > 0 else nn.Identity()
        self.context_gate = nn.Linear(context_features, len(degrees)) if context_features else None

    def forward(self, h: torch.Tensor, context: torch.Tensor | None) -> torch.Tensor:
        u = self.linear2(self.drop(self.act(self.linear1(self.act(h)))))
        if self.context_gate is not None:
            u = u * torch.sigmoid(self.context_gate(context))
        return h + u


@register("network", "residual_made")
class ResidualMADE(nn.Module):
    """Strictly autoregressive residual MLP ``[B, D] → [B, out_channels]`` (NSF's ResMADE):
    masked input layer, ``num_blocks`` two-layer masked residual blocks of width ``hidden``
    with ``dropout`` inside each block, masked output layer.

    The output is dimension-major like :class:`~survae.nn.made.MADE`'s:
    ``out.view(B, D, out_channels // D)[:, i]`` depends only on inputs before ``i`` in the
    order (natural, ``reverse_order`` or a ``seed``-ed ``random_order``) and on the context.
    ``zero_init_output=True`` zeroes the output layer, so a flow built on it starts at the
    identity.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        hidden: int = 256,
        num_blocks: int = 2,
        context_features: int = 0,
        activation_name: str = "relu",
        dropout: float = 0.0,
        random_order: bool = False,
        reverse_order: bool = False,
        seed: int = 0,
        zero_init_output: bool = True,
    ):
        super().__init__()
        if in_channels < 1 or hidden < 1 or num_blocks < 0:
            raise ValueError(
                f"ResidualMADE: need in_channels >= 1, hidden >= 1, num_blocks >= 0, got "
                f"{in_channels}, {hidden}, {num_blocks}"
            )
        if out_channels % in_channels != 0 or out_channels == 0:
            raise ValueError(
                f"ResidualMADE: out_channels ({out_channels}) must be a positive multiple of "
                f"in_channels ({in_channels})"
            )
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"ResidualMADE: dropout must lie in [0, 1), got {dropout}")
        D = in_channels
        self.in_channels, self.out_channels = in_channels, out_channels
        self.params_per_dim = out_channels // D
        self.context_features = int(context_features)
        order = _input_order(D, random_order, reverse_order, seed)
        self.register_buffer("order", order)
        degrees = torch.arange(hidden) % max(D - 1, 1) + 1
        self.input_layer = MaskedLinear(degrees[:, None] >= order[None, :])
        self.context_input = nn.Linear(context_features, hidden) if context_features else None
        self.blocks = nn.ModuleList(
            _MaskedResidualBlock(degrees, self.context_features, activation_name, dropout)
            for _ in range(num_blocks)
        )
        out_degrees = order.repeat_interleave(self.params_per_dim)
        self.output_layer = MaskedLinear(out_degrees[:, None] > degrees[None, :])
        if zero_init_output:
            zero_init_(self.output_layer)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        if x.shape[-1] != self.in_channels:
            raise ShapeError(
                f"ResidualMADE: expected input with last dimension {self.in_channels}, "
                f"got shape {tuple(x.shape)}"
            )
        if (context is None) != (self.context_features == 0):
            raise ValueError(
                f"ResidualMADE built with context_features={self.context_features} was called "
                f"{'without' if context is None else 'with'} a context"
            )
        h = self.input_layer(x)
        if self.context_input is not None:
            h = h + self.context_input(context)
        for block in self.blocks:
            h = block(h, context)
        return self.output_layer(h)


__all__ = ["ResidualMADE"]
