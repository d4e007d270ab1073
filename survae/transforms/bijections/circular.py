"""Circular rational-quadratic splines for angles (Rezende et al. 2020, "Normalizing flows on
tori and spheres"): diffeomorphisms of the circle ``[-π, π)`` for data on tori (torsion
angles, phases).

The map of one angle is a rational-quadratic spline with ``f(-π) = -π``, ``f(π) = π`` and
equal derivatives at both ends (a learned ``d_0 = d_K``), so that it is smooth across the
identified end points, followed by a learned rotation ``z = wrap(f(x) + φ)`` with
``wrap(y) = ((y + π) mod 2π) - π`` (measure-preserving, so it adds nothing to the
log-determinant; it moves the spline's fixed point off ``±π``).

Per transformed element the conditioner gives ``3K + 1`` numbers: ``K`` widths, ``K`` heights,
``K - 1`` inner derivatives, the boundary derivative and the rotation ``φ``; all zero is the
identity. Inputs must lie in ``[-π, π]``; a flow on the torus (the ``circular_flow``
architecture) ends in a map onto ``[0, 1)^D`` and a uniform base.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from survae.registry import register
from survae.transforms.bijections.spline import (
    DEFAULT_MIN_BIN_HEIGHT,
    DEFAULT_MIN_BIN_WIDTH,
    DEFAULT_MIN_DERIVATIVE,
    RQSplineAutoregressive,
    RQSplineCoupling,
    _knots,
    rq_bins,
)


def wrap(angle: torch.Tensor) -> torch.Tensor:
    """The representative of ``angle`` in ``[-π, π)``."""
    return torch.remainder(angle + math.pi, 2 * math.pi) - math.pi


def circular_rq_spline(
    x: torch.Tensor,
    params: torch.Tensor,
    inverse: bool = False,
    min_bin_width: float = DEFAULT_MIN_BIN_WIDTH,
    min_bin_height: float = DEFAULT_MIN_BIN_HEIGHT,
    min_derivative: float = DEFAULT_MIN_DERIVATIVE,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The circular spline-and-rotation of the module docstring, elementwise: ``x`` of shape
    ``S`` in ``[-π, π]``, ``params`` of shape ``S + (3K + 1,)``; returns the output in
    ``[-π, π)`` and ``log|d output / d input|`` (or the inverse and its log-derivative)."""
    K = (params.shape[-1] - 1) // 3
    w, h = params[..., :K], params[..., K : 2 * K]
    d, rotation = params[..., 2 * K : 3 * K], params[..., 3 * K]
    xs = _knots(w, min_bin_width, math.pi)
    ys = _knots(h, min_bin_height, math.pi)
    offset = math.log(math.expm1(1.0 - min_derivative))  # zero raw value -> derivative 1
    derivs = min_derivative + F.softplus(d + offset)
    # K - 1 inner derivatives, then the boundary one, used at both ends: smooth across ±π
    ds = torch.cat([derivs[..., -1:], derivs[..., :-1], derivs[..., -1:]], dim=-1)
    if inverse:
        v = wrap(x - rotation).clamp(-math.pi, math.pi)
        return rq_bins(v, xs, ys, ds, inverse=True)
    y, log_deriv = rq_bins(x.clamp(-math.pi, math.pi), xs, ys, ds)
    return wrap(y + rotation), log_deriv


class _CircularSettings:
    """The circular splines' parameter count and map (shared by coupling and autoregressive)."""

    def _num_params(self) -> int:
        return 3 * self.num_bins + 1

    def _spline(self, x, params, inverse):
        return circular_rq_spline(
            x, params, inverse, self.min_bin_width, self.min_bin_height, self.min_derivative
        )

    def _spline_repr(self) -> str:
        return f"num_bins={self.num_bins}, circular"


@register("layer", "circular_rq_spline_coupling")
class CircularRQSplineCoupling(_CircularSettings, RQSplineCoupling):
    """Coupling on angles in ``[-π, π)``: ``z_b = wrap(RQS_circ(x_b; θ(x_a)) + φ(x_a))``,
    ``z_a = x_a`` (Rezende et al. 2020), a diffeomorphism of the torus.

    Likelihood contribution: ``Σ log RQS_circ'(x_b)`` (the rotation adds 0). The network
    outputs ``3·num_bins + 1`` channels per transformed channel (element-major, as
    :class:`~survae.transforms.bijections.spline.RQSplineCoupling`); a zero output is the
    identity. The network reads ``(cos x_a, sin x_a)`` (and the context), so the density is
    continuous on the torus. Channel mask only; ``split_sizes`` and ``context_channels`` as
    the affine coupling.
    """

    def __init__(
        self,
        num_channels: int,
        net,
        num_bins: int = 8,
        context_channels: int = 0,
        split_sizes=None,
        reverse_mask: bool = False,
        min_bin_width: float = DEFAULT_MIN_BIN_WIDTH,
        min_bin_height: float = DEFAULT_MIN_BIN_HEIGHT,
        min_derivative: float = DEFAULT_MIN_DERIVATIVE,
    ):
        sizes = tuple(split_sizes or (num_channels // 2, num_channels - num_channels // 2))
        n_cond = sizes[1] if reverse_mask else sizes[0]
        # the network reads (cos, sin) of the conditioning angles: the extra n_cond inputs
        # are declared as context channels, then the user's context count is restored
        super().__init__(
            num_channels, net, num_bins=num_bins, tail_bound=math.pi, mask="channel",
            context_channels=context_channels + n_cond, split_sizes=sizes,
            reverse_mask=reverse_mask, min_bin_width=min_bin_width,
            min_bin_height=min_bin_height, min_derivative=min_derivative,
        )  # fmt: skip
        self.context_channels = int(context_channels)

    def _net_input(self, x_cond: torch.Tensor, context: torch.Tensor | None) -> torch.Tensor:
        angles = torch.cat([torch.cos(x_cond), torch.sin(x_cond)], dim=1)
        if self.context_channels == 0:
            return angles
        return torch.cat([angles, super()._net_input(x_cond, context)[:, x_cond.shape[1] :]], 1)


@register("layer", "circular_rq_spline_autoregressive")
class CircularRQSplineAutoregressive(_CircularSettings, RQSplineAutoregressive):
    """Masked autoregressive circular spline on angle vectors ``[B, features]`` in
    ``[-π, π)``: ``z_i = wrap(RQS_circ(x_i; θ_i(x_<i)) + φ_i(x_<i))`` from one MADE pass
    (sampling takes ``features`` passes).

    Likelihood contribution ``Σ_i log RQS_circ'(x_i)`` (triangular Jacobian; rotations add 0).
    The MADE's output starts at zero: the identity. The MADE reads the raw angles, so the
    conditional parameters (not the map of each angle) may jump where an earlier angle crosses
    ±π; the coupling variant, whose network reads ``(cos, sin)``, has no such seam.
    """

    def __init__(self, features: int, hidden=(256, 256), num_bins: int = 8, **kwargs):
        kwargs.pop("tail_bound", None)
        super().__init__(features, hidden, num_bins=num_bins, tail_bound=math.pi, **kwargs)


__all__ = [
    "CircularRQSplineAutoregressive",
    "CircularRQSplineCoupling",
    "circular_rq_spline",
    "wrap",
]
