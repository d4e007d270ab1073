"""Autoregressive flows on images ``[B, C, H, W]`` (the official SurVAE library's 2-D
autoregressive bijections): ``z_{c,h,w} = f(x_{c,h,w}; θ_{c,h,w}(x_<))`` with ``θ`` from one
pass of an autoregressive network such as :class:`~survae.nn.pixelcnn.PixelCNN`, in raster
order (rows, columns, then channels within a pixel).

The network maps ``C`` channels to ``P·C`` with parameter ``p`` of channel ``c`` at channel
``p·C + c``. The Jacobian is triangular in that order, so the likelihood contribution is
``Σ log|f'(x_{c,h,w})|``. The density direction is one network pass; the inverse takes one pass
per element (``order="raster_cwh"``, ``C·H·W`` passes) or per pixel (``"raster_wh"``, ``H·W``
passes, for networks whose channels within a pixel do not depend on each other): after pass
``k`` the first ``k`` elements in the order are exact.

Conditional flows (the official conditional 2-D autoregressive bijections): with
``context_channels > 0`` the network is called as ``net(x, context)`` (a network spec gets
``context_channels`` added, as :class:`~survae.nn.pixelcnn.PixelCNN` takes it), with a
context of the image's spatial size.

Elementwise maps: affine and additive, and the spline and mixture-CDF maps of
:mod:`~survae.transforms.bijections.piecewise_layers`,
:mod:`~survae.transforms.bijections.mixture_cdf_layers` and the rational-quadratic spline.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from survae.errors import check_ndim, check_shape
from survae.nn.build import NetSpec, build_network
from survae.registry import register
from survae.transforms.base import Bijection
from survae.transforms.bijections.elementwise_params import _ElementwiseMap
from survae.transforms.bijections.mixture_cdf_layers import _MixtureCDF
from survae.transforms.bijections.piecewise import DEFAULT_MIN_BIN_HEIGHT, DEFAULT_MIN_BIN_WIDTH
from survae.transforms.bijections.piecewise_layers import _Piecewise
from survae.transforms.bijections.spline import rational_quadratic_spline

ORDERS = ("raster_cwh", "raster_wh")


class ElementwiseAutoregressive2d(_ElementwiseMap, Bijection):
    """Base: the network, the parameter layout and the sequential inverse (module docstring).
    Subclasses set ``params_per_element`` before calling ``super().__init__``."""

    def __init__(
        self,
        num_channels: int,
        net: NetSpec,
        order: str = "raster_cwh",
        context_channels: int = 0,
    ):
        super().__init__()
        if order not in ORDERS:
            raise ValueError(f"{type(self).__name__}: order must be one of {ORDERS}, got {order!r}")
        if num_channels < 1:
            raise ValueError(f"{type(self).__name__}: num_channels must be >= 1")
        self.num_channels, self.order = int(num_channels), order
        self.context_channels = int(context_channels)
        if self.context_channels and isinstance(net, Mapping):
            net = {**net, "context_channels": self.context_channels}
        self.net = build_network(net, self.num_channels, self.params_per_element * num_channels)

    def _params(self, x: torch.Tensor, context: torch.Tensor | None) -> torch.Tensor:
        B, C, H, W = x.shape
        if self.context_channels:
            if context is None:
                raise ValueError(
                    f"{type(self).__name__} is conditional (context_channels="
                    f"{self.context_channels}) and needs a context"
                )
            check_shape(self, context, (B, self.context_channels, H, W), "context")
            h = self.net(x, context)
        else:
            h = self.net(x)
        check_shape(self, h, (B, self.params_per_element * C, H, W), "network output")
        return h.view(B, self.params_per_element, C, H, W).movedim(1, -1)

    def _check(self, x: torch.Tensor, what: str) -> None:
        check_ndim(self, x, 4, what)
        check_shape(self, x, (None, self.num_channels, None, None), what)

    def forward(
        self, x: torch.Tensor, context: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        self._check(x, "input")
        z, log_deriv = self._transform(x, self._params(x, context), inverse=False)
        return z, log_deriv.flatten(1).sum(1)

    def inverse_with_ldj(
        self, z: torch.Tensor, context: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        self._check(z, "latent")
        _, C, H, W = z.shape
        x, log_deriv = torch.zeros_like(z), torch.zeros_like(z)
        for _ in range(C * H * W if self.order == "raster_cwh" else H * W):
            x, log_deriv = self._transform(z, self._params(x, context), inverse=True)
        return x, log_deriv.flatten(1).sum(1)

    def extra_repr(self) -> str:
        ctx = f", context_channels={self.context_channels}" if self.context_channels else ""
        return f"num_channels={self.num_channels}, order={self.order!r}{ctx}"


@register("layer", "affine_autoregressive_2d")
class AffineAutoregressive2d(ElementwiseAutoregressive2d):
    """``z = exp(s)·x + t`` with ``[s, t]`` per element from the autoregressive network
    (parameters 0 and 1; the official ``AffineAutoregressiveBijection2d``'s order).
    Likelihood contribution: ``Σ s`` over all elements."""

    params_per_element = 2

    def _transform(self, x, params, inverse):
        log_scale, shift = params[..., 0], params[..., 1]
        if inverse:
            return (x - shift) * torch.exp(-log_scale), -log_scale
        return x * torch.exp(log_scale) + shift, log_scale


@register("layer", "additive_autoregressive_2d")
class AdditiveAutoregressive2d(ElementwiseAutoregressive2d):
    """``z = x + t`` with ``t`` per element from the autoregressive network.
    Likelihood contribution: 0."""

    params_per_element = 1

    def _transform(self, x, params, inverse):
        shift = params[..., 0]
        return (x - shift if inverse else x + shift), torch.zeros_like(x)


class _Spline2d(_Piecewise, ElementwiseAutoregressive2d):
    def __init__(
        self,
        num_channels: int,
        net: NetSpec,
        num_bins: int = 8,
        tail_bound: float = 3.0,
        order: str = "raster_cwh",
        min_bin_width: float = DEFAULT_MIN_BIN_WIDTH,
        min_bin_height: float = DEFAULT_MIN_BIN_HEIGHT,
        context_channels: int = 0,
    ):
        self._set_spline(num_bins, tail_bound, min_bin_width, min_bin_height)
        super().__init__(num_channels, net, order, context_channels)


@register("layer", "linear_spline_autoregressive_2d")
class LinearSplineAutoregressive2d(_Spline2d):
    """Piecewise-linear spline per element, parameters from the autoregressive network.
    Likelihood contribution: ``Σ log LS'(x)`` (0 in the identity tails)."""

    kind = "linear"


@register("layer", "quadratic_spline_autoregressive_2d")
class QuadraticSplineAutoregressive2d(_Spline2d):
    """Piecewise-quadratic spline per element, parameters from the autoregressive network.
    Likelihood contribution: ``Σ log QS'(x)`` (0 in the identity tails)."""

    kind = "quadratic"


@register("layer", "cubic_spline_autoregressive_2d")
class CubicSplineAutoregressive2d(_Spline2d):
    """Monotone cubic spline per element, parameters from the autoregressive network.
    Likelihood contribution: ``Σ log CS'(x)`` (0 in the identity tails)."""

    kind = "cubic"


@register("layer", "rq_spline_autoregressive_2d")
class RQSplineAutoregressive2d(_Spline2d):
    """Rational-quadratic spline (NSF) per element with ``3K − 1`` parameters (widths,
    heights, inner derivatives) from the autoregressive network. Likelihood contribution:
    ``Σ log RQS'(x)`` (0 in the identity tails)."""

    kind = "rational_quadratic"

    def _transform(self, x, params, inverse):
        K = self.num_bins
        w, h, d = params[..., :K], params[..., K : 2 * K], params[..., 2 * K :]
        return rational_quadratic_spline(
            x, w, h, d, inverse, self.tail_bound, self.min_bin_width, self.min_bin_height
        )


class _Mixture2d(_MixtureCDF, ElementwiseAutoregressive2d):
    def __init__(
        self,
        num_channels: int,
        net: NetSpec,
        num_mixtures: int = 4,
        order: str = "raster_cwh",
        num_iters: int = 100,
        num_bins: int | None = None,
        context_channels: int = 0,
    ):
        self._set_mixture(num_mixtures, num_iters, num_bins)
        super().__init__(num_channels, net, order, context_channels)


@register("layer", "gaussian_mixture_autoregressive_2d")
class GaussianMixtureAutoregressive2d(_Mixture2d):
    """Gaussian-mixture CDF per element (ℝ → (0, 1)), parameters from the autoregressive
    network. Likelihood contribution: the mixture log-density ``Σ log F'(x)``."""

    kind = "gaussian"


@register("layer", "logistic_mixture_autoregressive_2d")
class LogisticMixtureAutoregressive2d(_Mixture2d):
    """Logistic-mixture CDF per element (ℝ → (0, 1)), parameters from the autoregressive
    network. Likelihood contribution: the mixture log-density ``Σ log F'(x)``."""

    kind = "logistic"


@register("layer", "censored_logistic_mixture_autoregressive_2d")
class CensoredLogisticMixtureAutoregressive2d(_Mixture2d):
    """Censored logistic-mixture CDF per element on [0, 1], parameters from the
    autoregressive network. Likelihood contribution: ``Σ log F'(x)`` (``−inf`` outside
    [0, 1])."""

    kind = "censored"
