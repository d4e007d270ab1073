"""Multilayer perceptron."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from survae.nn.build import zero_init_
from survae.nn.dropout import Dropout
from survae.registry import register

_ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh, "elu": nn.ELU, "silu": nn.SiLU}


def activation(name: str) -> nn.Module:
    """An activation module by name (relu, gelu, tanh, elu, silu)."""
    if name not in _ACTIVATIONS:
        raise ValueError(f"Unknown activation {name!r}; valid: {', '.join(sorted(_ACTIVATIONS))}")
    return _ACTIVATIONS[name]()


@register("network", "mlp")
class MLP(nn.Sequential):
    """in → hidden[0] → … → out with an activation between layers; the output layer can be
    zero-initialised so couplings start at the identity. Accepts any leading shape ``[..., in]``."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        hidden: Sequence[int] = (256, 256),
        activation_name: str = "relu",
        dropout: float = 0.0,
        zero_init_output: bool = True,
    ):
        layers: list[nn.Module] = []
        sizes = [in_channels, *hidden]
        for a, b in zip(sizes[:-1], sizes[1:]):
            layers += [nn.Linear(a, b), activation(activation_name)]
            if dropout > 0:
                layers.append(Dropout(dropout))
        out = nn.Linear(sizes[-1], out_channels)
        layers.append(zero_init_(out) if zero_init_output else out)
        super().__init__(*layers)
        self.in_channels, self.out_channels = in_channels, out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x)
