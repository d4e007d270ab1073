"""Unconstrained monotonic neural networks, UMNN (Wehenkel & Louppe, 2019).

A scalar map is the integral of a strictly positive network:

    z = β + ∫_0^x g(t, h) dt,     dz/dx = g(x, h) > 0

with ``h`` (``embedding`` numbers) and the offset ``β`` per transformed element from a
conditioner (a MADE or a coupling network) and ``g`` a small MLP of ``(t, h)``, shared by all
elements of the layer, whose output goes through ``ELU + 1 + min_derivative`` (positive, and
at least ``min_derivative`` so that the map is onto the real line and bisection always
brackets the inverse). The integral is computed by ``quadrature``-point Gauss–Legendre
quadrature on ``[0, x]`` (UMNN uses Clenshaw–Curtis; both converge quickly for a smooth
integrand); the log-derivative ``log g(x, h)`` is exact for the integral and matches the
derivative of the quadrature to the quadrature's error, which the tests bound.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from survae.nn.build import NetSpec
from survae.registry import register
from survae.transforms.bijections.monotone import MonotoneAutoregressive, MonotoneCoupling


class Integrand(nn.Module):
    """``g(t, h) = ELU(MLP([t, h])) + 1 + min_derivative``: the positive derivative of a UMNN
    map, with ``tanh`` hidden units (smooth, so quadrature converges fast)."""

    def __init__(self, embedding: int, hidden: Sequence[int], min_derivative: float):
        super().__init__()
        sizes = [1 + int(embedding), *[int(h) for h in hidden], 1]
        layers: list[nn.Module] = []
        for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
            layers.append(nn.Linear(n_in, n_out))
            if i < len(sizes) - 2:
                layers.append(nn.Tanh())
        self.net = nn.Sequential(*layers)
        self.min_derivative = float(min_derivative)

    def forward(self, t: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """``t`` shape ``S``, ``h`` shape ``S + (E,)`` -> ``g`` shape ``S``."""
        out = self.net(torch.cat([t.unsqueeze(-1), h], dim=-1)).squeeze(-1)
        return F.elu(out) + 1.0 + self.min_derivative


class _Integral:
    """The UMNN map; the conditioner gives ``[β, h (embedding)]`` per element."""

    def _set_umnn(
        self,
        embedding: int,
        integrand_hidden: Sequence[int],
        quadrature: int,
        min_derivative: float,
    ) -> None:
        owner = type(self).__name__
        if embedding < 1 or quadrature < 2:
            raise ValueError(
                f"{owner}: embedding must be >= 1 and quadrature >= 2, got {embedding} and "
                f"{quadrature}"
            )
        if not min_derivative > 0:
            raise ValueError(f"{owner}: min_derivative must be positive, got {min_derivative}")
        self.embedding, self.quadrature = int(embedding), int(quadrature)
        self.params_per_element = 1 + self.embedding
        nodes, weights = np.polynomial.legendre.leggauss(self.quadrature)
        self._integrand_args = (self.embedding, tuple(integrand_hidden), float(min_derivative))
        self._nodes = torch.from_numpy(nodes)
        self._weights = torch.from_numpy(weights)

    def _build_integrand(self) -> None:
        self.integrand = Integrand(*self._integrand_args)
        # quadrature on [-1, 1], moved to [0, x] in _map; float64 buffers, cast per call
        self.register_buffer("nodes", self._nodes, persistent=False)
        self.register_buffer("weights", self._weights, persistent=False)
        del self._nodes, self._weights

    def _map(self, x: torch.Tensor, params: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        beta, h = params[..., 0], params[..., 1:]
        nodes = self.nodes.to(x.dtype)
        weights = self.weights.to(x.dtype)
        t = x.unsqueeze(-1) * (nodes + 1.0) / 2.0  # S + (Q,)
        hq = h.unsqueeze(-2).expand(*t.shape, h.shape[-1])
        g = self.integrand(t, hq)
        y = beta + x / 2.0 * (g * weights).sum(dim=-1)
        return y, torch.log(self.integrand(x, h))

    def _umnn_repr(self) -> str:
        return f"embedding={self.embedding}, quadrature={self.quadrature}"


@register("layer", "umnn_autoregressive")
class UMNNAutoregressive(_Integral, MonotoneAutoregressive):
    """UMNN-MAF (Wehenkel & Louppe, 2019) on vectors ``[B, features]``:
    ``z_i = β_i + ∫_0^{x_i} g(t, h_i) dt`` with ``(β_i, h_i)`` from a MADE of ``x_<i``.

    Likelihood contribution ``log|det dz/dx| = Σ_i log g(x_i, h_i)`` (triangular Jacobian).
    The density direction is one MADE pass plus ``quadrature`` integrand evaluations per
    element; sampling takes ``features`` passes of bisection. ``integrand_hidden`` sizes the
    integrand MLP; ``context_features > 0`` makes the layer conditional.
    """

    def __init__(
        self,
        features: int,
        hidden: Sequence[int] = (256, 256),
        embedding: int = 8,
        integrand_hidden: Sequence[int] = (64, 64),
        quadrature: int = 32,
        min_derivative: float = 1e-3,
        context_features: int = 0,
        random_order: bool = False,
        reverse_order: bool = False,
        seed: int = 0,
        activation_name: str = "relu",
        residual: bool = False,
    ):
        self._set_umnn(embedding, integrand_hidden, quadrature, min_derivative)
        super().__init__(
            features, hidden, context_features, random_order, reverse_order, seed,
            activation_name, residual,
        )  # fmt: skip
        self._build_integrand()

    def extra_repr(self) -> str:
        return super().extra_repr() + ", " + self._umnn_repr()


@register("layer", "umnn_coupling")
class UMNNCoupling(_Integral, MonotoneCoupling):
    """Coupling with a UMNN map: ``z_b = β + ∫_0^{x_b} g(t, h(x_a)) dt``, ``z_a = x_a``.

    Likelihood contribution: ``Σ log g(x_b, h)`` over the transformed elements. The network
    outputs ``1 + embedding`` channels per transformed channel (``[β, h]``, element-major along
    dimension 1); masks and context as in
    :class:`~survae.transforms.bijections.coupling.AffineCoupling`; the inverse is bisection.
    """

    def __init__(
        self,
        num_channels: int,
        net: NetSpec,
        embedding: int = 8,
        integrand_hidden: Sequence[int] = (64, 64),
        quadrature: int = 32,
        min_derivative: float = 1e-3,
        mask: str = "channel",
        context_channels: int = 0,
        split_sizes: Sequence[int] | None = None,
        reverse_mask: bool = False,
    ):
        self._set_umnn(embedding, integrand_hidden, quadrature, min_derivative)
        super().__init__(num_channels, net, mask, context_channels, split_sizes, reverse_mask)
        self._build_integrand()

    def extra_repr(self) -> str:
        return super().extra_repr() + ", " + self._umnn_repr()


__all__ = ["Integrand", "UMNNAutoregressive", "UMNNCoupling"]
