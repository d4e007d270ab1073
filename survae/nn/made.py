"""MADE: masked autoencoder for distribution estimation (Germain et al., 2015).

A MADE is an MLP whose weight matrices are multiplied by fixed binary masks so that the
outputs attached to input dimension ``i`` depend only on inputs that come *strictly before* ``i``
in an ordering. One pass therefore yields the parameters of every conditional
``p(x_i | x_<i)``, which is what masked autoregressive flows (MAF, IAF) need.

Degrees: input ``i`` gets degree ``order[i]`` (a permutation of ``1..D``); hidden units get
degrees in ``1..D-1``; a connection ``a -> b`` between hidden layers is kept when
``deg(b) >= deg(a)``, and into an output of dimension ``i`` only when ``deg(i) > deg(hidden)``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from survae.errors import ShapeError
from survae.nn.build import zero_init_
from survae.nn.mlp import activation
from survae.registry import register


class MaskedLinear(nn.Linear):
    """A linear layer whose weight is multiplied by a fixed 0/1 ``mask`` buffer ``[out, in]``.

    Without autograd (sampling, where an autoregressive inverse calls the network once per
    dimension) the masked weight is built once and reused until the weight or mask changes
    (an optimiser step, ``load_state_dict``, ``.to()``), instead of once per call. The cache is
    a plain attribute: parameters and ``state_dict`` keys are those of ``nn.Linear`` + ``mask``.
    """

    def __init__(self, mask: torch.Tensor, bias: bool = True):
        out_features, in_features = mask.shape
        super().__init__(in_features, out_features, bias=bias)
        self.register_buffer("mask", mask.to(self.weight.dtype))
        self._masked: tuple[tuple, torch.Tensor] | None = None

    def masked_weight(self) -> torch.Tensor:
        """``weight * mask``, cached while no gradient is being recorded."""
        w, m = self.weight, self.mask
        if (torch.is_grad_enabled() and w.requires_grad) or torch.compiler.is_compiling():
            return w * m
        key = (w._version, m._version, w.data_ptr(), m.data_ptr(), w.dtype, w.device)
        if self._masked is None or self._masked[0] != key:
            self._masked = (key, (w * m).detach())
        return self._masked[1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.masked_weight(), self.bias)


def _input_order(features: int, random_order: bool, reverse_order: bool, seed: int) -> torch.Tensor:
    """Degrees ``1..D`` of the inputs: natural, reversed, or a seeded random permutation."""
    if random_order:
        gen = torch.Generator().manual_seed(seed)
        return torch.randperm(features, generator=gen) + 1
    order = torch.arange(1, features + 1)
    return order.flip(0) if reverse_order else order


@register("network", "made")
class MADE(nn.Module):
    """Strictly autoregressive MLP ``[..., D] -> [..., out_channels]``.

    ``out_channels`` must be a multiple of ``D = in_channels``; the output is laid out
    dimension-major, so ``out.view(..., D, out_channels // D)[..., i, :]`` are the parameters of
    dimension ``i`` and depend only on inputs ``j`` with ``order[j] < order[i]`` (the first
    dimension in the order gets constant parameters, or a function of the context only).

    ``context_features > 0`` makes it conditional: the context enters the first hidden layer
    and the output layer through unmasked linear maps, so every output may depend on it.
    ``residual=True`` turns each hidden-to-hidden layer into a masked pre-activation residual
    update ``h + W·act(h)`` (all hidden sizes must then be equal). With
    ``zero_init_output=True`` the output (and the context's path into it) start at zero, so a
    flow built on it starts at the identity.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        hidden: Sequence[int] = (512, 512),
        context_features: int = 0,
        activation_name: str = "relu",
        residual: bool = False,
        random_order: bool = False,
        reverse_order: bool = False,
        seed: int = 0,
        zero_init_output: bool = True,
    ):
        super().__init__()
        hidden = list(hidden)
        if in_channels < 1:
            raise ValueError(f"MADE needs at least one input feature, got {in_channels}")
        if out_channels % in_channels != 0 or out_channels == 0:
            raise ValueError(
                f"MADE: out_channels ({out_channels}) must be a positive multiple of "
                f"in_channels ({in_channels}): the output holds out_channels // in_channels "
                "parameters per input dimension"
            )
        if not hidden:
            raise ValueError("MADE needs at least one hidden layer")
        if residual and len(set(hidden)) != 1:
            raise ValueError(f"MADE with residual=True needs equal hidden sizes, got {hidden}")
        D = in_channels
        self.in_channels, self.out_channels = in_channels, out_channels
        self.params_per_dim = out_channels // D
        self.context_features = context_features
        self.residual = residual

        order = _input_order(D, random_order, reverse_order, seed)
        self.register_buffer("order", order)
        max_hidden_degree = max(D - 1, 1)
        degrees = [order]
        for h in hidden:
            degrees.append(torch.arange(h) % max_hidden_degree + 1)

        self.hidden_layers = nn.ModuleList()
        for d_in, d_out in zip(degrees[:-1], degrees[1:]):
            mask = d_out[:, None] >= d_in[None, :]
            self.hidden_layers.append(MaskedLinear(mask))
        out_degrees = order.repeat_interleave(self.params_per_dim)
        self.output_layer = MaskedLinear(out_degrees[:, None] > degrees[-1][None, :])
        self.act = activation(activation_name)

        if context_features > 0:
            self.context_hidden = nn.Linear(context_features, hidden[0])
            self.context_output = nn.Linear(context_features, out_channels, bias=False)
        else:
            self.context_hidden = None
            self.context_output = None
        if zero_init_output:
            zero_init_(self.output_layer)
            if self.context_output is not None:
                zero_init_(self.context_output)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        if x.shape[-1] != self.in_channels:
            raise ShapeError(
                f"MADE: expected input with last dimension {self.in_channels}, "
                f"got shape {tuple(x.shape)}"
            )
        if (context is None) != (self.context_output is None):
            raise ValueError(
                f"MADE built with context_features={self.context_features} was called "
                f"{'without' if context is None else 'with'} a context"
            )
        if context is not None and context.shape[-1] != self.context_features:
            raise ShapeError(
                f"MADE: expected context with last dimension {self.context_features}, "
                f"got shape {tuple(context.shape)}"
            )
        h = self.hidden_layers[0](x)
        if self.context_hidden is not None:
            h = h + self.context_hidden(context)
        for layer in self.hidden_layers[1:]:
            h = h + layer(self.act(h)) if self.residual else layer(self.act(h))
        out = self.output_layer(self.act(h))
        if self.context_output is not None:
            out = out + self.context_output(context)
        return out
