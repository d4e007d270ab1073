"""The context networks and samplers of Flow++'s variational dequantizer (also VFlow's
posterior): the context processor and ``q(y | c)`` as a conditional flow."""

from __future__ import annotations

import torch
from torch import nn

from survae.errors import check_shape
from survae.flows import Flow
from survae.nn.flowpp import (
    ChannelLayerNorm,
    GatedResidualConv,
    GatedSelfAttention,
    _scale,
    conv2d,
)
from survae.transforms.bijections.flowpp import HalfSplit


class FlowPPContextNet(nn.Module):
    """Context processor of Flow++'s dequantizer (and VFlow's posterior): column split of the
    input (``[B, C, H, W] → [B, 2C, H, W/2]``) → conv3×3 to ``context_channels`` →
    ``num_blocks`` gated residual convs (3×3 second conv); with ``attention`` each block adds
    layer norm, gated self-attention (with a positional embedding) and layer norm, and with
    ``weight_norm`` every convolution is weight-normalised, as the official ImageNet models'
    ``deep_processor``; ``data_init``: the official data-dependent initialisation of every
    convolution (:class:`~survae.nn.flowpp.DataInitConv2d`, as the official ``shallow_processor``).
    Output ``[B, context_channels, H, W/2]``, the spatial size of the couplings it conditions."""

    def __init__(
        self,
        in_channels: int,
        context_channels: int = 32,
        num_blocks: int = 3,
        dropout: float = 0.0,
        attention: bool = False,
        num_heads: int = 4,
        image_size: tuple[int, int] | None = None,
        weight_norm: bool = False,
        data_init: bool = False,
    ):
        super().__init__()
        self.in_channels = in_channels
        self.split = HalfSplit("columns")
        wn, di = weight_norm, data_init
        self.inp = conv2d(2 * in_channels, context_channels, 3, wn, _scale(di, 1.0))
        self.convs = nn.ModuleList(
            GatedResidualConv(
                context_channels, dropout, second_kernel_size=3, weight_norm=wn, data_init=di
            )
            for _ in range(num_blocks)
        )
        if attention:
            if image_size is None:
                raise ValueError("FlowPPContextNet: attention needs image_size (H, W/2)")
            self.pos_emb = nn.Parameter(torch.randn(1, context_channels, *image_size) * 0.01)
            self.attns = nn.ModuleList(
                GatedSelfAttention(context_channels, num_heads, dropout, wn, di)
                for _ in range(num_blocks)
            )
            self.norms = nn.ModuleList(
                ChannelLayerNorm(context_channels) for _ in range(2 * num_blocks)
            )
        else:
            self.register_parameter("pos_emb", None)
            self.attns = self.norms = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_shape(self, x, (None, self.in_channels, None, None))
        h = self.inp(self.split(x)[0])
        for i, conv in enumerate(self.convs):
            h = conv(h)
            if self.attns is not None:
                h = self.norms[2 * i + 1](self.attns[i](self.norms[2 * i](h), self.pos_emb))
        return h


class ContextFlowSampler(nn.Module):
    """``q(y | c)`` as a conditional flow whose layers see ``context_net(c)``: exposes
    ``sample_with_log_prob(num_samples, context=c)`` (what ``augment`` and
    ``variational_dequantization`` call); without a ``context_net`` the flow sees ``c``."""

    def __init__(self, flow: Flow, context_net: nn.Module | None = None):
        super().__init__()
        self.flow = flow
        self.context_net = context_net

    def sample_with_log_prob(
        self, num_samples: int, context: torch.Tensor | None = None, temperature: float = 1.0
    ) -> tuple[torch.Tensor, torch.Tensor]:
        ctx = self.context_net(context) if self.context_net is not None else context
        return self.flow.sample_with_log_prob(num_samples, temperature=temperature, context=ctx)
