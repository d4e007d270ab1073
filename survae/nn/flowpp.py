"""Flow++'s coupling network (Ho et al. 2019, "Flow++", Sec. 3.3).

input conv3×3 → ``num_blocks`` × [gated residual conv, layer norm, gated multi-head
self-attention over the H·W positions, layer norm] → zero-initialised conv3×3.

The layout follows the paper's official implementation, so parameter counts agree with it:
with ``hidden_channels=96, num_blocks=10``, ``in_channels=3``,
``out_channels=3·(2 + 3·32)`` and ``image_size=(32, 16)`` (a checkerboard half of a CIFAR-10
image) one network has 2,805,990 parameters, and the paper's CIFAR-10 model (31,443,440
parameters) is built from 9 such main-flow couplings plus 4 two-block dequantisation couplings
with 32 context channels (official ``flows/flows.py``). The official ImageNet models
(``flows_imagenet/launchers/*.py``) weight-normalise every convolution and dense layer
(``weight_norm=True``: one more gain per output channel) and apply a concat-ELU before the
output convolution (``output_concat_elu=True``: its input has ``2·hidden_channels`` channels).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from survae.errors import ShapeError, check_shape
from survae.nn.build import zero_init_
from survae.nn.conv import Conv2d
from survae.nn.dropout import Dropout
from survae.registry import register


class WeightNormConv2d(Conv2d):
    """``nn.Conv2d`` with weight normalisation (Salimans & Kingma 2016), as the official Flow++
    ImageNet code's ``conv2d`` and ``dense``: the kernel is ``g · V / ‖V‖`` with one norm per
    output channel (over its input channels and taps). ``weight`` holds ``V``, ``weight_g`` the
    gains ``g``; the gains start at ``‖V‖``, so the layer starts as the plain convolution."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, **kwargs):
        super().__init__(in_channels, out_channels, kernel_size, **kwargs)
        self.weight_g = nn.Parameter(self._norm(self.weight.detach()).clone())

    @staticmethod
    def _norm(v: torch.Tensor) -> torch.Tensor:
        return v.flatten(1).norm(dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = self.weight_g / self._norm(self.weight).clamp_min(1e-12)
        return self._conv_forward(x, self.weight * scale.view(-1, 1, 1, 1), self.bias)


def conv2d(
    in_channels: int, out_channels: int, kernel_size: int, weight_norm: bool = False
) -> nn.Conv2d:
    """A same-padded convolution, weight-normalised if ``weight_norm``."""
    cls = WeightNormConv2d if weight_norm else Conv2d
    return cls(in_channels, out_channels, kernel_size, padding=kernel_size // 2)


def zero_output_(conv: nn.Conv2d) -> None:
    """Make ``conv`` output zeros (a coupling starting at the identity): zero weight and bias,
    or for a weight-normalised conv zero gains and bias (its direction ``V`` must stay non-zero)."""
    if isinstance(conv, WeightNormConv2d):
        nn.init.zeros_(conv.weight_g)
        nn.init.zeros_(conv.bias)
    else:
        zero_init_(conv)


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
    ``weight_norm`` weight-normalises the convolutions (official ImageNet models).
    """

    def __init__(
        self,
        channels: int,
        dropout: float = 0.0,
        context_channels: int | None = None,
        second_kernel_size: int = 1,
        weight_norm: bool = False,
    ):
        super().__init__()
        wn = weight_norm
        self.conv1 = conv2d(2 * channels, channels, 3, wn)
        self.context_proj = (
            conv2d(2 * context_channels, channels, 1, wn) if context_channels else None
        )
        self.dropout = Dropout(dropout)
        self.conv2 = conv2d(2 * channels, 2 * channels, second_kernel_size, wn)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        h = self.conv1(concat_elu(x))
        if self.context_proj is not None and context is not None:
            h = h + self.context_proj(concat_elu(context))
        h = self.dropout(concat_elu(h))
        return x + _gate(self.conv2(h))


class GatedSelfAttention(nn.Module):
    """``x + gate(proj₂(dropout(MHA(proj₁(x + pos)))))``: multi-head self-attention over all
    H·W positions of a feature map, with 1×1 projections (C→3C for queries/keys/values,
    C→2C for the gate). The optional positional embedding enters queries/keys/values only.
    ``weight_norm`` weight-normalises the projections (official ImageNet models)."""

    def __init__(
        self, channels: int, num_heads: int = 4, dropout: float = 0.0, weight_norm: bool = False
    ):
        super().__init__()
        if channels % num_heads:
            raise ValueError(
                f"GatedSelfAttention: channels ({channels}) must be divisible by "
                f"num_heads ({num_heads})"
            )
        self.channels, self.num_heads = channels, num_heads
        self.qkv = conv2d(channels, 3 * channels, 1, weight_norm)
        self.dropout = Dropout(dropout)
        self.proj = conv2d(channels, 2 * channels, 1, weight_norm)

    def forward(self, x: torch.Tensor, pos: torch.Tensor | None = None) -> torch.Tensor:
        B, C, H, W = x.shape
        c = x if pos is None else x + pos
        # channel index = (q/k/v)·C + head·d + i, as in the official layout
        qkv = self.qkv(c).reshape(B, 3, self.num_heads, C // self.num_heads, H * W)
        q, k, v = qkv.permute(1, 0, 2, 4, 3).unbind(0)  # each [B, heads, T, d]
        a = F.scaled_dot_product_attention(q, k, v)  # [B, heads, T, d]
        a = a.transpose(2, 3).reshape(B, C, H, W)
        return x + _gate(self.proj(self.dropout(a)))


class GatedPointwiseMaxout(nn.Module):
    """``x + gate(proj₂(dropout(maxout₃(proj₁(x + pos)))))``: the official "no attention"
    ablation's stand-in for :class:`GatedSelfAttention` (``flows/ablations/abl_noattn.py``,
    ``gated_nin``), with the same projections (C→3C, C→2C) and so the same parameter count;
    the maximum is over each channel's three consecutive outputs of ``proj₁``."""

    def __init__(self, channels: int, dropout: float = 0.0, weight_norm: bool = False):
        super().__init__()
        self.proj1 = conv2d(channels, 3 * channels, 1, weight_norm)
        self.dropout = Dropout(dropout)
        self.proj2 = conv2d(channels, 2 * channels, 1, weight_norm)

    def forward(self, x: torch.Tensor, pos: torch.Tensor | None = None) -> torch.Tensor:
        B, C, H, W = x.shape
        c = x if pos is None else x + pos
        h = self.proj1(c).view(B, C, 3, H, W).amax(dim=2)
        return x + _gate(self.proj2(self.dropout(h)))


#: what follows the gated convolution in a block: Flow++'s self-attention, or the official
#: ablation's parameter-matched pointwise gated maxout (``use_attention=False`` removes both)
ATTENTIONS = ("self", "pointwise")


class FlowPPBlock(nn.Module):
    """Gated residual conv → layer norm → [gated self-attention (or the ablation's pointwise
    stand-in, ``attention="pointwise"``) → layer norm]."""

    def __init__(
        self,
        channels: int,
        num_heads: int = 4,
        dropout: float = 0.0,
        use_attention: bool = True,
        context_channels: int | None = None,
        weight_norm: bool = False,
        attention: str = "self",
    ):
        super().__init__()
        wn = weight_norm
        self.conv = GatedResidualConv(channels, dropout, context_channels, weight_norm=wn)
        self.norm1 = ChannelLayerNorm(channels)
        self.attn: nn.Module | None = None
        if use_attention and attention == "pointwise":
            self.attn = GatedPointwiseMaxout(channels, dropout, wn)
        elif use_attention:
            self.attn = GatedSelfAttention(channels, num_heads, dropout, wn)
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
    is the paper's "no self-attention" ablation with the attention removed; ``attention=
    "pointwise"`` is the official ablation's, with a parameter-matched pointwise gated maxout
    (:class:`GatedPointwiseMaxout`) in its place. ``weight_norm`` weight-normalises every
    convolution and ``output_concat_elu`` applies a concat-ELU before the output convolution, as
    the official ImageNet models (off: the official CIFAR-10 model). A zero-initialised output
    (``zero_init_output``) starts the coupling at the identity.
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
        weight_norm: bool = False,
        output_concat_elu: bool = False,
        attention: str = "self",
    ):
        super().__init__()
        if attention not in ATTENTIONS:
            raise ValueError(f"FlowPPNet: attention must be one of {ATTENTIONS}, got {attention!r}")
        if use_attention and attention == "self" and hidden_channels % num_heads:
            raise ValueError(
                f"FlowPPNet: hidden_channels ({hidden_channels}) must be divisible by "
                f"num_heads ({num_heads})"
            )
        self.in_channels, self.out_channels = in_channels, out_channels
        self.context_channels = context_channels
        self.image_size = None if image_size is None else (int(image_size[0]), int(image_size[1]))
        self.output_concat_elu = output_concat_elu
        self.inp = conv2d(in_channels, hidden_channels, 3, weight_norm)
        if use_attention and self.image_size is not None:
            self.pos_emb = nn.Parameter(torch.randn(1, hidden_channels, *self.image_size) * 0.01)
        else:
            self.register_parameter("pos_emb", None)
        self.blocks = nn.ModuleList(
            FlowPPBlock(
                hidden_channels,
                num_heads,
                dropout,
                use_attention,
                context_channels,
                weight_norm,
                attention,
            )
            for _ in range(num_blocks)
        )
        out_in = 2 * hidden_channels if output_concat_elu else hidden_channels
        self.out = conv2d(out_in, out_channels, 3, weight_norm)
        if zero_init_output:
            zero_output_(self.out)

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
        return self.out(concat_elu(h) if self.output_concat_elu else h)
