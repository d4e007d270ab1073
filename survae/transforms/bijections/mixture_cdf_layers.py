"""Coupling and masked autoregressive layers that map elements through a mixture CDF
(:mod:`survae.transforms.bijections.mixture_cdf`): the official SurVAE library's
Gaussian-mixture and censored logistic-mixture couplings and the Gaussian, logistic and
censored logistic mixture autoregressive bijections.

Each transformed element takes ``3·num_mixtures`` network outputs, element-major along
dimension 1 and ordered ``[weight logits, means, log-scales]`` within an element. Outputs lie
in (0, 1) (see the functional module); ``num_iters`` bisection steps invert the CDF. The
censored mixtures take ``num_bins`` (default 256, the number of data levels).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from survae.nn.build import NetSpec
from survae.registry import register
from survae.transforms.bijections.elementwise_params import (
    ElementwiseAutoregressive,
    ElementwiseCoupling,
)
from survae.transforms.bijections.mixture_cdf import (
    censored_logistic_mixture_cdf,
    gaussian_mixture_cdf,
    logistic_mixture_cdf,
)


class _MixtureCDF:
    """Settings and the elementwise map; ``kind`` picks the mixture."""

    kind = "gaussian"

    def _set_mixture(self, num_mixtures: int, num_iters: int, num_bins: int | None) -> None:
        name = type(self).__name__
        if self.kind != "censored":
            if num_bins is not None:
                raise ValueError(f"{name}: num_bins applies to the censored mixtures only")
        elif num_bins is None:
            num_bins = 256
        if num_mixtures < 1 or num_iters < 1:
            raise ValueError(
                f"{name}: num_mixtures and num_iters must be >= 1, got {num_mixtures}, {num_iters}"
            )
        if num_bins is not None and num_bins < 2:
            raise ValueError(f"{name}: num_bins must be >= 2, got {num_bins}")
        self.num_mixtures, self.num_iters = int(num_mixtures), int(num_iters)
        self.num_bins = None if num_bins is None else int(num_bins)
        self.params_per_element = 3 * self.num_mixtures

    def _transform(
        self, x: torch.Tensor, params: torch.Tensor, inverse: bool
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if self.kind == "censored":
            return censored_logistic_mixture_cdf(x, params, self.num_bins, inverse, self.num_iters)
        fn = gaussian_mixture_cdf if self.kind == "gaussian" else logistic_mixture_cdf
        return fn(x, params, inverse, self.num_iters)

    def _mixture_repr(self) -> str:
        bins = "" if self.num_bins is None else f", num_bins={self.num_bins}"
        return f"num_mixtures={self.num_mixtures}{bins}"


class _MixtureCoupling(_MixtureCDF, ElementwiseCoupling):
    def __init__(
        self,
        num_channels: int,
        net: NetSpec,
        num_mixtures: int = 4,
        mask: str = "channel",
        context_channels: int = 0,
        split_sizes: Sequence[int] | None = None,
        reverse_mask: bool = False,
        num_iters: int = 100,
        num_bins: int | None = None,
    ):
        self._set_mixture(num_mixtures, num_iters, num_bins)
        super().__init__(num_channels, net, mask, context_channels, split_sizes, reverse_mask)

    def extra_repr(self) -> str:
        return super().extra_repr() + ", " + self._mixture_repr()


class _MixtureAutoregressive(_MixtureCDF, ElementwiseAutoregressive):
    def __init__(
        self,
        features: int,
        hidden: Sequence[int] = (256, 256),
        num_mixtures: int = 4,
        context_features: int = 0,
        random_order: bool = False,
        reverse_order: bool = False,
        seed: int = 0,
        activation_name: str = "relu",
        num_iters: int = 100,
        num_bins: int | None = None,
    ):
        self._set_mixture(num_mixtures, num_iters, num_bins)
        super().__init__(
            features, hidden, context_features, random_order, reverse_order, seed, activation_name
        )

    def extra_repr(self) -> str:
        return f"features={self.features}, " + self._mixture_repr()


@register("layer", "gaussian_mixture_coupling")
class GaussianMixtureCoupling(_MixtureCoupling):
    """Gaussian-mixture CDF coupling: ``z_b = Σ_k π_k Φ((x_b − μ_k)/σ_k)`` with ``π, μ, σ``
    from a network of ``x_a``; ``z_a = x_a``; ℝ → (0, 1) on the transformed part.

    Likelihood contribution: ``Σ log Σ_k π_k N(x_b; μ_k, σ_k²)`` over the transformed elements.
    """

    kind = "gaussian"


@register("layer", "censored_logistic_mixture_coupling")
class CensoredLogisticMixtureCoupling(_MixtureCoupling):
    """Censored logistic-mixture CDF coupling on [0, 1] (for dequantized data in the unit
    interval, ``num_bins`` levels): ``z_b = F(x_b; θ(x_a))``, ``z_a = x_a``.

    Likelihood contribution: ``Σ log F'(x_b)`` over the transformed elements (``−inf`` for an
    element outside [0, 1]).
    """

    kind = "censored"


@register("layer", "gaussian_mixture_autoregressive")
class GaussianMixtureAutoregressive(_MixtureAutoregressive):
    """Masked autoregressive Gaussian-mixture CDF on ``[B, features]``:
    ``z_i = F(x_i; θ_i(x_<i))``, ℝ → (0, 1). Likelihood contribution:
    ``Σ_i log Σ_k π_ik N(x_i; μ_ik, σ_ik²)``.
    """

    kind = "gaussian"


@register("layer", "logistic_mixture_autoregressive")
class LogisticMixtureAutoregressive(_MixtureAutoregressive):
    """Masked autoregressive logistic-mixture CDF on ``[B, features]``:
    ``z_i = Σ_k π_ik σ((x_i − μ_ik)/s_ik)``, ℝ → (0, 1). Likelihood contribution: the mixture's
    log-density ``Σ_i log F'(x_i)``.
    """

    kind = "logistic"


@register("layer", "censored_logistic_mixture_autoregressive")
class CensoredLogisticMixtureAutoregressive(_MixtureAutoregressive):
    """Masked autoregressive censored logistic-mixture CDF on ``[B, features]`` in [0, 1]:
    ``z_i = F(x_i; θ_i(x_<i))``. Likelihood contribution: ``Σ_i log F'(x_i)`` (``−inf``
    outside [0, 1]).
    """

    kind = "censored"
