"""Image models of SurVAE Flows (Nielsen et al. 2020, Sec. 5.4): MaxPoolFlow and its
multi-scale slicing baseline.

Both models share one layout (hyperparameters of the official code's ``PoolFlow``):

1. dequantization: variational (a conditional flow ``q(u | x)``, see
   :func:`dequantization_flow`) or uniform;
2. shift by −0.5 (values in ``[−0.5, 0.5)``) and a 2×2 squeeze (``C → 4C`` channels);
3. ``num_scales`` scales of ``num_steps`` × [(actnorm), invertible 1×1 conv, affine coupling
   with a gated DenseNet and log-scale ``2·tanh(s/2)``]; between scales the resolution
   halves by

   * ``pooling="max"`` (MaxPoolFlow): a 2×2 max-pool surjection whose dropped values have a
     standard half-normal below the maximum, or
   * ``pooling="slice"`` (baseline): a squeeze (``C → 4C``) and a slice keeping ``C`` channels,
     the other ``3C`` with a standard normal (RealNVP's multi-scale factor-out);

4. a learned per-channel normal base (:class:`ChannelwiseNormal`).

With the paper's settings (CIFAR-10: 2 scales × 12 steps; ImageNet 64: 3 × 8) the model has
105,023,968 parameters, as the official one: 24 coupling networks of 3,745,228, 24 1×1 convs
of 144, 24 base parameters, and 15,135,016 in the dequantization flow.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from survae.distributions.base import Distribution
from survae.errors import check_shape
from survae.flows import Flow
from survae.nn.densenet import DenseBlock
from survae.registry import register
from survae.transforms.base import InverseBijection, Transform
from survae.transforms.bijections.actnorm import ActNorm
from survae.transforms.bijections.conv1x1 import Conv1x1
from survae.transforms.bijections.coupling import AffineCoupling
from survae.transforms.bijections.elementwise import Shift
from survae.transforms.bijections.squeeze import Squeeze2d
from survae.transforms.surjections.dequantization import (
    UniformDequantization,
    VariationalDequantization,
)
from survae.transforms.surjections.max_pool import MaxPoolSurjection2d
from survae.transforms.surjections.slicing import Slice
from survae.utils import sum_except_batch

LOG_2PI = math.log(2 * math.pi)

POOLINGS = ("max", "slice")
DEQUANTIZATIONS = ("flow", "uniform")


@register("distribution", "channelwise_normal")
class ChannelwiseNormal(Distribution):
    """Normal density over ``[C, H, W]`` with a learned mean and log-std per channel, shared by
    all positions (the official SurVAE image models' ``ConvNormal2d``); zero-initialised, so it
    starts at N(0, I). ``2·C`` parameters, unlike :class:`~survae.distributions.DiagonalNormal`
    which learns one pair per element. Sampling at temperature T scales the noise by T.
    """

    def __init__(self, shape: Sequence[int]):
        super().__init__()
        shape = tuple(int(s) for s in shape)
        if len(shape) != 3:
            raise ValueError(f"ChannelwiseNormal: shape must be (C, H, W), got {shape}")
        self.shape = shape
        self.loc = nn.Parameter(torch.zeros(1, shape[0], 1, 1))
        self.log_scale = nn.Parameter(torch.zeros(1, shape[0], 1, 1))

    def log_prob(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        check_shape(self, x, (None, *self.shape))
        u = (x - self.loc) * torch.exp(-self.log_scale)
        return sum_except_batch(-0.5 * (u**2 + LOG_2PI) - self.log_scale)

    def sample(
        self,
        num_samples: int,
        context: torch.Tensor | None = None,
        temperature: float = 1.0,
    ) -> torch.Tensor:
        return self.sample_with_log_prob(num_samples, context, temperature)[0]

    def sample_with_log_prob(
        self,
        num_samples: int,
        context: torch.Tensor | None = None,
        temperature: float = 1.0,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        eps = torch.randn(num_samples, *self.shape, device=self.loc.device, dtype=self.loc.dtype)
        x = self.loc + torch.exp(self.log_scale) * (eps * temperature)
        # log N(x; loc, σ²) with (x − loc)/σ = T·eps, without recomputing it
        log_prob = sum_except_batch(-0.5 * ((eps * temperature) ** 2 + LOG_2PI) - self.log_scale)
        return x, log_prob

    def extra_repr(self) -> str:
        return f"shape={self.shape}"


def _densenet(
    num_blocks: int, mid_channels: int, depth: int, growth: int, dropout: float, gated_conv: bool
) -> dict:
    return {
        "name": "densenet",
        "num_blocks": num_blocks,
        "mid_channels": mid_channels,
        "depth": depth,
        "growth": growth,
        "dropout": dropout,
        "gated_conv": gated_conv,
    }


def _coupling(channels: int, net: dict, context_channels: int = 0) -> AffineCoupling:
    """SurVAE image coupling: the first half of the channels conditions the second half;
    zero-initialised DenseNet output, so the layer starts at the identity."""
    return AffineCoupling(
        channels,
        net=dict(net),
        mask="channel",
        scale_fn="tanh_exp",
        context_channels=context_channels,
    )


def dequantization_flow(
    data_shape: Sequence[int],
    num_bins: int = 256,
    num_steps: int = 4,
    context_channels: int = 32,
    net: dict | None = None,
    context_depth: int = 4,
    context_growth: int = 16,
) -> VariationalDequantization:
    """Variational dequantization with a conditional flow ``q(u | x)`` (official SurVAE code).

    Context net (on ``x`` rescaled to ``[−1, 1]``): gated dense block ``C → mid`` (depth 4,
    growth 16) → 2×2 stride-2 conv ``mid → mid`` → gated dense block ``mid → context_channels``;
    the context has half the data's resolution. Sampling ``u``: noise from a learned per-channel
    normal on ``[4C, H/2, W/2]`` → ``num_steps`` × [1×1 conv, affine coupling conditioned on
    the context] → 1×1 conv → unsqueeze → sigmoid (the sigmoid is the dequantizer's ``squash``).
    """
    C, H, W = (int(s) for s in data_shape)
    net = dict(net or _densenet(1, 64, 10, 64, 0.0, True))
    mid = int(net.get("mid_channels", 64))
    dropout = float(net.get("dropout", 0.0))
    gated = bool(net.get("gated_conv", True))
    context_net = nn.Sequential(
        DenseBlock(C, mid, context_depth, context_growth, dropout, gated),
        nn.Conv2d(mid, mid, kernel_size=2, stride=2),
        DenseBlock(mid, context_channels, context_depth, context_growth, dropout, gated),
    )
    noise_shape = (4 * C, H // 2, W // 2)
    # the generative (sampling) order of the encoder; the Flow lists its inverse, data → noise
    sampling: list[Transform] = []
    for _ in range(num_steps):
        sampling.append(Conv1x1(noise_shape[0]))
        sampling.append(_coupling(noise_shape[0], net, context_channels))
    sampling.append(Conv1x1(noise_shape[0]))
    layers: list[Transform] = [Squeeze2d()]
    layers += [InverseBijection(t) for t in reversed(sampling)]
    encoder = Flow(ChannelwiseNormal(noise_shape), layers)
    return VariationalDequantization(
        encoder, num_bins=num_bins, context_net=context_net, squash=True
    )


@register("architecture", "survae_image_flow")
def survae_image_flow(
    data_shape: Sequence[int] = (3, 32, 32),
    num_bins: int | None = 256,
    num_scales: int = 2,
    num_steps: int = 12,
    pooling: str = "max",
    actnorm: bool = False,
    dequant: str = "flow",
    dequant_steps: int = 4,
    dequant_context: int = 32,
    densenet_blocks: int = 1,
    densenet_channels: int = 64,
    densenet_depth: int = 10,
    densenet_growth: int = 64,
    dropout: float = 0.0,
    gated_conv: bool = True,
) -> Flow:
    """MaxPoolFlow (``pooling="max"``) or the slicing baseline (``pooling="slice"``) of SurVAE
    Flows; see the module docstring. The likelihood is a lower bound (dequantization).

    ``data_shape`` is ``(C, H, W)`` with H and W divisible by ``2**num_scales``; ``num_bins``
    is the number of pixel values (256 for 8-bit data).
    """
    if pooling not in POOLINGS:
        raise ValueError(f"survae_image_flow: pooling must be one of {POOLINGS}, got {pooling!r}")
    if dequant not in DEQUANTIZATIONS:
        raise ValueError(
            f"survae_image_flow: dequant must be one of {DEQUANTIZATIONS}, got {dequant!r}"
        )
    if len(data_shape) != 3:
        raise ValueError(
            f"survae_image_flow: data_shape must be (C, H, W), got {tuple(data_shape)}"
        )
    if num_scales < 1 or num_steps < 1:
        raise ValueError(
            f"survae_image_flow: num_scales and num_steps must be >= 1, got {num_scales}, "
            f"{num_steps}"
        )
    C, H, W = (int(s) for s in data_shape)
    factor = 2**num_scales
    if H % factor or W % factor:
        raise ValueError(
            f"survae_image_flow: H and W must be divisible by 2**num_scales = {factor} (one "
            f"squeeze plus {num_scales - 1} downsamplings), got data_shape {tuple(data_shape)}"
        )
    num_bins = 256 if num_bins is None else int(num_bins)
    net = _densenet(
        densenet_blocks, densenet_channels, densenet_depth, densenet_growth, dropout, gated_conv
    )

    layers: list[Transform] = []
    if dequant == "flow":
        layers.append(
            dequantization_flow(data_shape, num_bins, dequant_steps, dequant_context, net)
        )
    else:
        layers.append(UniformDequantization(num_bins))
    layers += [Shift(-0.5), Squeeze2d()]
    channels, height, width = 4 * C, H // 2, W // 2

    for scale in range(num_scales):
        for _ in range(num_steps):
            if actnorm:
                layers.append(ActNorm(channels))
            layers += [Conv1x1(channels), _coupling(channels, net)]
        if scale < num_scales - 1:
            if pooling == "max":
                layers.append(MaxPoolSurjection2d(kernel_size=2))
            else:
                layers += [Squeeze2d(), Slice(4 * channels, num_keep=channels)]
            height, width = height // 2, width // 2
        elif actnorm:
            layers.append(ActNorm(channels))

    return Flow(ChannelwiseNormal((channels, height, width)), layers)


__all__ = ["ChannelwiseNormal", "dequantization_flow", "survae_image_flow"]
