"""Bases for coupling and masked autoregressive layers whose elementwise map takes a vector of
``P`` parameters per transformed element (splines, mixture CDFs).

A subclass sets ``params_per_element`` and implements ``_transform(x, params, inverse)``:
``x`` of any shape ``S``, ``params`` of shape ``S + (P,)``, returning the mapped tensor and the
elementwise ``log|d out / d in|`` of the direction applied, both of shape ``S``.

Network layout (as for the rational-quadratic splines): element-major along dimension 1, i.e.
transformed channel ``j``'s parameters are at ``j·P … (j + 1)·P − 1`` of the coupling network's
output, and feature ``i``'s at ``i·P … (i + 1)·P − 1`` of the MADE's.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from survae.nn.build import NetSpec
from survae.nn.made import MADE
from survae.transforms.bijections.coupling import _Coupling
from survae.transforms.bijections.made_elementwise import MADEElementwise
from survae.utils import sum_except_batch


class _ElementwiseMap:
    """``params_per_element`` and the elementwise map a subclass defines."""

    params_per_element: int = 1

    def _transform(
        self, x: torch.Tensor, params: torch.Tensor, inverse: bool
    ) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError


class ElementwiseCoupling(_ElementwiseMap, _Coupling):
    """A coupling ``z_b = f(x_b; θ(x_a))``, ``z_a = x_a``, with ``f`` from ``_transform``.

    Likelihood contribution: ``Σ log|f'(x_b)|`` over the transformed elements. Masks,
    ``split_sizes``, ``reverse_mask`` and ``context_channels`` as in ``AffineCoupling``.
    Subclasses set ``self.params_per_element`` before calling ``super().__init__``.
    """

    def __init__(
        self,
        num_channels: int,
        net: NetSpec,
        mask: str = "channel",
        context_channels: int = 0,
        split_sizes: Sequence[int] | None = None,
        reverse_mask: bool = False,
    ):
        super().__init__(num_channels, net, mask, context_channels, split_sizes, reverse_mask)

    def _elementwise(self, x, h, inverse, keep):
        P = self.params_per_element
        params = h.reshape(h.shape[0], x.shape[1], P, *h.shape[2:]).movedim(2, -1)
        y, log_deriv = self._transform(x, params, inverse)
        if keep is not None:
            y = torch.where(keep > 0, x, y)
            log_deriv = torch.where(keep > 0, torch.zeros_like(log_deriv), log_deriv)
        return y, sum_except_batch(log_deriv)


class ElementwiseAutoregressive(MADEElementwise):
    """A masked autoregressive layer on vectors ``[B, features]``:
    ``z_i = f(x_i; θ_i(x_<i))`` with ``θ`` from one MADE pass, ``f`` from ``_transform``.

    Likelihood contribution: ``Σ_i log|f'(x_i)|`` (triangular Jacobian). The density direction
    is one MADE pass; the inverse takes ``features`` sequential passes. ``context_features > 0``
    makes it conditional on ``context`` ``[B, context_features]``. The MADE's output starts at
    zero. Subclasses set ``self.params_per_element`` before calling ``super().__init__``.
    """

    def __init__(
        self,
        features: int,
        hidden: Sequence[int] = (256, 256),
        context_features: int = 0,
        random_order: bool = False,
        reverse_order: bool = False,
        seed: int = 0,
        activation_name: str = "relu",
    ):
        super().__init__()
        self._set_features(features, context_features)
        self.made = MADE(
            self.features,
            self.features * self.params_per_element,
            hidden=[int(h) for h in hidden],
            context_features=self.context_features,
            activation_name=activation_name,
            random_order=random_order,
            reverse_order=reverse_order,
            seed=seed,
        )

    def inverse_with_ldj(
        self, z: torch.Tensor, context: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """After pass ``k`` the first ``k`` dimensions in the MADE's order are exact."""
        context = self._check(z, context)
        x = torch.zeros_like(z)
        log_deriv = torch.zeros_like(z)
        for _ in range(self.features):
            x, log_deriv = self._transform(z, self._params(x, context), inverse=True)
        return x, log_deriv.sum(dim=1)
