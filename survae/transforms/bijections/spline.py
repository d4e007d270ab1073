"""Rational-quadratic spline flows: neural spline flows (Durkan et al., 2019).

The elementwise map is a monotone rational-quadratic spline (Gregory & Delbourgo, 1982) on
``[-B, B]`` (``B = tail_bound``) with ``K`` bins, and the identity outside it (linear tails).
Per transformed element a network gives ``3K - 1`` unconstrained numbers: ``K`` bin widths,
``K`` bin heights (each through a softmax, floored at ``min_bin_width`` / ``min_bin_height``
and scaled to ``2B``) and the ``K - 1`` derivatives at the inner knots (through a softplus,
floored at ``min_derivative``). The derivatives at ``±B`` are fixed to 1 so the slope is
continuous where the spline meets the tails (NSF, Sec. 3.1).

In bin ``k`` with knots ``(x_k, y_k)``, width ``w_k``, height ``h_k``, slope ``s_k = h_k/w_k``,
inner-knot derivatives ``d_k, d_{k+1}`` and ``ξ = (x - x_k) / w_k``:

    y  = y_k + h_k [s_k ξ² + d_k ξ(1-ξ)] / [s_k + (d_{k+1} + d_k - 2 s_k) ξ(1-ξ)]
    y' = s_k² [d_{k+1} ξ² + 2 s_k ξ(1-ξ) + d_k (1-ξ)²] / [s_k + (d_{k+1} + d_k - 2 s_k) ξ(1-ξ)]²

and the inverse is the root in ``[0, 1]`` of a quadratic in ``ξ`` (NSF, Eqs. 6-8), taken in the
cancellation-free form ``ξ = 2c / (-b - sqrt(b² - 4ac))``.

The derivative parameters are offset so that an all-zero network output gives equal bins and
unit derivatives, i.e. the identity map: with a zero-initialised output layer every spline
layer starts as the identity (as the affine couplings do).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from survae.nn.build import NetSpec
from survae.nn.made import MADE
from survae.nn.resmade import ResidualMADE
from survae.registry import register
from survae.transforms.bijections.coupling import _Coupling
from survae.transforms.bijections.made_elementwise import MADEElementwise
from survae.utils import sum_except_batch

#: NSF's defaults (nflows / the paper's code use the same floors)
DEFAULT_MIN_BIN_WIDTH = 1e-3
DEFAULT_MIN_BIN_HEIGHT = 1e-3
DEFAULT_MIN_DERIVATIVE = 1e-3


def check_spline_args(
    owner: str,
    num_bins: int,
    tail_bound: float,
    min_bin_width: float,
    min_bin_height: float,
    min_derivative: float,
) -> None:
    """Raise a one-line ``ValueError`` naming ``owner`` for inconsistent spline settings."""
    if num_bins < 1:
        raise ValueError(f"{owner}: num_bins must be >= 1, got {num_bins}")
    if not tail_bound > 0:
        raise ValueError(f"{owner}: tail_bound must be positive, got {tail_bound}")
    for name, value in (("min_bin_width", min_bin_width), ("min_bin_height", min_bin_height)):
        if not 0 <= value * num_bins < 1:
            raise ValueError(
                f"{owner}: {name} · num_bins must lie in [0, 1), got {value} · {num_bins}"
            )
    if not 0 <= min_derivative < 1:
        raise ValueError(f"{owner}: min_derivative must lie in [0, 1), got {min_derivative}")


def _knots(raw: torch.Tensor, minimum: float, bound: float) -> torch.Tensor:
    """``K + 1`` increasing knot positions from ``-bound`` to ``bound`` (exactly)."""
    K = raw.shape[-1]
    sizes = minimum + (1.0 - minimum * K) * torch.softmax(raw, dim=-1)
    inner = torch.cumsum(sizes, dim=-1)[..., :-1] * (2 * bound) - bound
    lo = torch.full_like(inner[..., :1], -bound)
    return torch.cat([lo, inner, -lo], dim=-1)


def rational_quadratic_spline(
    inputs: torch.Tensor,
    unnormalized_widths: torch.Tensor,
    unnormalized_heights: torch.Tensor,
    unnormalized_derivatives: torch.Tensor,
    inverse: bool = False,
    tail_bound: float = 3.0,
    min_bin_width: float = DEFAULT_MIN_BIN_WIDTH,
    min_bin_height: float = DEFAULT_MIN_BIN_HEIGHT,
    min_derivative: float = DEFAULT_MIN_DERIVATIVE,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Monotone rational-quadratic spline with linear (identity) tails, elementwise.

    ``inputs`` has any shape ``S``; the parameters have shapes ``S + (K,)``, ``S + (K,)`` and
    ``S + (K - 1,)``. Returns ``(outputs, log|d outputs / d inputs|)``, both of shape ``S``;
    with ``inverse=True`` the inverse map and its log-derivative. Elements outside
    ``[-tail_bound, tail_bound]`` pass unchanged with log-derivative 0.
    """
    K = unnormalized_widths.shape[-1]
    if unnormalized_heights.shape[-1] != K or unnormalized_derivatives.shape[-1] != K - 1:
        raise ValueError(
            "rational_quadratic_spline: expected K widths, K heights and K - 1 derivatives, got "
            f"{unnormalized_widths.shape[-1]}, {unnormalized_heights.shape[-1]} and "
            f"{unnormalized_derivatives.shape[-1]}"
        )
    B = float(tail_bound)
    inside = (inputs >= -B) & (inputs <= B)
    v = inputs.clamp(-B, B)  # the spline is evaluated on clamped values; tails are selected below

    xs = _knots(unnormalized_widths, min_bin_width, B)
    ys = _knots(unnormalized_heights, min_bin_height, B)
    # zero raw derivative -> derivative 1 (the identity at equal bins)
    offset = math.log(math.expm1(1.0 - min_derivative))
    inner_d = min_derivative + F.softplus(unnormalized_derivatives + offset)
    ones = torch.ones_like(inner_d[..., :1])
    ds = torch.cat([ones, inner_d, ones], dim=-1)

    out, log_deriv = rq_bins(v, xs, ys, ds, inverse)
    outputs = torch.where(inside, out, inputs)
    return outputs, torch.where(inside, log_deriv, torch.zeros_like(log_deriv))


def rq_bins(
    v: torch.Tensor, xs: torch.Tensor, ys: torch.Tensor, ds: torch.Tensor, inverse: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """The rational-quadratic spline through knots ``(xs, ys)`` (``S + (K + 1,)``, increasing)
    with derivatives ``ds`` at every knot, on ``v`` (shape ``S``, inside the knots' range):
    ``(outputs, log|d outputs / d inputs|)``, or the inverse map and its log-derivative."""
    search = ys if inverse else xs
    idx = torch.searchsorted(search[..., 1:-1].contiguous(), v.unsqueeze(-1), right=True)

    def at(t: torch.Tensor, shift: int = 0) -> torch.Tensor:
        return t.gather(-1, idx + shift).squeeze(-1)

    x_k, y_k = at(xs), at(ys)
    w_k, h_k = at(xs, 1) - x_k, at(ys, 1) - y_k
    d_k, d_k1 = at(ds), at(ds, 1)
    s_k = h_k / w_k
    curv = d_k1 + d_k - 2 * s_k

    if inverse:
        dy = v - y_k
        a = h_k * (s_k - d_k) + dy * curv
        b = h_k * d_k - dy * curv
        c = -s_k * dy
        disc = (b * b - 4 * a * c).clamp(min=0.0)
        xi = (2 * c / (-b - torch.sqrt(disc))).clamp(0.0, 1.0)
        out = x_k + xi * w_k
    else:
        xi = (v - x_k) / w_k
    t = xi * (1 - xi)
    denom = s_k + curv * t
    deriv = s_k**2 * (d_k1 * xi**2 + 2 * s_k * t + d_k * (1 - xi) ** 2) / denom**2
    log_deriv = torch.log(deriv)
    if inverse:
        return out, -log_deriv
    return y_k + h_k * (s_k * xi**2 + d_k * t) / denom, log_deriv


class _SplineSettings:
    """Holds and validates the spline hyperparameters shared by both layers."""

    def _set_spline(
        self,
        num_bins: int,
        tail_bound: float,
        min_bin_width: float,
        min_bin_height: float,
        min_derivative: float,
    ) -> None:
        check_spline_args(
            type(self).__name__, num_bins, tail_bound, min_bin_width, min_bin_height, min_derivative
        )
        self.num_bins = int(num_bins)
        self.tail_bound = float(tail_bound)
        self.min_bin_width = float(min_bin_width)
        self.min_bin_height = float(min_bin_height)
        self.min_derivative = float(min_derivative)

    def _spline(
        self, x: torch.Tensor, params: torch.Tensor, inverse: bool
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Spline ``x`` (shape ``S``) with parameters ``params`` (shape ``S + (3K - 1,)``)."""
        K = self.num_bins
        w, h, d = params[..., :K], params[..., K : 2 * K], params[..., 2 * K :]
        return rational_quadratic_spline(
            x,
            w,
            h,
            d,
            inverse=inverse,
            tail_bound=self.tail_bound,
            min_bin_width=self.min_bin_width,
            min_bin_height=self.min_bin_height,
            min_derivative=self.min_derivative,
        )

    def _num_params(self) -> int:
        """Network outputs per transformed element: ``K`` widths, ``K`` heights and the
        ``K - 1`` inner derivatives."""
        return 3 * self.num_bins - 1

    def _spline_repr(self) -> str:
        return f"num_bins={self.num_bins}, tail_bound={self.tail_bound}"


@register("layer", "rq_spline_coupling")
class RQSplineCoupling(_SplineSettings, _Coupling):
    """Rational-quadratic spline coupling, RQ-NSF (C) (Durkan et al., 2019):
    ``z_b = RQS(x_b; θ(x_a))``, ``z_a = x_a``.

    Likelihood contribution: ``Σ log RQS'(x_b)`` over the transformed elements (0 for those
    in the linear tails, outside ``[-tail_bound, tail_bound]``). Masks, ``split_sizes`` and
    ``context_channels`` work as in :class:`~survae.transforms.bijections.coupling.AffineCoupling`.
    The network outputs ``(3·num_bins − 1)`` channels per transformed channel, element-major
    along dimension 1: channel ``j``'s widths, heights and inner derivatives are at
    ``j·(3K − 1) … (j + 1)·(3K − 1) − 1``. A zero network output is the identity.

    ``unconditional_identity=True`` (channel mask only; NSF's ``apply_unconditional_transform``,
    on in the official tabular experiments) also maps the conditioning half through a spline
    with learned parameters of its own per channel, ``z_a = RQS(x_a; φ)``, adding
    ``Σ log RQS'(x_a; φ)``; the network still reads the untransformed ``x_a``. ``φ`` starts at
    zero (the identity; the official code draws it uniformly in [0, 1)).
    """

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
        min_derivative: float = DEFAULT_MIN_DERIVATIVE,
        unconditional_identity: bool = False,
    ):
        self._set_spline(num_bins, tail_bound, min_bin_width, min_bin_height, min_derivative)
        self.params_per_element = self._num_params()
        super().__init__(num_channels, net, mask, context_channels, split_sizes, reverse_mask)
        self.identity_params: torch.nn.Parameter | None = None
        if unconditional_identity:
            if self.mask != "channel":
                raise ValueError(
                    "RQSplineCoupling: unconditional_identity needs mask='channel', "
                    f"got mask={self.mask!r}"
                )
            n_cond = self.num_channels - self.num_transformed
            self.identity_params = torch.nn.Parameter(torch.zeros(n_cond, self.params_per_element))

    def _identity_spline(self, x: torch.Tensor, inverse: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """``x`` with its conditioning channels mapped by the unconditional spline (or its
        inverse), and the per-example log-derivative."""
        first, second = torch.split(x, self.split_sizes, dim=1)
        cond = second if self.reverse_mask else first
        shape = (1, cond.shape[1]) + (1,) * (cond.dim() - 2) + (self.params_per_element,)
        params = self.identity_params.to(cond.dtype).view(shape)
        params = params.expand(*cond.shape, self.params_per_element)
        out, log_deriv = self._spline(cond, params, inverse)
        parts = (first, out) if self.reverse_mask else (out, second)
        return torch.cat(parts, dim=1), sum_except_batch(log_deriv)

    def _run(
        self, x: torch.Tensor, context: torch.Tensor | None, inverse: bool
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if self.identity_params is None:
            return super()._run(x, context, inverse)
        self._check_input(x, "latent" if inverse else "input")
        if inverse:  # recover x_a first: the network reads it
            x, ldj_a = self._identity_spline(x, inverse=True)
            y, ldj_b = super()._run(x, context, inverse=True)
        else:
            y, ldj_b = super()._run(x, context, inverse=False)
            y, ldj_a = self._identity_spline(y, inverse=False)
        return y, ldj_a + ldj_b

    def _elementwise(self, x, h, inverse, keep):
        P = self.params_per_element
        n = x.shape[1]
        params = h.reshape(h.shape[0], n, P, *h.shape[2:]).movedim(2, -1)
        y, log_deriv = self._spline(x, params, inverse)
        if keep is not None:
            y = torch.where(keep > 0, x, y)
            log_deriv = log_deriv * (1.0 - keep)
        return y, sum_except_batch(log_deriv)

    def extra_repr(self) -> str:
        s = super().extra_repr() + ", " + self._spline_repr()
        return s + (", unconditional_identity=True" if self.identity_params is not None else "")


@register("layer", "rq_spline_autoregressive")
class RQSplineAutoregressive(_SplineSettings, MADEElementwise):
    """Masked autoregressive rational-quadratic spline layer, RQ-NSF (AR) (Durkan et al., 2019),
    on vectors ``[B, features]``: ``z_i = RQS(x_i; θ_i(x_<i))`` with ``θ`` from one MADE pass.

    Likelihood contribution ``log|det dz/dx| = Σ_i log RQS'(x_i)`` (triangular Jacobian). The
    density direction is one MADE pass; sampling takes ``features`` sequential passes.
    ``context_features > 0`` makes it conditional on ``context`` ``[B, context_features]``
    (the MADE's context inputs). ``residual=True`` gives NSF's residual MADE
    (:class:`~survae.nn.resmade.ResidualMADE`: a masked input layer of width ``hidden[0]``, then
    ``len(hidden) − 1`` residual blocks of two masked layers with ``dropout`` inside each; the
    sizes must be equal); otherwise a plain :class:`~survae.nn.made.MADE` (no dropout). The
    MADE's output starts at zero, so the layer starts as the identity.
    """

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
        residual: bool = False,
        min_bin_width: float = DEFAULT_MIN_BIN_WIDTH,
        min_bin_height: float = DEFAULT_MIN_BIN_HEIGHT,
        min_derivative: float = DEFAULT_MIN_DERIVATIVE,
        dropout: float = 0.0,
    ):
        super().__init__()
        self._set_spline(num_bins, tail_bound, min_bin_width, min_bin_height, min_derivative)
        self._set_features(features, context_features)
        self.params_per_element = self._num_params()
        hidden = [int(h) for h in hidden]
        out_channels = self.features * self.params_per_element
        if not residual:
            if dropout:
                raise ValueError(
                    f"RQSplineAutoregressive: dropout={dropout} needs residual=True "
                    "(the plain MADE has no dropout)"
                )
            self.made: MADE | ResidualMADE = MADE(
                self.features,
                out_channels,
                hidden=hidden,
                context_features=self.context_features,
                activation_name=activation_name,
                random_order=random_order,
                reverse_order=reverse_order,
                seed=seed,
            )
            return
        if not hidden or len(set(hidden)) != 1:
            raise ValueError(
                f"RQSplineAutoregressive: residual=True needs equal hidden sizes, got {hidden}"
            )
        self.made = ResidualMADE(
            self.features,
            out_channels,
            hidden=hidden[0],
            num_blocks=len(hidden) - 1,
            context_features=self.context_features,
            activation_name=activation_name,
            dropout=dropout,
            random_order=random_order,
            reverse_order=reverse_order,
            seed=seed,
        )

    def _transform(self, x, params, inverse):
        return self._spline(x, params, inverse)

    def inverse_with_ldj(
        self, z: torch.Tensor, context: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Sequential inversion: after pass ``k`` the first ``k`` dimensions in the MADE's order
        are exact; the last pass's parameters come from the final ``x``."""
        context = self._check(z, context)
        x = torch.zeros_like(z)
        log_deriv = torch.zeros_like(z)
        for _ in range(self.features):
            x, log_deriv = self._spline(z, self._params(x, context), inverse=True)
        return x, log_deriv.sum(dim=1)

    def extra_repr(self) -> str:
        s = f"features={self.features}, " + self._spline_repr()
        if self.context_features:
            s += f", context_features={self.context_features}"
        return s


__all__ = [
    "RQSplineAutoregressive",
    "RQSplineCoupling",
    "check_spline_args",
    "rational_quadratic_spline",
    "rq_bins",
]
