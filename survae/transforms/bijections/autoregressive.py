"""Masked affine autoregressive flows: MAF (Papamakarios et al., 2017) and IAF (Kingma et al.,
2016), both built on a :class:`~survae.nn.made.MADE`.

Parametrisation (shared by both): for each dimension ``i`` a MADE gives a shift ``mu_i`` and an
unconstrained ``r_i`` from the preceding dimensions, the log-scale is the soft clamp
``alpha_i = B·tanh(r_i / B)`` (``B = log_scale_bound``; ``None`` leaves ``alpha_i = r_i``), and

    x_i = mu_i + exp(alpha_i) · z_i          (generative direction, z -> x)
    z_i = (x_i - mu_i) · exp(-alpha_i)       (density direction, x -> z)

so ``log|det dz/dx| = -Σ_i alpha_i``. The soft clamp has slope 1 at 0 and keeps every layer's
scale within ``exp(±B)``, which prevents the exploding scales that make MAF training diverge.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from survae.errors import check_shape
from survae.nn.made import MADE
from survae.registry import register
from survae.transforms.base import Bijection, InverseBijection


def _check_inputs(
    layer: object,
    x: torch.Tensor,
    context: torch.Tensor | None,
    features: int,
    context_features: int,
) -> torch.Tensor | None:
    """Shape checks naming ``layer``; returns the context to use (None when unconditional)."""
    check_shape(layer, x, (None, features))
    if context_features == 0:
        return None  # an unconditional layer ignores any context
    if context is None:
        raise ValueError(
            f"{type(layer).__name__} is conditional (context_features={context_features}) "
            "and needs a context"
        )
    check_shape(layer, context, (x.shape[0], context_features), what="context")
    return context


@register("layer", "maf")
class MaskedAffineAutoregressive(Bijection):
    """Masked autoregressive flow layer on vectors ``[B, features]`` (Papamakarios et al., 2017).

    Likelihood contribution ``log|det dz/dx| = -Σ_i alpha_i(x_<i)``. The density direction
    ``forward`` (x -> z) is one MADE pass; ``inverse`` (z -> x, sampling) takes ``features``
    sequential passes. ``context_features > 0`` makes it conditional on ``context`` of shape
    ``[B, context_features]``. The MADE's output starts at zero, so the layer starts as the
    identity.
    """

    def __init__(
        self,
        features: int,
        hidden: Sequence[int] = (512, 512),
        context_features: int = 0,
        random_order: bool = False,
        reverse_order: bool = False,
        seed: int = 0,
        activation_name: str = "relu",
        residual: bool = False,
        log_scale_bound: float | None = 5.0,
    ):
        super().__init__()
        if log_scale_bound is not None and log_scale_bound <= 0:
            raise ValueError(f"log_scale_bound must be positive or None, got {log_scale_bound}")
        self.features = features
        self.context_features = context_features
        self.log_scale_bound = log_scale_bound
        self.made = MADE(
            features,
            2 * features,
            hidden=hidden,
            context_features=context_features,
            activation_name=activation_name,
            residual=residual,
            random_order=random_order,
            reverse_order=reverse_order,
            seed=seed,
        )

    def _check(self, x: torch.Tensor, context: torch.Tensor | None) -> torch.Tensor | None:
        return _check_inputs(self, x, context, self.features, self.context_features)

    def _params(
        self, x: torch.Tensor, context: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Shift ``mu`` and log-scale ``alpha``, each ``[B, features]``, from one MADE pass."""
        out = self.made(x, context).view(x.shape[0], self.features, 2)
        mu, raw = out[..., 0], out[..., 1]
        if self.log_scale_bound is None:
            return mu, raw
        bound = self.log_scale_bound
        return mu, bound * torch.tanh(raw / bound)

    def forward(
        self, x: torch.Tensor, context: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        context = self._check(x, context)
        mu, alpha = self._params(x, context)
        z = (x - mu) * torch.exp(-alpha)
        return z, -alpha.sum(dim=1)

    def inverse_with_ldj(
        self, z: torch.Tensor, context: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Sequential inversion: after pass ``k`` the first ``k`` dimensions in the MADE's order
        are exact, so ``features`` passes recover ``x``; the last pass's ``alpha`` is already
        computed from the final ``x`` and gives ``log|det dx/dz| = Σ alpha``."""
        context = self._check(z, context)
        x = torch.zeros_like(z)
        alpha = torch.zeros_like(z)
        for _ in range(self.features):
            mu, alpha = self._params(x, context)
            x = mu + torch.exp(alpha) * z
        return x, alpha.sum(dim=1)


@register("layer", "iaf")
class InverseAutoregressive(InverseBijection):
    """Inverse autoregressive flow layer on vectors ``[B, features]`` (Kingma et al., 2016).

    A :class:`MaskedAffineAutoregressive` run backwards: sampling (``inverse``, z -> x) is one
    MADE pass, ``x_i = (z_i - mu_i(z_<i)) · exp(-alpha_i(z_<i))``, and density evaluation
    (``forward``, x -> z) takes ``features`` sequential passes. Likelihood contribution
    ``log|det dz/dx| = +Σ_i alpha_i(z_<i)``. Conditional on ``context`` ``[B, context_features]``
    when ``context_features > 0`` (e.g. an IAF posterior in a VAE, conditioned on the encoder).
    """

    def __init__(
        self,
        features: int,
        hidden: Sequence[int] = (512, 512),
        context_features: int = 0,
        random_order: bool = False,
        reverse_order: bool = False,
        seed: int = 0,
        activation_name: str = "relu",
        residual: bool = False,
        log_scale_bound: float | None = 5.0,
    ):
        super().__init__(
            MaskedAffineAutoregressive(
                features,
                hidden=hidden,
                context_features=context_features,
                random_order=random_order,
                reverse_order=reverse_order,
                seed=seed,
                activation_name=activation_name,
                residual=residual,
                log_scale_bound=log_scale_bound,
            )
        )
        self.features = features
        self.context_features = context_features

    @property
    def made(self) -> MADE:
        """The MADE of the wrapped MAF."""
        return self.bijection.made

    def forward(
        self, x: torch.Tensor, context: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        # the wrapped MAF's inverse log-determinant is already log|det d(output)/d(input)|
        context = _check_inputs(self, x, context, self.features, self.context_features)
        return self.bijection.inverse_with_ldj(x, context)

    def inverse_with_ldj(
        self, z: torch.Tensor, context: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        context = _check_inputs(self, z, context, self.features, self.context_features)
        return self.bijection(z, context)
