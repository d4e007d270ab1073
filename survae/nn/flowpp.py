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
import torch.distributed as dist
from torch import nn
from torch.nn import functional as F

from survae.errors import ShapeError, check_shape
from survae.nn.build import zero_init_
from survae.nn.conv import Conv2d
from survae.nn.dropout import Dropout
from survae.registry import register

#: the official Flow++ code's ``init_scale`` of the convolutions that feed a gate or a coupling's
#: output (``gated_conv``'s ``c2``, ``gated_attn``'s ``proj2``, the coupling's ``proj_out``)
OUTPUT_INIT_SCALE = 0.1


@torch.no_grad()
def channel_mean_var(y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and biased variance of ``y`` ``[B, C, ...]`` over the batch and the
    positions, in float64 (float32 on MPS), summed over all ``torch.distributed`` processes."""
    acc = torch.float32 if y.device.type == "mps" else torch.float64
    y = y.detach().to(acc)
    dims = [0, *range(2, y.dim())]
    stats = torch.cat([y.sum(dims), (y * y).sum(dims), y.new_full((1,), y.numel() / y.shape[1])])
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(stats, op=dist.ReduceOp.SUM)
    C = y.shape[1]
    mean = stats[:C] / stats[2 * C]
    return mean, (stats[C : 2 * C] / stats[2 * C] - mean * mean).clamp(min=0.0)


class DataInitConv2d(Conv2d):
    """A same-padded convolution with the official Flow++ code's data-dependent initialisation
    (``flows/flows.py`` ``conv2d``/``dense``, after Salimans & Kingma 2016) when ``init_scale``
    is set: weights start ``N(0, 0.05²)`` and the bias at zero, and the first forward pass in
    training mode rescales the output channels so that on that batch each has mean 0 and
    standard deviation ``init_scale / √(1 + 1e-8 / v)`` (``v`` its variance before):
    ``W ← s·W``, ``b ← (b − m)·s`` with ``s = init_scale / √(v + 1e-8)``. It happens once;
    loading a state dict counts as initialised, so a loaded or resumed model is never
    re-initialised (the state dict has no extra entries). ``init_scale=None``: a plain
    convolution with PyTorch's initialisation."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        init_scale: float | None = None,
        **kwargs,
    ):
        super().__init__(in_channels, out_channels, kernel_size, **kwargs)
        self.init_scale = init_scale
        self._needs_data_init = init_scale is not None
        if self._needs_data_init:
            nn.init.normal_(self.weight, std=0.05)
            if self.bias is not None:
                nn.init.zeros_(self.bias)

    def _rescale_(self, s: torch.Tensor) -> None:
        """Multiply each output channel's kernel by ``s``."""
        self.weight.mul_(s.view(-1, 1, 1, 1))

    @torch.no_grad()
    def data_init(self, x: torch.Tensor) -> None:
        """Rescale the output channels from the batch ``x`` (see the class docstring)."""
        mean, var = channel_mean_var(self._conv(x))
        s = self.init_scale * torch.rsqrt(var + 1e-8)
        self._rescale_(s.to(self.weight.dtype))
        self.bias.copy_(((self.bias.to(s.dtype) - mean) * s).to(self.bias.dtype))
        self._needs_data_init = False

    def _conv(self, x: torch.Tensor) -> torch.Tensor:
        return Conv2d.forward(self, x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._needs_data_init and self.training:
            self.data_init(x)
        return self._conv(x)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self._needs_data_init = False  # loaded parameters are trained (or already initialised)


class WeightNormConv2d(DataInitConv2d):
    """``nn.Conv2d`` with weight normalisation (Salimans & Kingma 2016), as the official Flow++
    ImageNet code's ``conv2d`` and ``dense``: the kernel is ``g · V / ‖V‖`` with one norm per
    output channel (over its input channels and taps). ``weight`` holds ``V``, ``weight_g`` the
    gains ``g``; the gains start at ``‖V‖``, so the layer starts as the plain convolution. With
    ``init_scale`` the official data-dependent initialisation: ``g`` starts at 1 and the first
    training batch sets ``g ← s·g``, ``b ← (b − m)·s`` (:class:`DataInitConv2d`)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        init_scale: float | None = None,
        **kwargs,
    ):
        super().__init__(in_channels, out_channels, kernel_size, init_scale, **kwargs)
        g = self._norm(self.weight.detach()).clone()
        self.weight_g = nn.Parameter(torch.ones_like(g) if init_scale is not None else g)

    @staticmethod
    def _norm(v: torch.Tensor) -> torch.Tensor:
        return v.flatten(1).norm(dim=1)

    def _rescale_(self, s: torch.Tensor) -> None:
        self.weight_g.mul_(s)

    def _conv(self, x: torch.Tensor) -> torch.Tensor:
        scale = self.weight_g / self._norm(self.weight).clamp_min(1e-12)
        return self._conv_forward(x, self.weight * scale.view(-1, 1, 1, 1), self.bias)


def _scale(data_init: bool, scale: float = OUTPUT_INIT_SCALE) -> float | None:
    """The ``init_scale`` of a convolution: ``scale`` with the official data-dependent
    initialisation, ``None`` (PyTorch's initialisation) without."""
    return scale if data_init else None


def conv2d(
    in_channels: int,
    out_channels: int,
    kernel_size: int,
    weight_norm: bool = False,
    init_scale: float | None = None,
) -> nn.Conv2d:
    """A same-padded convolution, weight-normalised if ``weight_norm``; ``init_scale``: with the
    official data-dependent initialisation to that output scale (:class:`DataInitConv2d`)."""
    pad = kernel_size // 2
    if weight_norm:
        return WeightNormConv2d(in_channels, out_channels, kernel_size, init_scale, padding=pad)
    if init_scale is not None:
        return DataInitConv2d(in_channels, out_channels, kernel_size, init_scale, padding=pad)
    return Conv2d(in_channels, out_channels, kernel_size, padding=pad)


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
    ``weight_norm`` weight-normalises the convolutions (official ImageNet models);
    ``data_init`` gives them the official data-dependent initialisation (output scale 1,
    ``conv₂`` 0.1: :class:`DataInitConv2d`).
    """

    def __init__(
        self,
        channels: int,
        dropout: float = 0.0,
        context_channels: int | None = None,
        second_kernel_size: int = 1,
        weight_norm: bool = False,
        data_init: bool = False,
    ):
        super().__init__()
        wn, one, small = weight_norm, _scale(data_init, 1.0), _scale(data_init)
        self.conv1 = conv2d(2 * channels, channels, 3, wn, one)
        self.context_proj = (
            conv2d(2 * context_channels, channels, 1, wn, one) if context_channels else None
        )
        self.dropout = Dropout(dropout)
        self.conv2 = conv2d(2 * channels, 2 * channels, second_kernel_size, wn, small)

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
    ``weight_norm`` weight-normalises the projections (official ImageNet models);
    ``data_init``: their official data-dependent initialisation (scale 1, the gate's 0.1)."""

    def __init__(
        self,
        channels: int,
        num_heads: int = 4,
        dropout: float = 0.0,
        weight_norm: bool = False,
        data_init: bool = False,
    ):
        super().__init__()
        if channels % num_heads:
            raise ValueError(
                f"GatedSelfAttention: channels ({channels}) must be divisible by "
                f"num_heads ({num_heads})"
            )
        self.channels, self.num_heads = channels, num_heads
        self.qkv = conv2d(channels, 3 * channels, 1, weight_norm, _scale(data_init, 1.0))
        self.dropout = Dropout(dropout)
        self.proj = conv2d(channels, 2 * channels, 1, weight_norm, _scale(data_init))

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

    def __init__(
        self,
        channels: int,
        dropout: float = 0.0,
        weight_norm: bool = False,
        data_init: bool = False,
    ):
        super().__init__()
        self.proj1 = conv2d(channels, 3 * channels, 1, weight_norm, _scale(data_init, 1.0))
        self.dropout = Dropout(dropout)
        self.proj2 = conv2d(channels, 2 * channels, 1, weight_norm, _scale(data_init))

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
        data_init: bool = False,
    ):
        super().__init__()
        wn, di = weight_norm, data_init
        self.conv = GatedResidualConv(
            channels, dropout, context_channels, weight_norm=wn, data_init=di
        )
        self.norm1 = ChannelLayerNorm(channels)
        self.attn: nn.Module | None = None
        if use_attention and attention == "pointwise":
            self.attn = GatedPointwiseMaxout(channels, dropout, wn, di)
        elif use_attention:
            self.attn = GatedSelfAttention(channels, num_heads, dropout, wn, di)
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
    (``zero_init_output``) starts the coupling at the identity. ``data_init`` is the official
    code's data-dependent initialisation of every convolution (:class:`DataInitConv2d`: output
    scale 1, 0.1 for those before a gate and for the output convolution, which is then not
    zero-initialised: the official coupling does not start at the identity).
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
        data_init: bool = False,
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
        self.inp = conv2d(in_channels, hidden_channels, 3, weight_norm, _scale(data_init, 1.0))
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
                data_init,
            )
            for _ in range(num_blocks)
        )
        out_in = 2 * hidden_channels if output_concat_elu else hidden_channels
        self.out = conv2d(out_in, out_channels, 3, weight_norm, _scale(data_init))
        if zero_init_output and not data_init:
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
