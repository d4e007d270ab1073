"""RealNVP (Dinh, Sohl-Dickstein & Bengio, ICLR 2017): multi-scale affine coupling flow for
images, with checkerboard and channel-wise masks, ResNet coupling networks and batch norm.

Layout for data ``[C, H, W]`` and ``S`` scales (Sec. 3.6 of the paper):

    uniform dequantization → logit(eps + (1 − 2·eps)·x)
    → (S − 1) × [3 checkerboard couplings, squeeze, 3 channel-wise couplings, factor out half]
    → 4 checkerboard couplings → N(0, I)

* Logit preprocessing (Sec. 4.1, ``α = 0.05``) maps the dequantized data from ``[0, 1)`` to ℝ
  to reduce boundary effects; the ``logit`` layer's log-determinant enters ``log_prob``, so
  the bits/dim are those of the data, as the paper's ("we take into account this
  transformation when computing log-likelihood and bits per dimension"). survae's ``logit``
  layer is symmetric, ``logit(eps + (1 − 2·eps)·x)``, where the paper writes
  ``logit(α + (1 − α)·x)``; with ``eps = α`` both keep the input at least ``α`` away from 0.
* Masks alternate between consecutive couplings (``reverse_mask``), so every element is
  transformed. Each coupling is optionally followed by batch normalisation of its output
  (Sec. 3.7; the ``batch_norm`` bijection, whose log-determinant uses the batch statistics).
* Coupling networks are ``resnet`` networks (pre-activation residual blocks); their width
  doubles at every scale, and the channel-wise couplings after a squeeze use twice the width of
  the checkerboard couplings before it (Sec. 3.6: "as the spatial resolution is reduced, the
  number of hidden layer features in s and t is doubled").
* The log-scale is ``a · tanh(s)`` with a learned per-channel ``a`` ("a hyperbolic tangent
  function multiplied by a learned scale", Sec. 4.1); any other ``scale_fn`` of the affine
  coupling can be chosen instead.
* Factor-out is survae's ``slice`` surjection with a standard normal for the dropped half
  (exact contribution ``log N(z_dropped; 0, I)``), as in the paper's Eq. 14-16.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from survae.distributions import StandardNormal
from survae.nn.build import build_network
from survae.registry import register
from survae.transforms.base import Transform
from survae.transforms.bijections.batchnorm import BatchNormBijection
from survae.transforms.bijections.coupling import LOG_SCALE_FNS, AffineCoupling
from survae.transforms.bijections.elementwise import Logit
from survae.transforms.bijections.squeeze import Squeeze2d
from survae.transforms.surjections.dequantization import UniformDequantization
from survae.transforms.surjections.slicing import Slice

from .glow import MultiScaleFlow, check_image_shape, check_num_bins

#: RealNVP's log-scale ``a · tanh(s)`` with a learned ``a``
LEARNED_TANH = "learned_tanh"


class TanhScaleNet(nn.Module):
    """Wraps a coupling network whose output is ``[shift, s]`` (``n`` channels each) and returns
    ``[shift, a · tanh(s)]`` with a learned per-channel factor ``a`` (initialised to 1).

    Used with an affine coupling whose ``scale_fn`` is ``"exp"``, this is RealNVP's scale
    ``exp(a · tanh(s))``: bounded for any fixed ``a``, so early training cannot blow up."""

    def __init__(self, net: nn.Module, num_transformed: int):
        super().__init__()
        self.net = net
        self.num_transformed = int(num_transformed)
        self.log_scale_factor = nn.Parameter(torch.ones(self.num_transformed))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.net(x)
        shift, s = torch.chunk(h, 2, dim=1)
        a = self.log_scale_factor.view(1, -1, *([1] * (h.dim() - 2)))
        return torch.cat([shift, a * torch.tanh(s)], dim=1)


def realnvp_coupling(
    channels: int,
    mask: str,
    reverse_mask: bool,
    hidden_channels: int,
    num_blocks: int,
    net_norm: str = "batch",
    scale_fn: str = LEARNED_TANH,
) -> AffineCoupling:
    """An affine coupling with a ``resnet`` network (``mask`` "checkerboard" or "channel")."""
    net_spec = {
        "name": "resnet",
        "hidden_channels": hidden_channels,
        "num_blocks": num_blocks,
        "norm": net_norm,
    }
    if scale_fn != LEARNED_TANH:
        return AffineCoupling(
            channels, net=net_spec, mask=mask, scale_fn=scale_fn, reverse_mask=reverse_mask
        )
    if mask == "checkerboard":  # the network sees every channel, transformed ones masked
        in_channels, transformed = channels, channels
    else:  # channel halves: the first conditions, the second is transformed
        in_channels, transformed = channels // 2, channels - channels // 2
    net = TanhScaleNet(build_network(net_spec, in_channels, 2 * transformed), transformed)
    return AffineCoupling(channels, net=net, mask=mask, scale_fn="exp", reverse_mask=reverse_mask)


@register("architecture", "realnvp")
def realnvp(
    data_shape: Sequence[int] = (3, 32, 32),
    num_bins: int | None = 256,
    num_scales: int = 2,
    hidden_channels: int = 64,
    num_blocks: int = 8,
    net_norm: str = "batch",
    batch_norm: bool = True,
    logit_eps: float = 0.05,
    scale_fn: str = LEARNED_TANH,
) -> MultiScaleFlow:
    """RealNVP for images ``[C, H, W]`` of ``num_bins`` levels (see the module docstring).

    Args:
        num_scales: scales of the multi-scale architecture; all but the last end with a
            squeeze and a factor-out of half the channels (CIFAR-10: 2, "downscale only once").
        hidden_channels: width of the first scale's coupling networks (doubles per scale).
        num_blocks: residual blocks per coupling network.
        net_norm: normalisation inside the networks: ``"batch"``, ``"weight"`` or ``"none"``.
        batch_norm: batch-normalise every coupling's output (a bijection, Sec. 3.7).
        logit_eps: ``α`` of the logit preprocessing (0 disables the squashing margin).
        scale_fn: ``"learned_tanh"`` (RealNVP's ``a · tanh(s)`` log-scale) or any affine
            coupling ``scale_fn`` (``"exp"``, ``"tanh_exp"``, ``"sigmoid"``, ``"softplus"``).

    ``log_prob`` is a lower bound on ``log P(x)`` of the discrete data (``exact`` is False
    because of the dequantization) and the exact density of the dequantized data.
    """
    name = "realnvp"
    if num_scales < 1:
        raise ValueError(f"{name}: num_scales must be >= 1, got {num_scales}")
    if scale_fn != LEARNED_TANH and scale_fn not in LOG_SCALE_FNS:
        valid = ", ".join([LEARNED_TANH, *LOG_SCALE_FNS])
        raise ValueError(f"{name}: unknown scale_fn {scale_fn!r}; valid: {valid}")
    C, H, W = check_image_shape(name, data_shape, num_scales - 1)
    bins = check_num_bins(name, num_bins)

    def coupling_block(channels: int, mask: str, count: int, hidden: int) -> list[Transform]:
        block: list[Transform] = []
        for i in range(count):
            block.append(
                realnvp_coupling(channels, mask, i % 2 == 1, hidden, num_blocks, net_norm, scale_fn)
            )
            if batch_norm:
                block.append(BatchNormBijection(channels))
        return block

    layers: list[Transform] = [UniformDequantization(num_bins=bins), Logit(eps=logit_eps)]
    hidden = hidden_channels
    for _ in range(num_scales - 1):
        layers += coupling_block(C, "checkerboard", 3, hidden)
        layers.append(Squeeze2d(2))
        C, H, W = 4 * C, H // 2, W // 2
        layers += coupling_block(C, "channel", 3, 2 * hidden)
        layers.append(Slice(C, C // 2))
        C = C // 2
        hidden *= 2
    layers += coupling_block(C, "checkerboard", 4, hidden)
    return MultiScaleFlow(StandardNormal((C, H, W)), layers)


__all__ = ["LEARNED_TANH", "TanhScaleNet", "realnvp", "realnvp_coupling"]
