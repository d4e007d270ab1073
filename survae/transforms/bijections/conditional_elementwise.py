"""Conditional elementwise bijections: a shift (and scale) of ``x`` predicted from the context
alone (the official SurVAE library's ``ConditionalAdditiveBijection`` and
``ConditionalAffineBijection``).

A network maps the context ``[B, context_channels, ...]`` to ``[B, k·num_channels, ...]``
(``k = 1`` for the shift, ``2`` for shift and log-scale, split along dimension 1), of the same
shape as ``x`` apart from dimension 1. Because the parameters do not depend on ``x``, the map
is an elementwise affine function of ``x`` and its inverse is exact.
"""

from __future__ import annotations

import torch

from survae.errors import check_shape
from survae.nn.build import NetSpec, build_network
from survae.registry import register
from survae.transforms.base import Bijection
from survae.utils import sum_except_batch


class _ContextParams(Bijection):
    """The network and its call; subclasses say how many parameters each element takes."""

    params_per_element = 1

    def __init__(self, num_channels: int, context_channels: int, net: NetSpec):
        super().__init__()
        name = type(self).__name__
        if num_channels < 1 or context_channels < 1:
            raise ValueError(
                f"{name}: num_channels and context_channels must be >= 1, got "
                f"{num_channels}, {context_channels}"
            )
        self.num_channels = int(num_channels)
        self.context_channels = int(context_channels)
        self.net = build_network(net, self.context_channels, self.params_per_element * num_channels)

    def _params(self, x: torch.Tensor, context: torch.Tensor | None) -> torch.Tensor:
        if context is None:
            raise ValueError(f"{type(self).__name__} is conditional: pass context=...")
        out = self.net(context)
        expected = (x.shape[0], self.params_per_element * self.num_channels, *x.shape[2:])
        check_shape(self, out, expected, what="network output")
        return out

    def extra_repr(self) -> str:
        return f"num_channels={self.num_channels}, context_channels={self.context_channels}"


@register("layer", "conditional_additive")
class ConditionalAdditive(_ContextParams):
    """``z = x + t(c)`` with ``t = net(context)``. Likelihood contribution: 0."""

    def forward(
        self, x: torch.Tensor, context: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return x + self._params(x, context), x.new_zeros(x.shape[0])

    def inverse_with_ldj(
        self, z: torch.Tensor, context: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return z - self._params(z, context), z.new_zeros(z.shape[0])


@register("layer", "conditional_affine")
class ConditionalAffine(_ContextParams):
    """``z = t(c) + exp(s(c))·x`` with ``[t, s] = net(context)`` split along dimension 1.

    Likelihood contribution: ``Σ s(c)`` over the elements of ``x``.
    """

    params_per_element = 2

    def _shift_log_scale(
        self, x: torch.Tensor, context: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        shift, log_scale = self._params(x, context).chunk(2, dim=1)
        return shift, log_scale

    def forward(
        self, x: torch.Tensor, context: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        shift, log_scale = self._shift_log_scale(x, context)
        return shift + torch.exp(log_scale) * x, sum_except_batch(log_scale)

    def inverse_with_ldj(
        self, z: torch.Tensor, context: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        shift, log_scale = self._shift_log_scale(z, context)
        return (z - shift) * torch.exp(-log_scale), -sum_except_batch(log_scale)
