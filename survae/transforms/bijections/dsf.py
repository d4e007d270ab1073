"""Neural autoregressive flows with deep sigmoidal flows, NAF-DSF (Huang et al., 2018).

One sigmoidal layer maps a scalar ``x`` with ``M`` sigmoid units, weights ``w = softmax(ω)``,
slopes ``a = softplus(α)`` (positive) and offsets ``b``:

    y = logit( Σ_j w_j σ(a_j x + b_j) )
    dy/dx = Σ_j w_j a_j σ(u_j) (1 - σ(u_j)) / (s (1 - s)),   u_j = a_j x + b_j,  s = Σ_j w_j σ(u_j)

(NAF, Eq. 8), strictly increasing and onto the real line (its tails are linear with slope
``min_j a_j``). A deep sigmoidal flow composes ``depth`` such layers, each with its own
``3M`` parameters, so a transformed element needs ``3·M·depth`` numbers from the conditioner.
Everything is evaluated in log space (``log σ``, log-sum-exp) so that neither ``s`` nor
``1 - s`` underflows in the tails. The inverse is found by bisection
(:func:`~survae.transforms.bijections.monotone.invert_increasing`).

Parametrisation: a zero conditioner output gives slopes 1, equal weights and offsets spread
evenly over ``[-2, 2]`` (``offset_spread``), a smooth increasing map close to a scaled
identity, so a freshly built flow is well conditioned.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from survae.nn.build import NetSpec
from survae.registry import register
from survae.transforms.bijections.monotone import MonotoneAutoregressive, MonotoneCoupling

#: slopes are floored so the map stays strictly increasing with a bounded inverse
MIN_SLOPE = 1e-3
_SOFTPLUS_ONE = math.log(math.expm1(1.0 - MIN_SLOPE))


def sigmoidal_layer(
    x: torch.Tensor, raw: torch.Tensor, offset_spread: float = 2.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """One sigmoidal flow layer, elementwise: ``x`` shape ``S``, ``raw`` shape ``S + (3M,)``
    laid out ``[α (M), b (M), ω (M)]``. Returns ``(y, log dy/dx)``, both of shape ``S``."""
    M = raw.shape[-1] // 3
    alpha, b, omega = raw[..., :M], raw[..., M : 2 * M], raw[..., 2 * M :]
    a = MIN_SLOPE + F.softplus(alpha + _SOFTPLUS_ONE)
    if M > 1 and offset_spread:
        b = b + torch.linspace(-offset_spread, offset_spread, M, dtype=x.dtype, device=x.device)
    log_w = torch.log_softmax(omega, dim=-1)
    u = a * x.unsqueeze(-1) + b
    log_sig, log_sig_neg = F.logsigmoid(u), F.logsigmoid(-u)
    log_s = torch.logsumexp(log_w + log_sig, dim=-1)
    log_1ms = torch.logsumexp(log_w + log_sig_neg, dim=-1)
    y = log_s - log_1ms
    log_num = torch.logsumexp(log_w + torch.log(a) + log_sig + log_sig_neg, dim=-1)
    return y, log_num - log_s - log_1ms


class _Sigmoidal:
    """The ``depth``-layer sigmoidal map with ``num_units`` sigmoids per layer."""

    def _set_dsf(self, num_units: int, depth: int) -> None:
        owner = type(self).__name__
        if num_units < 1 or depth < 1:
            raise ValueError(
                f"{owner}: num_units and depth must be >= 1, got {num_units} and {depth}"
            )
        self.num_units, self.depth = int(num_units), int(depth)
        self.params_per_element = 3 * self.num_units * self.depth

    def _map(self, x: torch.Tensor, params: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        total = torch.zeros_like(x)
        for raw in params.chunk(self.depth, dim=-1):
            x, log_d = sigmoidal_layer(x, raw)
            total = total + log_d
        return x, total

    def _dsf_repr(self) -> str:
        return f"num_units={self.num_units}, depth={self.depth}"


@register("layer", "dsf_autoregressive")
class DSFAutoregressive(_Sigmoidal, MonotoneAutoregressive):
    """NAF with a deep sigmoidal flow (Huang et al., 2018) on vectors ``[B, features]``:
    ``z_i = DSF(x_i; θ_i(x_<i))`` with ``θ`` (``3·num_units·depth`` numbers per dimension) from
    one MADE pass.

    Likelihood contribution ``log|det dz/dx| = Σ_i log DSF'(x_i)`` (triangular Jacobian). The
    density direction is one MADE pass; sampling takes ``features`` passes, each inverting the
    scalar maps by bisection. ``context_features > 0`` makes it conditional.
    """

    def __init__(
        self,
        features: int,
        hidden: Sequence[int] = (256, 256),
        num_units: int = 16,
        depth: int = 1,
        context_features: int = 0,
        random_order: bool = False,
        reverse_order: bool = False,
        seed: int = 0,
        activation_name: str = "relu",
        residual: bool = False,
    ):
        self._set_dsf(num_units, depth)
        super().__init__(
            features, hidden, context_features, random_order, reverse_order, seed,
            activation_name, residual,
        )  # fmt: skip

    def extra_repr(self) -> str:
        return super().extra_repr() + ", " + self._dsf_repr()


@register("layer", "dsf_coupling")
class DSFCoupling(_Sigmoidal, MonotoneCoupling):
    """Coupling with a deep sigmoidal flow: ``z_b = DSF(x_b; θ(x_a))``, ``z_a = x_a``.

    Likelihood contribution: ``Σ log DSF'(x_b)`` over the transformed elements. The network
    outputs ``3·num_units·depth`` channels per transformed channel (element-major along
    dimension 1). Masks, ``split_sizes`` and ``context_channels`` work as in
    :class:`~survae.transforms.bijections.coupling.AffineCoupling`; the inverse is bisection.
    """

    def __init__(
        self,
        num_channels: int,
        net: NetSpec,
        num_units: int = 16,
        depth: int = 1,
        mask: str = "channel",
        context_channels: int = 0,
        split_sizes: Sequence[int] | None = None,
        reverse_mask: bool = False,
    ):
        self._set_dsf(num_units, depth)
        super().__init__(num_channels, net, mask, context_channels, split_sizes, reverse_mask)

    def extra_repr(self) -> str:
        return super().extra_repr() + ", " + self._dsf_repr()


__all__ = ["DSFAutoregressive", "DSFCoupling", "sigmoidal_layer"]
