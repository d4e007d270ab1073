"""Flow++'s coupling network (Ho et al. 2019, "Flow++", Sec. 3.3).

input conv3×3 → ``num_blocks`` × [gated residual conv, layer norm, gated multi-head
self-attention over the H·W positions, layer norm] → zero-initialised conv3×3.

The layout follows the paper's official implementation, so parameter counts agree with it:
with ``hidden_channels=96, num_blocks=10``, ``in_channels=3``,
``out_channels=3·(2 + 3·32)`` and ``image_size=(32, 16)`` (a checkerboard half of a CIFAR-10
image) one network has 2,805,990 parameters, and the paper's CIFAR-10 model (31,443,440
parameters) is built from 9 such main-flow couplings plus 4 two-block dequantisation couplings
with 32 context channels.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from survae.errors import ShapeError, check_shape
from survae.nn.build import zero_init_
from survae.nn.dropout import Dropout
from survae.registry import register


def concat_elu(x: torch.Tensor) -> torch.Tensor:
    """``ELU([x, -x])`` along channels: keeps both signs' information, doubling the channels."""
    return F.elu(torch.cat([x, -x], dim=1))


class ChannelLayerNorm(nn.Module):
    """Layer normalisation over the channels of each position of a ``[B, C, *spatial]`` tensor,
    with a learned per-channel gain and bias."""

    def __init__(self, channels: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(dim=1, keepdim=True)
        var = (x - mean).square().mean(dim=1, keepdim=True)
        shape = (1, -1) + (1,) * (x.dim() - 2)
        x = (x - mean) * torch.rsqrt(var + self.eps)
        return x * self.weight.view(shape) + self.bias.view(shape)


def _gate(h: torch.Tensor) -> torch.Tensor:
    a, b = h.chunk(2, dim=1)
    return a * torch.sigmoid(b)


class GatedResidualConv(nn.Module):
    """``x + gate(conv₂(dropout(concat_elu(conv₁(concat_elu(x)) [+ proj(concat_elu(ctx))]))))``.

    ``conv₁`` is 3×3 (2C→C); ``conv₂`` (2C→2C, ``second_kernel_size``, 1 in the coupling
    networks, 3 in Flow++'s dequantiser context processor) feeds the gate ``a·sigmoid(b)``.
    With ``context_channels`` the context is added after ``conv₁`` through a 1×1 projection.
    """

    def __init__(
        self,
        channels: int,
        dropout: float = 0.0,
        context_channels: int | None = None,
        second_kernel_size: int = 1,
    ):
        super().__init__()
        self.conv1 = nn.Conv2d(2 * channels, channels, 3, padding=1)
        self.context_proj = (
            nn.Conv2d(2 * context_channels, channels, 1) if context_channels else None
        )
        self.dropout = Dropout(dropout)
        k = second_kernel_size
        self.conv2 = nn.Conv2d(2 * channels, 2 * channels, k, padding=k // 2)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        h = self.conv1(concat_elu(x))
        if self.context_proj is not None and context is not None:
            h = h + self.context_proj(concat_elu(context))
        h = self.dropout(concat_elu(h))
        return x + _gate(self.conv2(h))


class GatedSelfAttention(nn.Module):
    """``x + gate(proj₂(dropout(MHA(proj₁(x + pos)))))``: multi-head self-attention over all
    H·W positions of a feature map, with 1×1 projections (C→3C for queries/keys/values,
    C→2C for the gate). The optional positional embedding enters queries/keys/values only."""

    def __init__(self, channels: int, num_heads: int = 4, dropout: float = 0.0):
        super().__init__()
        if channels % num_heads:
            raise ValueError(
                f"GatedSelfAttention: channels ({channels}) must be divisible by "
                f"num_heads ({num_heads})"
            )
        self.channels, self.num_heads = channels, num_heads
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.dropout = Dropout(dropout)
        self.proj = nn.Conv2d(channels, 2 * channels, 1)

    def forward(self, x: torch.Tensor, pos: torch.Tensor | None = None) -> torch.Tensor:
        B, C, H, W = x.shape
        c = x if pos is None else x + pos
        # channel index = (q/k/v)·C + head·d + i, as in the official layout
        qkv = self.qkv(c).reshape(B, 3, self.num_heads, C // self.num_heads, H * W)
        q, k, v = qkv.permute(1, 0, 2, 4, 3).unbind(0)  # each [B, heads, T, d]
        a = F.scaled_dot_product_attention(q, k, v)  # [B, heads, T, d]
        a = a.transpose(2, 3).reshape(B, C, H, W)
        return x + _gate(self.proj(self.dropout(a)))


class FlowPPBlock(nn.Module):
    """Gated residual conv → layer norm → [gated self-attention → layer norm]."""

    def __init__(
        self,
        channels: int,
        num_heads: int = 4,
        dropout: float = 0.0,
        use_attention: bool = True,
        context_channels: int | None = None,
    ):
        super().__init__()
        self.conv = GatedResidualConv(channels, dropout, context_channels)
        self.norm1 = ChannelLayerNorm(channels)
        self.attn = GatedSelfAttention(channels, num_heads, dropout) if use_attention else None
        self.norm2 = ChannelLayerNorm(channels) if use_attention else None

    def forward(
        self, x: torch.Tensor, context: torch.Tensor | None = None, pos: torch.Tensor | None = None
    ) -> torch.Tensor:
        x = self.norm1(self.conv(x, context))
        if self.attn is not None:
            x = self.norm2(self.attn(x, pos))
        return x


@register("network", "flowpp_net")
class FlowPPNet(nn.Module):
    """Flow++ coupling network ``[B, in, H, W] (+ context [B, ctx, H, W]) → [B, out, H, W]``.

    ``image_size=(H, W)`` adds Flow++'s learned positional embedding (one per network, shared
    by its attention layers; the paper uses it, and it counts towards the paper's parameter
    total); inputs must then have that spatial size. ``context_channels`` adds a context input
    projected into every gated convolution (Flow++'s dequantisation flow). ``use_attention=False``
    is the paper's "no self-attention" ablation.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        hidden_channels: int = 96,
        num_blocks: int = 10,
        num_heads: int = 4,
        dropout: float = 0.2,
        use_attention: bool = True,
        context_channels: int | None = None,
        image_size: tuple[int, int] | None = None,
        zero_init_output: bool = True,
    ):
        super().__init__()
        if use_attention and hidden_channels % num_heads:
            raise ValueError(
                f"FlowPPNet: hidden_channels ({hidden_channels}) must be divisible by "
                f"num_heads ({num_heads})"
            )
        self.in_channels, self.out_channels = in_channels, out_channels
        self.context_channels = context_channels
        self.image_size = None if image_size is None else (int(image_size[0]), int(image_size[1]))
        self.inp = nn.Conv2d(in_channels, hidden_channels, 3, padding=1)
        if use_attention and self.image_size is not None:
            self.pos_emb = nn.Parameter(torch.randn(1, hidden_channels, *self.image_size) * 0.01)
        else:
            self.register_parameter("pos_emb", None)
        self.blocks = nn.ModuleList(
            FlowPPBlock(hidden_channels, num_heads, dropout, use_attention, context_channels)
            for _ in range(num_blocks)
        )
        self.out = nn.Conv2d(hidden_channels, out_channels, 3, padding=1)
        if zero_init_output:
            zero_init_(self.out)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        H, W = self.image_size if self.image_size is not None else (None, None)
        check_shape(self, x, (None, self.in_channels, H, W))
        if self.context_channels:
            if context is None:
                raise ShapeError(
                    f"FlowPPNet: built with context_channels={self.context_channels} "
                    "but called without a context"
                )
            check_shape(
                self, context, (x.shape[0], self.context_channels, *x.shape[2:]), what="context"
            )
        h = self.inp(x)
        for block in self.blocks:
            h = block(h, context, self.pos_emb)
        return self.out(h)
