"""The shared shape of masked autoregressive layers with an elementwise map: ``z_i = f(x_i;
θ_i(x_<i))`` on vectors ``[B, features]``, with every ``θ_i`` (``params_per_element`` numbers)
from one pass of a MADE in ``self.made``. The density direction is one pass and the Jacobian is
triangular, so the likelihood contribution is ``Σ_i log f'(x_i; θ_i)``.

Subclasses build ``self.made`` and implement :meth:`MADEElementwise._transform` (the map or its
inverse with its log-derivative, elementwise) and their own sequential ``inverse_with_ldj``.
"""

from __future__ import annotations

import torch

from survae.transforms.base import Bijection
from survae.transforms.bijections.autoregressive import _check_inputs


class MADEElementwise(Bijection):
    """Base of the MADE-conditioned elementwise layers (RQ splines, NAF-DSF, UMNN); sets
    ``features`` and ``context_features`` and provides the input checks, the parameters and
    the density direction."""

    params_per_element: int = 1

    def _set_features(self, features: int, context_features: int) -> None:
        if features < 1:
            raise ValueError(f"{type(self).__name__}: features must be >= 1, got {features}")
        self.features = int(features)
        self.context_features = int(context_features)

    def _transform(
        self, x: torch.Tensor, params: torch.Tensor, inverse: bool
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(f(x; params), log f'(x))`` elementwise (or the inverse and its log-derivative)."""
        raise NotImplementedError

    def _check(self, x: torch.Tensor, context: torch.Tensor | None) -> torch.Tensor | None:
        context = _check_inputs(self, x, context, self.features, self.context_features)
        return None if context is None else context.to(x.dtype)

    def _params(self, x: torch.Tensor, context: torch.Tensor | None) -> torch.Tensor:
        return self.made(x, context).view(x.shape[0], self.features, self.params_per_element)

    def forward(
        self, x: torch.Tensor, context: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        context = self._check(x, context)
        z, log_deriv = self._transform(x, self._params(x, context), inverse=False)
        return z, log_deriv.sum(dim=1)


__all__ = ["MADEElementwise"]
