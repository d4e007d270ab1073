"""Coupling layers: NICE (additive), RealNVP and Glow (affine).

One part of the input (the *conditioning* part) passes through unchanged and, through a
network, sets an elementwise map of the other (*transformed*) part. The Jacobian is triangular,
so ``log|det dz/dx|`` is the sum of the log-scales applied to the transformed part.

Two ways to choose the parts:

* ``mask="channel"``: split dimension 1 into two chunks (``split_sizes`` or halves). The first
  chunk conditions and the second is transformed; ``reverse_mask=True`` swaps their roles.
  The network sees the conditioning chunk only (plus context).
* ``mask="checkerboard"``: for images ``[B, C, H, W]`` the positions with ``(h + w)`` even
  condition and the odd ones are transformed (for sequences ``[B, C, L]`` the parity of ``l``;
  for vectors ``[B, D]`` the parity of the feature index); ``reverse_mask=True`` flips the
  parity. The network sees the whole input with transformed positions zeroed and predicts
  parameters for every element; only those at transformed positions are used.

Network output layout (a network built for these layers must follow it): along dimension 1,
``[shift, unconstrained_scale]`` for affine couplings, each with as many channels as are
transformed (``2 · n_transformed`` in all; for the checkerboard mask ``n_transformed`` is the
full channel count), and ``[shift]`` alone for additive couplings.

Conditional couplings (amortised posteriors, conditional flows): with ``context_channels > 0``
the context is concatenated to the network input along dimension 1. It must have the input's
spatial size (images, sequences) or shape ``[B, context_channels]`` (vectors).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from survae.errors import check_ndim, check_shape
from survae.nn.build import NetSpec, build_network
from survae.registry import register
from survae.transforms.base import Bijection
from survae.utils import sum_except_batch


def _log_softplus(s: torch.Tensor) -> torch.Tensor:
    # log(softplus(s)) underflows for very negative s, where it equals s to float precision.
    safe = F.softplus(s.clamp(min=-20.0)).log()
    return torch.where(s > -20.0, safe, s)


#: maps from the network's unconstrained output to ``log(scale)``
LOG_SCALE_FNS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    # Glow: scale = sigmoid(s + 2), in (0, 1), close to 0.88 at s = 0
    "sigmoid": lambda s: F.logsigmoid(s + 2.0),
    # RealNVP: scale = exp(s), identity at s = 0
    "exp": lambda s: s,
    # SurVAE toy experiments: scale = softplus(s), positive and at most linear growth
    "softplus": _log_softplus,
    # SurVAE image experiments: scale = exp(2 tanh(s / 2)), in (e^-2, e^2), identity at s = 0
    "tanh_exp": lambda s: 2.0 * torch.tanh(s / 2.0),
}

_MASKS = ("channel", "checkerboard")


def call_network(
    net: torch.nn.Module, *inputs: torch.Tensor, autocast_dtype: torch.dtype | None = None
) -> torch.Tensor:
    """``net(*inputs)``, optionally under ``torch.autocast`` with ``autocast_dtype``.

    Under autocast the network's matrix products and convolutions run in the lower precision;
    its output is cast back to the dtype of the first input, so the shift/scale arithmetic,
    log-determinants and base densities that follow stay in full precision
    (``survae.runtime.speed.set_coupling_autocast`` sets ``autocast_dtype`` per layer).
    """
    if autocast_dtype is None:
        return net(*inputs)
    first = inputs[0]
    with torch.autocast(first.device.type, dtype=autocast_dtype):
        out = net(*inputs)
    return out.to(first.dtype)


class _Coupling(Bijection):
    """Shared machinery; subclasses say how many parameters each transformed element needs
    and how they act (:meth:`_elementwise`)."""

    #: network outputs per transformed element
    params_per_element: int = 1
    #: dtype the network runs in under ``torch.autocast`` (e.g. ``torch.bfloat16``); None: off.
    #: Only the network is affected: its output is cast back before the coupling's arithmetic.
    net_autocast: torch.dtype | None = None

    def __init__(
        self,
        num_channels: int,
        net: NetSpec,
        mask: str = "channel",
        context_channels: int = 0,
        split_sizes: Sequence[int] | None = None,
        reverse_mask: bool = False,
    ):
        super().__init__()
        name = type(self).__name__
        if mask not in _MASKS:
            raise ValueError(f"{name}: unknown mask {mask!r}; valid: {', '.join(_MASKS)}")
        if num_channels < (2 if mask == "channel" else 1):
            raise ValueError(
                f"{name}: mask={mask!r} needs num_channels >= 2 (one part to condition on, one "
                f"to transform), got {num_channels}; single-channel images need "
                "mask='checkerboard'"
            )
        if context_channels < 0:
            raise ValueError(f"{name}: context_channels must be >= 0, got {context_channels}")
        self.num_channels = num_channels
        self.mask = mask
        self.context_channels = context_channels
        self.reverse_mask = reverse_mask
        P = self.params_per_element

        if mask == "channel":
            if split_sizes is None:
                if num_channels % 2 != 0:
                    raise ValueError(
                        f"{name}: the channel mask splits the channels in half, which needs an "
                        f"even channel count, got num_channels={num_channels}; give "
                        "split_sizes=(n_first, n_second) or use mask='checkerboard'"
                    )
                split_sizes = (num_channels // 2, num_channels // 2)
            split_sizes = tuple(int(s) for s in split_sizes)
            if len(split_sizes) != 2 or min(split_sizes) < 1 or sum(split_sizes) != num_channels:
                raise ValueError(
                    f"{name}: split_sizes must be two positive sizes adding up to "
                    f"num_channels={num_channels}, got {split_sizes}"
                )
            self.split_sizes = split_sizes
            n_cond, n_trans = split_sizes[::-1] if reverse_mask else split_sizes
            in_channels, out_channels = n_cond + context_channels, P * n_trans
            self.num_transformed = n_trans
        else:
            if split_sizes is not None:
                raise ValueError(f"{name}: split_sizes only applies to mask='channel'")
            self.split_sizes = None
            in_channels, out_channels = num_channels + context_channels, P * num_channels
            self.num_transformed = num_channels
        self.net = build_network(net, in_channels=in_channels, out_channels=out_channels)

    # -- helpers -------------------------------------------------------------------------------

    def _check_input(self, x: torch.Tensor, what: str) -> None:
        check_ndim(self, x, (2, 3, 4), what)
        check_shape(self, x, (None, self.num_channels, *x.shape[2:]), what)

    def _net_input(self, x_cond: torch.Tensor, context: torch.Tensor | None) -> torch.Tensor:
        if self.context_channels == 0:
            return x_cond
        if context is None:
            raise ValueError(
                f"{type(self).__name__}: built with context_channels={self.context_channels}, "
                "so a context is required"
            )
        check_shape(
            self, context, (x_cond.shape[0], self.context_channels, *x_cond.shape[2:]), "context"
        )
        return torch.cat([x_cond, context.to(x_cond.dtype)], dim=1)

    def _params(self, net_in: torch.Tensor) -> torch.Tensor:
        h = call_network(self.net, net_in, autocast_dtype=self.net_autocast)
        expected = (net_in.shape[0], self.params_per_element * self.num_transformed)
        check_shape(self, h, (*expected, *net_in.shape[2:]), "network output")
        return h

    def _checkerboard(self, x: torch.Tensor) -> torch.Tensor:
        """1 at conditioning positions, 0 at transformed ones, broadcastable to ``x``."""
        if x.dim() == 2:
            idx = torch.arange(x.shape[1], device=x.device)
            parity = idx.view(1, -1) % 2
        else:
            parity = torch.zeros((), dtype=torch.long, device=x.device)
            for d in range(2, x.dim()):  # loops over the (at most two) spatial dims
                shape = [1] * x.dim()
                shape[d] = x.shape[d]
                parity = parity + torch.arange(x.shape[d], device=x.device).view(shape)
            parity = parity % 2
        cond = parity == (1 if self.reverse_mask else 0)
        return cond.to(x.dtype)

    def _elementwise(
        self, x: torch.Tensor, h: torch.Tensor, inverse: bool, keep: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Apply the map set by network output ``h`` to ``x`` (or its inverse); returns the
        result and per-example ``log|det|`` of the direction applied. ``keep`` (checkerboard)
        is 1 where elements must stay unchanged."""
        raise NotImplementedError

    def _run(
        self, x: torch.Tensor, context: torch.Tensor | None, inverse: bool
    ) -> tuple[torch.Tensor, torch.Tensor]:
        self._check_input(x, "latent" if inverse else "input")
        if self.mask == "checkerboard":
            keep = self._checkerboard(x)
            h = self._params(self._net_input(x * keep, context))
            return self._elementwise(x, h, inverse, keep)
        first, second = torch.split(x, self.split_sizes, dim=1)
        x_cond, x_trans = (second, first) if self.reverse_mask else (first, second)
        h = self._params(self._net_input(x_cond, context))
        y_trans, ldj = self._elementwise(x_trans, h, inverse, None)
        parts = (y_trans, x_cond) if self.reverse_mask else (x_cond, y_trans)
        return torch.cat(parts, dim=1), ldj

    # -- contract ------------------------------------------------------------------------------

    def forward(
        self, x: torch.Tensor, context: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return self._run(x, context, inverse=False)

    def inverse_with_ldj(
        self, z: torch.Tensor, context: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return self._run(z, context, inverse=True)

    def extra_repr(self) -> str:
        s = f"num_channels={self.num_channels}, mask={self.mask!r}"
        if self.split_sizes is not None:
            s += f", split_sizes={self.split_sizes}"
        if self.reverse_mask:
            s += ", reverse_mask=True"
        if self.context_channels:
            s += f", context_channels={self.context_channels}"
        return s


@register("layer", "affine_coupling")
class AffineCoupling(_Coupling):
    """Affine coupling (RealNVP, Dinh et al. 2017; Glow, Kingma & Dhariwal 2018):
    ``z_b = x_b · scale(x_a) + shift(x_a)``, ``z_a = x_a``.

    Likelihood contribution: ``Σ log scale`` over the transformed elements.
    The network outputs ``[shift, unconstrained_scale]`` along dimension 1 (``2 · n``
    channels for ``n`` transformed ones); ``scale_fn`` maps the latter to a positive scale:
    ``"sigmoid"`` = sigmoid(s + 2) (Glow), ``"exp"`` = exp(s) (RealNVP), ``"softplus"``
    = softplus(s), ``"tanh_exp"`` = exp(2 tanh(s / 2)) (SurVAE image models). With a
    zero-initialised last layer, ``"exp"`` and ``"tanh_exp"`` start at the identity.
    ``shift_first=True`` gives openai/glow's order ``z_b = (x_b + shift) · scale`` (same
    contribution).
    """

    params_per_element = 2

    def __init__(
        self,
        num_channels: int,
        net: NetSpec,
        mask: str = "channel",
        scale_fn: str = "sigmoid",
        context_channels: int = 0,
        split_sizes: Sequence[int] | None = None,
        reverse_mask: bool = False,
        shift_first: bool = False,
    ):
        if scale_fn not in LOG_SCALE_FNS:
            raise ValueError(
                f"AffineCoupling: unknown scale_fn {scale_fn!r}; valid: {', '.join(LOG_SCALE_FNS)}"
            )
        super().__init__(num_channels, net, mask, context_channels, split_sizes, reverse_mask)
        self.scale_fn = scale_fn
        self._log_scale = LOG_SCALE_FNS[scale_fn]
        self.shift_first = bool(shift_first)

    def _elementwise(self, x, h, inverse, keep):
        shift, raw = torch.chunk(h, 2, dim=1)
        log_scale = self._log_scale(raw)
        if keep is not None:
            free = 1.0 - keep
            log_scale = log_scale * free
            shift = shift * free
        if self.shift_first:  # openai/glow: z = (x + shift) · scale
            if inverse:
                return x * torch.exp(-log_scale) - shift, -sum_except_batch(log_scale)
            return (x + shift) * torch.exp(log_scale), sum_except_batch(log_scale)
        if inverse:
            return (x - shift) * torch.exp(-log_scale), -sum_except_batch(log_scale)
        return x * torch.exp(log_scale) + shift, sum_except_batch(log_scale)

    def extra_repr(self) -> str:
        order = ", shift_first=True" if self.shift_first else ""
        return super().extra_repr() + f", scale_fn={self.scale_fn!r}{order}"


@register("layer", "additive_coupling")
class AdditiveCoupling(_Coupling):
    """Additive coupling (NICE, Dinh et al. 2015): ``z_b = x_b + shift(x_a)``, ``z_a = x_a``.

    Likelihood contribution: 0 (volume preserving). The network outputs ``[shift]``.
    """

    params_per_element = 1

    def _elementwise(self, x, h, inverse, keep):
        shift = h if keep is None else h * (1.0 - keep)
        zeros = x.new_zeros(x.shape[0])
        return (x - shift, zeros) if inverse else (x + shift, zeros)


__all__ = ["LOG_SCALE_FNS", "AdditiveCoupling", "AffineCoupling", "call_network"]
