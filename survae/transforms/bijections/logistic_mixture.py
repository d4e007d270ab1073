"""Flow++ logistic-mixture CDF coupling (Ho et al., 2019).

The transformed part ``x2`` is pushed elementwise through the CDF of a mixture of ``K``
logistics, the inverse sigmoid, and an affine map, all parametrised by a network of the
conditioning part ``x1`` (and an optional context):

    y2 = exp(a) · logit(F(x2; pi, mu, s)) + b,    F(x) = Σ_k pi_k σ((x - mu_k) e^{-s_k}).

Numerics. ``logit(F)`` is evaluated as ``log F - log(1 - F)`` with both terms from
log-sum-exp of log-sigmoids, so it stays exact far in the tails where ``F`` rounds to 0 or 1
(no ``eps`` clamp of ``F`` is needed). Mixture log-scales are clamped to ``>= min_log_scale``
(-7, as in Flow++). The inverse solves ``logit(F(x)) = w`` by vectorised bisection with a fixed
number of iterations (no host synchronisation) inside a bracket that provably contains the root:
since ``σ`` is monotone, ``min_k u_k <= logit(F(x)) <= max_k u_k`` with
``u_k = (x - mu_k) e^{-s_k}``, so the root lies in ``[min_k(mu_k + w e^{s_k}),
max_k(mu_k + w e^{s_k})]``. Gradients flow through the inverse by the implicit-function rule.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from survae.errors import check_ndim, check_shape
from survae.nn.build import NetSpec, build_network
from survae.registry import register
from survae.transforms.base import Bijection
from survae.transforms.bijections.coupling import call_network

_MASKS = ("channel", "checkerboard")
_CONTEXT_MODES = ("concat", "net")


def mixture_logit_cdf(
    x: torch.Tensor, log_weights: torch.Tensor, means: torch.Tensor, log_scales: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """``logit F(x)`` and ``log dlogit F(x)/dx = log f(x) - log F(x) - log(1 - F(x))``.

    ``x`` has shape ``[B, *rest]``; the mixture parameters ``[B, K, *rest]`` (components on
    dimension 1, ``log_weights`` already log-normalised over it).
    """
    u = (x.unsqueeze(1) - means) * torch.exp(-log_scales)
    log_sig, log_sig_neg = F.logsigmoid(u), F.logsigmoid(-u)
    log_cdf = torch.logsumexp(log_weights + log_sig, dim=1)
    log_sf = torch.logsumexp(log_weights + log_sig_neg, dim=1)
    log_pdf = torch.logsumexp(log_weights + log_sig + log_sig_neg - log_scales, dim=1)
    return log_cdf - log_sf, log_pdf - log_cdf - log_sf


def mixture_logit_cdf_inverse(
    w: torch.Tensor,
    log_weights: torch.Tensor,
    means: torch.Tensor,
    log_scales: torch.Tensor,
    num_iters: int = 100,
) -> torch.Tensor:
    """Solve ``logit F(x) = w`` elementwise by bisection (no gradient; see module docstring)."""
    with torch.no_grad():
        ends = means + w.unsqueeze(1) * torch.exp(log_scales)
        lo, hi = ends.amin(dim=1), ends.amax(dim=1)
        for _ in range(num_iters):
            mid = 0.5 * (lo + hi)
            below = mixture_logit_cdf(mid, log_weights, means, log_scales)[0] < w
            lo = torch.where(below, mid, lo)
            hi = torch.where(below, hi, mid)
        return 0.5 * (lo + hi)


@register("layer", "logistic_mixture_coupling")
class LogisticMixtureCoupling(Bijection):
    """Flow++ mixture-of-logistics CDF coupling on ``[B, C, H, W]`` (also ``[B, C, L]`` and
    vectors ``[B, D]``), Ho et al. 2019.

    Likelihood contribution, summed over the transformed elements:
    ``log f(x2) - log F(x2) - log(1 - F(x2)) + a`` with ``f, F`` the mixture pdf and CDF.

    ``mask="channel"`` conditions on the first half of the channels (the second with
    ``flip=True``) and needs an even ``num_channels``; ``mask="checkerboard"`` conditions on the
    positions whose spatial indices sum to an even number (odd with ``flip``), features for
    vectors. The network maps ``x1`` (``x·mask`` for the checkerboard) and the optional context
    (``context_channels`` wide, same spatial size as ``x``) to
    ``(3K + 2)·C_out`` channels, ``C_out = C/2`` (channel) or ``C`` (checkerboard), laid out
    parameter-major: viewed as ``[B, 3K + 2, C_out, ...]`` the groups are ``K`` mixture logits,
    ``K`` means, ``K`` log-scales, then the raw log-scale ``a`` and the shift ``b``. The
    elementwise log-scale is bounded, ``a = rescale · tanh(a_raw)`` with a learnable
    per-channel ``rescale`` (initialised to 1); ``rescale=False`` gives the official Flow++
    ``a = tanh(a_raw)`` (no extra parameters). With ``context_mode="concat"`` the context is
    concatenated to the network input on the channel axis; with ``"net"`` the network is called
    as ``net(x1, context)`` (e.g. ``flowpp_net``, whose spec then gets ``context_channels``
    filled in when it does not set it). If the network's last layer is zero-initialised
    the layer starts exactly at the identity (identical standard logistics, ``a = b = 0``).
    """

    #: dtype the network runs in under ``torch.autocast`` (e.g. ``torch.bfloat16``); None: off.
    #: The network output is cast back before the mixture arithmetic and log-determinant.
    net_autocast: torch.dtype | None = None

    def __init__(
        self,
        num_channels: int,
        net: NetSpec,
        num_components: int = 4,
        mask: str = "channel",
        flip: bool = False,
        context_channels: int = 0,
        context_mode: str = "concat",
        num_bisection_iters: int = 100,
        min_log_scale: float = -7.0,
        rescale: bool = True,
    ):
        super().__init__()
        if mask not in _MASKS:
            raise ValueError(f"LogisticMixtureCoupling: mask must be one of {_MASKS}, got {mask!r}")
        if mask == "channel" and (num_channels < 2 or num_channels % 2 != 0):
            raise ValueError(
                "LogisticMixtureCoupling with mask='channel' needs an even number of channels "
                f"(at least 2) to split in halves, got {num_channels}; use "
                "mask='checkerboard' or squeeze the input first"
            )
        if context_mode not in _CONTEXT_MODES:
            raise ValueError(
                f"LogisticMixtureCoupling: context_mode must be one of {_CONTEXT_MODES}, "
                f"got {context_mode!r}"
            )
        if num_components < 1:
            raise ValueError(f"num_components must be >= 1, got {num_components}")
        self.num_channels = num_channels
        self.num_components = num_components
        self.mask = mask
        self.flip = flip
        self.context_channels = context_channels
        self.context_mode = context_mode
        self.num_bisection_iters = num_bisection_iters
        self.min_log_scale = min_log_scale
        cond = num_channels // 2 if mask == "channel" else num_channels
        self.out_per_param = num_channels - num_channels // 2 if mask == "channel" else num_channels
        net_in = cond
        if context_channels > 0 and context_mode == "concat":
            net_in += context_channels
        elif context_channels > 0 and isinstance(net, Mapping) and "context_channels" not in net:
            net = {**net, "context_channels": context_channels}
        self.net = build_network(net, net_in, (3 * num_components + 2) * self.out_per_param)
        if rescale:
            self.rescale = nn.Parameter(torch.ones(self.out_per_param))
        else:
            self.register_parameter("rescale", None)

    # --- input handling -------------------------------------------------------------------
    def _check(self, x: torch.Tensor, context: torch.Tensor | None) -> torch.Tensor | None:
        check_ndim(self, x, (2, 3, 4))
        check_shape(self, x, (None, self.num_channels, *x.shape[2:]))
        if self.context_channels == 0:
            return None  # an unconditional layer ignores any context
        if context is None:
            raise ValueError(
                f"LogisticMixtureCoupling is conditional (context_channels="
                f"{self.context_channels}) and needs a context"
            )
        check_shape(
            self, context, (x.shape[0], self.context_channels, *x.shape[2:]), what="context"
        )
        return context

    def _checkerboard(self, x: torch.Tensor) -> torch.Tensor:
        """1 on conditioning positions, 0 on transformed ones; broadcastable to ``x``."""
        dims = x.shape[1:] if x.dim() == 2 else x.shape[2:]
        parity = torch.zeros((), dtype=torch.long, device=x.device)
        for i, n in enumerate(dims):
            shape = [1] * len(dims)
            shape[i] = n
            parity = parity + torch.arange(n, device=x.device).view(shape)
        m = (parity % 2 == (1 if self.flip else 0)).to(x.dtype)
        return m.unsqueeze(0) if x.dim() == 2 else m.view(1, 1, *dims)

    def _split(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        half = self.num_channels // 2
        a, b = x[:, :half], x[:, half:]
        return (b, a) if self.flip else (a, b)

    def _merge(self, x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
        return torch.cat((x2, x1) if self.flip else (x1, x2), dim=1)

    def _params(self, cond: torch.Tensor, context: torch.Tensor | None) -> tuple[torch.Tensor, ...]:
        """Mixture log-weights, means, log-scales ``[B, K, C_out, ...]`` and ``a, b``."""
        dtype = self.net_autocast
        if context is None:
            out = call_network(self.net, cond, autocast_dtype=dtype)
        elif self.context_mode == "concat":
            out = call_network(self.net, torch.cat([cond, context], dim=1), autocast_dtype=dtype)
        else:
            out = call_network(self.net, cond, context, autocast_dtype=dtype)
        K, C = self.num_components, self.out_per_param
        spatial = tuple(cond.shape[2:])
        check_shape(self, out, (cond.shape[0], (3 * K + 2) * C, *spatial), what="network output")
        out = out.view(cond.shape[0], 3 * K + 2, C, *spatial)
        log_weights = torch.log_softmax(out[:, :K], dim=1)
        means = out[:, K : 2 * K]
        log_scales = out[:, 2 * K : 3 * K].clamp(min=self.min_log_scale)
        a = torch.tanh(out[:, 3 * K])
        if self.rescale is not None:
            a = self.rescale.view(1, C, *([1] * len(spatial))) * a
        b = out[:, 3 * K + 1]
        return log_weights, means, log_scales, a, b

    # --- the transform --------------------------------------------------------------------
    def _conditioning(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The network's conditioning input and, for the checkerboard, the mask."""
        if self.mask == "channel":
            return self._split(x)[0], None
        m = self._checkerboard(x)
        return x * m, m

    def forward(
        self, x: torch.Tensor, context: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        context = self._check(x, context)
        cond, m = self._conditioning(x)
        log_weights, means, log_scales, a, b = self._params(cond, context)
        x2 = x if m is not None else self._split(x)[1]
        logit, log_deriv = mixture_logit_cdf(x2, log_weights, means, log_scales)
        y2 = torch.exp(a) * logit + b
        ldj = log_deriv + a
        if m is None:
            return self._merge(cond, y2), ldj.reshape(x.shape[0], -1).sum(1)
        y = m * x + (1 - m) * y2
        return y, ((1 - m) * ldj).reshape(x.shape[0], -1).sum(1)

    def inverse_with_ldj(
        self, z: torch.Tensor, context: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        context = self._check(z, context)
        cond, m = self._conditioning(z)
        log_weights, means, log_scales, a, b = self._params(cond, context)
        y2 = z if m is not None else self._split(z)[1]
        w = (y2 - b) * torch.exp(-a)
        x2 = mixture_logit_cdf_inverse(
            w, log_weights, means, log_scales, num_iters=self.num_bisection_iters
        )
        if torch.is_grad_enabled():
            # Implicit-function gradient: one Newton step whose value is zero but whose
            # derivative is d x2 = (dw - d logit F) / F', the exact derivative of the root.
            logit, log_deriv = mixture_logit_cdf(x2, log_weights, means, log_scales)
            step = (w - logit) * torch.exp(-log_deriv.detach().clamp(min=-50.0))
            x2 = x2 + (step - step.detach())
        _, log_deriv = mixture_logit_cdf(x2, log_weights, means, log_scales)
        ldj = -(log_deriv + a)
        if m is None:
            return self._merge(cond, x2), ldj.reshape(z.shape[0], -1).sum(1)
        x = m * z + (1 - m) * x2
        return x, ((1 - m) * ldj).reshape(z.shape[0], -1).sum(1)
