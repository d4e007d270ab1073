"""Coupling and masked autoregressive layers with piecewise-linear, -quadratic and cubic
splines (:mod:`survae.transforms.bijections.piecewise`), the official SurVAE library's
``LinearSpline``/``QuadraticSpline``/``CubicSpline`` coupling and autoregressive bijections.

Each transformed element gets ``P`` network outputs (linear ``K``, quadratic ``2K − 1``, cubic
``2K + 2`` for ``K = num_bins``), element-major along dimension 1. The spline acts on
``[-tail_bound, tail_bound]`` and is the identity outside; a zero network output (the default
MADE start, or a zero-initialised coupling network) is the identity map.
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
from survae.transforms.bijections.piecewise import (
    DEFAULT_MIN_BIN_HEIGHT,
    DEFAULT_MIN_BIN_WIDTH,
    cubic_spline,
    linear_spline,
    quadratic_spline,
)
from survae.transforms.bijections.spline import check_spline_args


class _Piecewise:
    """The spline settings and the elementwise map; ``kind`` picks the spline."""

    kind = "linear"

    #: quadratic only: learn the end densities too (``2K + 1`` parameters, the official layout)
    free_ends = False

    def _set_spline(
        self, num_bins: int, tail_bound: float, min_bin_width: float, min_bin_height: float
    ) -> None:
        check_spline_args(
            type(self).__name__, num_bins, tail_bound, min_bin_width, min_bin_height, 0
        )
        if self.kind == "quadratic" and num_bins < 2:
            raise ValueError(f"{type(self).__name__}: num_bins must be >= 2, got {num_bins}")
        self.num_bins, self.tail_bound = int(num_bins), float(tail_bound)
        self.min_bin_width, self.min_bin_height = float(min_bin_width), float(min_bin_height)
        K = self.num_bins
        counts = {
            "linear": K,
            "quadratic": 2 * K + (1 if self.free_ends else -1),
            "cubic": 2 * K + 2,
        }
        counts["rational_quadratic"] = 3 * K - 1  # (its map is spline.rational_quadratic_spline)
        self.params_per_element = counts[self.kind]

    def _set_free_ends(self, free_ends: bool) -> None:
        if free_ends and self.kind != "quadratic":
            raise ValueError(f"{type(self).__name__}: free_ends applies to quadratic splines only")
        self.free_ends = bool(free_ends)

    def _transform(
        self, x: torch.Tensor, params: torch.Tensor, inverse: bool
    ) -> tuple[torch.Tensor, torch.Tensor]:
        K, B = self.num_bins, self.tail_bound
        if self.kind == "linear":
            return linear_spline(x, params, inverse, B, self.min_bin_height)
        mins = {"min_bin_width": self.min_bin_width, "min_bin_height": self.min_bin_height}
        if self.kind == "quadratic":
            w, h = params[..., :K], params[..., K:]
            return quadratic_spline(x, w, h, inverse, B, **mins)
        w, h = params[..., :K], params[..., K : 2 * K]
        left, right = params[..., 2 * K : 2 * K + 1], params[..., 2 * K + 1 :]
        return cubic_spline(x, w, h, left, right, inverse, B, **mins)

    def _spline_repr(self) -> str:
        return f"num_bins={self.num_bins}, tail_bound={self.tail_bound}"


class _PiecewiseCoupling(_Piecewise, ElementwiseCoupling):
    def __init__(
        self,
        num_channels: int,
        net: NetSpec,
        num_bins: int = 8,
        tail_bound: float = 3.0,
        mask: str = "channel",
        context_channels: int = 0,
        split_sizes: Sequence[int] | None = None,
        reverse_mask: bool = False,
        min_bin_width: float = DEFAULT_MIN_BIN_WIDTH,
        min_bin_height: float = DEFAULT_MIN_BIN_HEIGHT,
        free_ends: bool = False,
    ):
        self._set_free_ends(free_ends)
        self._set_spline(num_bins, tail_bound, min_bin_width, min_bin_height)
        super().__init__(num_channels, net, mask, context_channels, split_sizes, reverse_mask)

    def extra_repr(self) -> str:
        return super().extra_repr() + ", " + self._spline_repr()


class _PiecewiseAutoregressive(_Piecewise, ElementwiseAutoregressive):
    def __init__(
        self,
        features: int,
        hidden: Sequence[int] = (256, 256),
        num_bins: int = 8,
        tail_bound: float = 3.0,
        context_features: int = 0,
        random_order: bool = False,
        reverse_order: bool = False,
        seed: int = 0,
        activation_name: str = "relu",
        min_bin_width: float = DEFAULT_MIN_BIN_WIDTH,
        min_bin_height: float = DEFAULT_MIN_BIN_HEIGHT,
        free_ends: bool = False,
    ):
        self._set_free_ends(free_ends)
        self._set_spline(num_bins, tail_bound, min_bin_width, min_bin_height)
        super().__init__(
            features, hidden, context_features, random_order, reverse_order, seed, activation_name
        )

    def extra_repr(self) -> str:
        return f"features={self.features}, " + self._spline_repr()


@register("layer", "linear_spline_coupling")
class LinearSplineCoupling(_PiecewiseCoupling):
    """Piecewise-linear spline coupling: ``z_b = LS(x_b; θ(x_a))``, ``z_a = x_a``.

    Likelihood contribution: ``Σ log LS'(x_b)`` (the bin's ``K·mass``; 0 in the tails) over
    the transformed elements. ``K`` network outputs per element (the bin masses' logits).
    """

    kind = "linear"


@register("layer", "quadratic_spline_coupling")
class QuadraticSplineCoupling(_PiecewiseCoupling):
    """Piecewise-quadratic spline coupling: ``z_b = QS(x_b; θ(x_a))``, ``z_a = x_a``.

    Likelihood contribution: ``Σ log QS'(x_b)`` (the piecewise-linear density; 0 in the
    tails). ``2K − 1`` network outputs per element: ``K`` widths, ``K − 1`` inner densities;
    ``free_ends=True``: ``2K + 1``, the end densities included (the official layout).
    """

    kind = "quadratic"


@register("layer", "cubic_spline_coupling")
class CubicSplineCoupling(_PiecewiseCoupling):
    """Monotone cubic spline coupling: ``z_b = CS(x_b; θ(x_a))``, ``z_a = x_a``.

    Likelihood contribution: ``Σ log CS'(x_b)`` (0 in the tails). ``2K + 2`` network outputs
    per element: ``K`` widths, ``K`` heights, the left and right end derivatives.
    """

    kind = "cubic"


@register("layer", "linear_spline_autoregressive")
class LinearSplineAutoregressive(_PiecewiseAutoregressive):
    """Masked autoregressive piecewise-linear spline on ``[B, features]``:
    ``z_i = LS(x_i; θ_i(x_<i))``. Likelihood contribution: ``Σ_i log LS'(x_i)``.
    """

    kind = "linear"


@register("layer", "quadratic_spline_autoregressive")
class QuadraticSplineAutoregressive(_PiecewiseAutoregressive):
    """Masked autoregressive piecewise-quadratic spline on ``[B, features]``:
    ``z_i = QS(x_i; θ_i(x_<i))``. Likelihood contribution: ``Σ_i log QS'(x_i)``.
    """

    kind = "quadratic"


@register("layer", "cubic_spline_autoregressive")
class CubicSplineAutoregressive(_PiecewiseAutoregressive):
    """Masked autoregressive monotone cubic spline on ``[B, features]``:
    ``z_i = CS(x_i; θ_i(x_<i))``. Likelihood contribution: ``Σ_i log CS'(x_i)``.
    """

    kind = "cubic"
