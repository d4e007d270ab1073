"""Flow++ (Ho et al., ICML 2019): variational dequantization, logistic-mixture CDF couplings
with self-attention networks, laid out as the paper's official code builds its models.

The official models work on *pairs* of half-tensors: a "checkerboard" split takes alternate
columns (``[B, C, H, W] → 2 × [B, C, H, W/2]``), a channel split takes the two channel halves.
Each step on a pair is ``Norm`` (a gain and bias for every element of both halves) →
``Pointwise`` (an invertible ``C × C`` 1×1 map per half) → coupling (one half conditions, the
other is transformed) → swap of the halves. Here a pair is stored as one tensor with the two
halves stacked on the channel axis (:class:`HalfSplit`), the swap becomes alternating which
half conditions (``flip``), and a stage ends by merging the halves back (swapped when the
stage has an odd number of couplings, exactly as the official ``TupleFlip`` leaves them).

Stages are given as a list: ``["columns", n]`` (column split, ``n`` steps), ``["channels", n]``
(channel split, ``n`` steps) or ``"squeeze"`` (TensorFlow's ``space_to_depth`` ordering, as the
official code). The official CIFAR-10 model (``flows/run_cifar.py``, 31,443,440 parameters) is
``[["columns", 4], "squeeze", ["channels", 2], ["columns", 3]]`` with 96 filters, 10 blocks,
32 components, and a 4-step variational dequantizer (2-block networks, 32 context channels).
The official ImageNet 32 model (``flows_imagenet/launchers/imagenet32_official.py``,
168,955,724 parameters) adds weight normalisation to every convolution (``weight_norm``), a
concat-ELU before each coupling network's output convolution (``output_concat_elu``) and an
attention-based context processor (``dequant_context_attention``), and drops ``Pointwise``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from survae.distributions import StandardNormal
from survae.errors import ShapeError, check_ndim, check_shape
from survae.flows import Flow
from survae.nn.build import NetSpec, build_network
from survae.nn.flowpp import ChannelLayerNorm, GatedResidualConv, GatedSelfAttention, conv2d
from survae.registry import register
from survae.transforms.base import Bijection, InverseBijection, Transform
from survae.transforms.bijections.elementwise import Logit, Sigmoid
from survae.transforms.bijections.logistic_mixture import LogisticMixtureCoupling
from survae.transforms.surjections.dequantization import (
    UniformDequantization,
    VariationalDequantization,
)

#: the official CIFAR-10 main flow (``flows/run_cifar.py``)
CIFAR10_STAGES: list[Any] = [["columns", 4], "squeeze", ["channels", 2], ["columns", 3]]
#: the official ImageNet 32 main flow (``flows_imagenet/launchers/imagenet32_official.py``)
IMAGENET32_STAGES: list[Any] = [
    ["columns", 4],
    ["columns", 3],
    "squeeze",
    ["channels", 3],
    ["columns", 3],
]
_SPLITS = ("columns", "channels")
COUPLINGS = ("mixture", "affine")
_DEQUANTIZATIONS = ("variational", "uniform")


def _zeros(x: torch.Tensor) -> torch.Tensor:
    return x.new_zeros(x.shape[0])


# ------------------------------------------------------------------------------------------
# Layers of the official models that the generic library does not have in this form
# ------------------------------------------------------------------------------------------


@register("layer", "flowpp_split")
class HalfSplit(Bijection):
    """Rearranges ``[B, C, H, W]`` into two halves stacked on the channel axis (a permutation;
    likelihood contribution 0).

    ``mode="columns"`` (Flow++'s "checkerboard split"): even columns become channels
    ``0..C-1`` and odd columns channels ``C..2C-1`` of a ``[B, 2C, H, W/2]`` tensor;
    ``mode="channels"``: the channel halves, unchanged in place. ``swap=True`` puts the second
    half first (odd columns / last channels), which is how a stage with an odd number of
    couplings leaves its halves before they are merged.
    """

    def __init__(self, mode: str = "columns", swap: bool = False):
        super().__init__()
        if mode not in _SPLITS:
            raise ValueError(f"HalfSplit: mode must be one of {_SPLITS}, got {mode!r}")
        self.mode = mode
        self.swap = bool(swap)

    def _check(self, x: torch.Tensor, what: str, inverse: bool) -> None:
        check_ndim(self, x, 4, what)
        if self.mode == "columns" and not inverse and x.shape[3] % 2:
            raise ShapeError(
                f"HalfSplit: the column split needs an even width, got {what} of shape "
                f"{tuple(x.shape)}"
            )
        if (self.mode == "channels" or inverse) and x.shape[1] % 2:
            raise ShapeError(
                f"HalfSplit: needs an even number of channels to form two halves, got {what} "
                f"of shape {tuple(x.shape)}"
            )

    def forward(
        self, x: torch.Tensor, context: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        self._check(x, "input", inverse=False)
        B, C, H, W = x.shape
        if self.mode == "columns":
            z = x.reshape(B, C, H, W // 2, 2).permute(0, 4, 1, 2, 3)
            if self.swap:
                z = z.flip(1)
            return z.reshape(B, 2 * C, H, W // 2), _zeros(x)
        return (x.roll(C // 2, dims=1) if self.swap else x), _zeros(x)

    def inverse_with_ldj(
        self, z: torch.Tensor, context: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        self._check(z, "latent", inverse=True)
        B, C2, H, W2 = z.shape
        if self.mode == "columns":
            x = z.reshape(B, 2, C2 // 2, H, W2)
            if self.swap:
                x = x.flip(1)
            return x.permute(0, 2, 3, 4, 1).reshape(B, C2 // 2, H, 2 * W2), _zeros(z)
        return (z.roll(C2 // 2, dims=1) if self.swap else z), _zeros(z)

    def extra_repr(self) -> str:
        return f"mode={self.mode!r}, swap={self.swap}"


@register("layer", "flowpp_squeeze")
class SpaceToDepth(Bijection):
    """``[B, C, H, W] → [B, 4C, H/2, W/2]`` in TensorFlow's ``space_to_depth`` order (output
    channel ``(2i + j)·C + c`` holds input channel ``c`` at ``(2h + i, 2w + j)``), as the
    official Flow++/VFlow code; a permutation, likelihood contribution 0. (The library's
    ``squeeze`` keeps the four sub-pixels of a channel adjacent instead, which changes what a
    later channel split separates.)"""

    def forward(
        self, x: torch.Tensor, context: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        check_ndim(self, x, 4, "input")
        B, C, H, W = x.shape
        if H % 2 or W % 2:
            raise ShapeError(
                f"SpaceToDepth: H and W must be even, got input of shape {tuple(x.shape)}"
            )
        z = x.reshape(B, C, H // 2, 2, W // 2, 2).permute(0, 3, 5, 1, 2, 4)
        return z.reshape(B, 4 * C, H // 2, W // 2), _zeros(x)

    def inverse_with_ldj(
        self, z: torch.Tensor, context: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        check_ndim(self, z, 4, "latent")
        B, C4, H, W = z.shape
        if C4 % 4:
            raise ShapeError(
                "SpaceToDepth: the channel count must be divisible by 4, got latent of shape "
                f"{tuple(z.shape)}"
            )
        x = z.reshape(B, 2, 2, C4 // 4, H, W).permute(0, 3, 4, 1, 5, 2)
        return x.reshape(B, C4 // 4, 2 * H, 2 * W), _zeros(z)


@register("layer", "flowpp_norm")
class ElementwiseActNorm(Bijection):
    """Affine map with a learned scale and bias for *every element* of a ``shape``-sized
    example, ``z = x · exp(log_scale) + bias`` (Flow++'s ``Norm``, per element rather than
    per channel like Glow's actnorm).

    Likelihood contribution: ``Σ log_scale`` over all elements.

    Data-dependent initialisation: the first training-mode forward pass with a batch of at least
    two examples sets the parameters so that batch has zero mean and unit variance per element
    (statistics summed over all processes under ``torch.distributed``). A persistent buffer
    records it, so loaded checkpoints are not re-initialised; the forward pass reads only a
    Python flag.
    """

    def __init__(self, shape: Sequence[int], eps: float = 1e-6):
        super().__init__()
        self.shape = tuple(int(s) for s in shape)
        self.eps = eps
        self.log_scale = nn.Parameter(torch.zeros(self.shape))
        self.bias = nn.Parameter(torch.zeros(self.shape))
        self.register_buffer("initialized", torch.tensor(False))
        self._initialized = False

    @torch.no_grad()
    def data_init(self, x: torch.Tensor) -> None:
        """Set the parameters from the per-element statistics of ``x`` (all ranks together)."""
        acc = torch.float32 if x.device.type == "mps" else torch.float64
        xs = x.detach().to(acc)
        count = xs.new_full((1,), float(x.shape[0]))
        stats = torch.cat([xs.sum(0).reshape(-1), (xs * xs).sum(0).reshape(-1), count])
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(stats, op=dist.ReduceOp.SUM)
        n = self.log_scale.numel()
        mean = stats[:n] / stats[-1]
        var = (stats[n : 2 * n] / stats[-1] - mean * mean).clamp(min=0.0)
        log_scale = -0.5 * torch.log(var + self.eps)
        self.log_scale.copy_(log_scale.view(self.shape).to(self.log_scale.dtype))
        self.bias.copy_((-mean * log_scale.exp()).view(self.shape).to(self.bias.dtype))
        self.initialized.fill_(True)
        self._initialized = True

    def _ldj(self, x: torch.Tensor) -> torch.Tensor:
        return self.log_scale.sum().expand(x.shape[0]).contiguous()

    def forward(
        self, x: torch.Tensor, context: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        check_shape(self, x, (None, *self.shape))
        if self.training and not self._initialized and x.shape[0] > 1:
            self.data_init(x)
        return x * self.log_scale.exp() + self.bias, self._ldj(x)

    def inverse_with_ldj(
        self, z: torch.Tensor, context: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        check_shape(self, z, (None, *self.shape), "latent")
        return (z - self.bias) * torch.exp(-self.log_scale), -self._ldj(z)

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
        super()._load_from_state_dict(state_dict, prefix, *args)
        self._initialized = bool(self.initialized)  # once, at load time

    def extra_repr(self) -> str:
        return f"shape={self.shape}"


@register("layer", "flowpp_pointwise")
class GroupedConv1x1(Bijection):
    """Invertible 1×1 convolution with a separate ``c × c`` matrix for each of ``num_groups``
    consecutive channel groups (Flow++'s ``Pointwise`` on a pair of halves: ``num_groups=2``).
    Initialised at the identity plus ``N(0, init_noise²)`` noise, as the official code.

    Likelihood contribution: ``H·W · Σ_g log|det W_g|``.
    """

    def __init__(self, num_channels: int, num_groups: int = 2, init_noise: float = 1e-3):
        super().__init__()
        if num_groups < 1 or num_channels % num_groups:
            raise ValueError(
                f"GroupedConv1x1: num_channels ({num_channels}) must be a positive multiple of "
                f"num_groups ({num_groups})"
            )
        self.num_channels, self.num_groups = num_channels, num_groups
        c = num_channels // num_groups
        eye = torch.eye(c).expand(num_groups, c, c)
        self.weight = nn.Parameter(eye + init_noise * torch.randn(num_groups, c, c))

    def _conv(self, x: torch.Tensor, W: torch.Tensor) -> torch.Tensor:
        kernel = W.reshape(self.num_channels, -1, *([1] * (x.dim() - 2)))
        conv = F.conv2d if x.dim() == 4 else F.conv1d
        return conv(x, kernel, groups=self.num_groups)

    def _ldj(self, x: torch.Tensor) -> torch.Tensor:
        logdet = torch.linalg.slogdet(self.weight)[1].sum() * math.prod(x.shape[2:])
        return logdet.expand(x.shape[0]).contiguous()

    def _check(self, x: torch.Tensor, what: str) -> None:
        check_ndim(self, x, (3, 4), what)
        check_shape(self, x, (None, self.num_channels, *x.shape[2:]), what)

    def forward(
        self, x: torch.Tensor, context: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        self._check(x, "input")
        return self._conv(x, self.weight), self._ldj(x)

    def inverse_with_ldj(
        self, z: torch.Tensor, context: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        self._check(z, "latent")
        # inv_ex: no error check, so no host synchronisation
        return self._conv(z, torch.linalg.inv_ex(self.weight)[0]), -self._ldj(z)

    def extra_repr(self) -> str:
        return f"num_channels={self.num_channels}, num_groups={self.num_groups}"


@register("layer", "flowpp_affine_coupling")
class FlowPPAffineCoupling(Bijection):
    """Affine coupling of Flow++'s "no mixture CDF" ablation on the channel halves:
    ``y2 = x2 · exp(tanh(s)) + t`` with ``(s, t) = net(x1[, context])``.

    Likelihood contribution: ``Σ tanh(s)`` over the transformed half.

    The first half conditions (the second with ``flip=True``). The network maps ``C/2``
    channels to ``2 · C/2`` laid out ``[s, t]``; with ``context_channels`` it is called as
    ``net(x1, context)`` (``flowpp_net``, whose spec gets ``context_channels`` filled in).
    A zero-initialised last layer starts the layer at the identity.
    """

    def __init__(
        self, num_channels: int, net: NetSpec, flip: bool = False, context_channels: int = 0
    ):
        super().__init__()
        if num_channels < 2 or num_channels % 2:
            raise ValueError(
                "FlowPPAffineCoupling splits the channels in halves and needs an even number "
                f"of channels (at least 2), got {num_channels}"
            )
        self.num_channels, self.flip, self.context_channels = num_channels, flip, context_channels
        if context_channels and isinstance(net, Mapping) and "context_channels" not in net:
            net = {**net, "context_channels": context_channels}
        self.net = build_network(net, num_channels // 2, num_channels)

    def _halves(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        a, b = x.chunk(2, dim=1)
        return (b, a) if self.flip else (a, b)

    def _params(
        self, cond: torch.Tensor, context: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if self.context_channels:
            if context is None:
                raise ValueError(
                    f"FlowPPAffineCoupling is conditional (context_channels="
                    f"{self.context_channels}) and needs a context"
                )
            out = self.net(cond, context)
        else:
            out = self.net(cond)
        C = self.num_channels // 2
        check_shape(self, out, (cond.shape[0], 2 * C, *cond.shape[2:]), "network output")
        out = out.view(cond.shape[0], 2, C, *cond.shape[2:])
        return torch.tanh(out[:, 0]), out[:, 1]

    def _run(self, x: torch.Tensor, context: torch.Tensor | None, inverse: bool):
        check_ndim(self, x, (3, 4), "latent" if inverse else "input")
        check_shape(self, x, (None, self.num_channels, *x.shape[2:]))
        cond, x2 = self._halves(x)
        s, t = self._params(cond, context)
        y2 = (x2 - t) * torch.exp(-s) if inverse else x2 * torch.exp(s) + t
        ldj = s.reshape(x.shape[0], -1).sum(1)
        out = torch.cat((y2, cond) if self.flip else (cond, y2), dim=1)
        return out, (-ldj if inverse else ldj)

    def forward(
        self, x: torch.Tensor, context: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return self._run(x, context, inverse=False)

    def inverse_with_ldj(
        self, z: torch.Tensor, context: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return self._run(z, context, inverse=True)


# ------------------------------------------------------------------------------------------
# Networks and samplers used by the builders
# ------------------------------------------------------------------------------------------


class FlowPPContextNet(nn.Module):
    """Context processor of Flow++'s dequantizer (and VFlow's posterior): column split of the
    input (``[B, C, H, W] → [B, 2C, H, W/2]``) → conv3×3 to ``context_channels`` →
    ``num_blocks`` gated residual convs (3×3 second conv); with ``attention`` each block adds
    layer norm, gated self-attention (with a positional embedding) and layer norm, and with
    ``weight_norm`` every convolution is weight-normalised, as the official ImageNet models'
    ``deep_processor``. Output ``[B, context_channels, H, W/2]``, the spatial size of the
    couplings it conditions."""

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
    ):
        super().__init__()
        self.in_channels = in_channels
        self.split = HalfSplit("columns")
        self.inp = conv2d(2 * in_channels, context_channels, 3, weight_norm)
        self.convs = nn.ModuleList(
            GatedResidualConv(
                context_channels, dropout, second_kernel_size=3, weight_norm=weight_norm
            )
            for _ in range(num_blocks)
        )
        if attention:
            if image_size is None:
                raise ValueError("FlowPPContextNet: attention needs image_size (H, W/2)")
            self.pos_emb = nn.Parameter(torch.randn(1, context_channels, *image_size) * 0.01)
            self.attns = nn.ModuleList(
                GatedSelfAttention(context_channels, num_heads, dropout, weight_norm)
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


# ------------------------------------------------------------------------------------------
# Builders
# ------------------------------------------------------------------------------------------


def _parse_stage(stage: Any) -> tuple[str, int]:
    if isinstance(stage, str):
        if stage != "squeeze":
            raise ValueError(f"Flow++ stage {stage!r}: a string stage must be 'squeeze'")
        return "squeeze", 0
    if isinstance(stage, Mapping):
        stage = (stage.get("split"), stage.get("couplings"))
    if not isinstance(stage, Sequence) or len(stage) != 2 or stage[0] not in _SPLITS:
        raise ValueError(
            f"Flow++ stage {stage!r}: expected 'squeeze' or [split, number_of_couplings] with "
            f"split one of {_SPLITS}"
        )
    if int(stage[1]) < 1:
        raise ValueError(f"Flow++ stage {list(stage)!r}: needs at least one coupling")
    return str(stage[0]), int(stage[1])


def flowpp_stages(
    shape: Sequence[int],
    stages: Sequence[Any],
    *,
    coupling: str = "mixture",
    num_components: int = 32,
    pointwise: bool = True,
    context_channels: int = 0,
    num_bisection_iters: int = 100,
    rescale: bool = True,
    **net_kwargs: Any,
) -> tuple[list[Transform], tuple[int, int, int]]:
    """The layers of a Flow++-style flow on examples of ``shape = (C, H, W)`` (data → latent
    order) and the output shape. ``net_kwargs`` go to every ``flowpp_net`` (its ``image_size``
    is filled in per stage); ``context_channels`` makes every coupling conditional; ``rescale``
    gives the mixture couplings survae's learnable per-channel scale of ``tanh`` (the official
    code has none)."""
    if coupling not in COUPLINGS:
        raise ValueError(f"Flow++: coupling must be one of {COUPLINGS}, got {coupling!r}")
    C, H, W = (int(s) for s in shape)
    layers: list[Transform] = []
    for stage in stages:
        split, n = _parse_stage(stage)
        if split == "squeeze":
            if H % 2 or W % 2:
                raise ValueError(f"Flow++: cannot squeeze a {C}×{H}×{W} tensor (odd H or W)")
            layers.append(SpaceToDepth())
            C, H, W = 4 * C, H // 2, W // 2
            continue
        if split == "columns" and W % 2:
            raise ValueError(f"Flow++: a column split needs an even width, got {C}×{H}×{W}")
        if split == "channels" and C % 2:
            raise ValueError(
                f"Flow++: a channel split needs an even channel count, got {C}×{H}×{W}; "
                "squeeze first or use a column split"
            )
        pair = (2 * C, H, W // 2) if split == "columns" else (C, H, W)
        layers.append(HalfSplit(split))
        net = {"name": "flowpp_net", **net_kwargs, "image_size": pair[1:]}
        for i in range(n):
            layers.append(ElementwiseActNorm(pair))
            if pointwise:
                layers.append(GroupedConv1x1(pair[0], num_groups=2))
            if coupling == "mixture":
                layers.append(
                    LogisticMixtureCoupling(
                        pair[0],
                        net,
                        num_components=num_components,
                        mask="channel",
                        flip=i % 2 == 1,
                        context_channels=context_channels,
                        context_mode="net",
                        num_bisection_iters=num_bisection_iters,
                        rescale=rescale,
                    )
                )
            else:
                layers.append(
                    FlowPPAffineCoupling(
                        pair[0], net, flip=i % 2 == 1, context_channels=context_channels
                    )
                )
        layers.append(InverseBijection(HalfSplit(split, swap=n % 2 == 1)))
    return layers, (C, H, W)


def conditional_flowpp(
    shape: Sequence[int],
    stages: Sequence[Any],
    context_net: nn.Module | None,
    squash: bool = False,
    **stage_kwargs: Any,
) -> ContextFlowSampler:
    """A conditional flow ``q(y | c)`` run in the direction the official code runs it:
    ``ε ~ N(0, I)`` → the stage layers' forward maps (conditioned on ``context_net(c)``) →
    optional sigmoid. Sampling with its log-density needs no inverse (no bisection)."""
    layers, out_shape = flowpp_stages(shape, stages, **stage_kwargs)
    if tuple(out_shape) != tuple(int(s) for s in shape):
        raise ValueError(f"conditional_flowpp: stages must keep the shape {tuple(shape)}")
    if squash:
        layers.append(Sigmoid())
    flow = Flow(StandardNormal(tuple(shape)), [InverseBijection(t) for t in reversed(layers)])
    return ContextFlowSampler(flow, context_net)


def flowpp_dequantization(
    shape: Sequence[int],
    num_bins: int,
    stages: Sequence[Any] = (("columns", 4),),
    context_channels: int = 32,
    context_blocks: int = 3,
    context_attention: bool = False,
    dropout: float = 0.2,
    **stage_kwargs: Any,
) -> VariationalDequantization:
    """Flow++'s variational dequantizer: ``u = sigmoid(flow(ε; context_net(x)))``, a flow of
    column-split couplings conditioned on a context processor of ``x``."""
    C, H, W = (int(s) for s in shape)
    for stage in stages:
        if _parse_stage(stage)[0] != "columns":
            raise ValueError(
                "Flow++ dequantization: only column-split stages are supported (the context "
                f"has the column-split spatial size), got {stage!r}"
            )
    context_net = FlowPPContextNet(
        C,
        context_channels,
        context_blocks,
        dropout,
        attention=context_attention,
        num_heads=stage_kwargs.get("num_heads", 4),
        image_size=(H, W // 2),
        weight_norm=stage_kwargs.get("weight_norm", False),
    )
    sampler = conditional_flowpp(
        shape, stages, None, context_channels=context_channels, dropout=dropout, **stage_kwargs
    )
    return VariationalDequantization(sampler.flow, num_bins, context_net=context_net, squash=True)


def check_discrete_image(data_shape: Sequence[int], num_bins: int | None, name: str) -> None:
    if len(data_shape) != 3:
        raise ValueError(f"{name}: needs images (C, H, W), got data_shape {tuple(data_shape)}")
    if num_bins is None:
        raise ValueError(f"{name}: models discrete images and needs num_bins (e.g. 256)")


def check_choice(value: str, valid: tuple[str, ...], what: str) -> str:
    if value not in valid:
        raise ValueError(f"Flow++: {what} must be one of {valid}, got {value!r}")
    return value


def flowpp_dequantizer(
    data_shape: Sequence[int],
    num_bins: int,
    dequantization: str,
    net_kwargs: Mapping[str, Any],
    coupling: str,
    num_components: int,
    pointwise: bool,
    num_bisection_iters: int,
    stages: Sequence[Any],
    hidden_channels: int,
    num_blocks: int,
    context_channels: int,
    context_blocks: int,
    context_attention: bool,
    rescale: bool = True,
) -> Transform:
    """Uniform or Flow++ variational dequantization with the given hyperparameters."""
    if check_choice(dequantization, _DEQUANTIZATIONS, "dequantization") == "uniform":
        return UniformDequantization(num_bins)
    kwargs = {**net_kwargs, "hidden_channels": hidden_channels, "num_blocks": num_blocks}
    return flowpp_dequantization(
        data_shape,
        num_bins,
        stages=stages,
        context_channels=context_channels,
        context_blocks=context_blocks,
        context_attention=context_attention,
        coupling=coupling,
        num_components=num_components,
        pointwise=pointwise,
        num_bisection_iters=num_bisection_iters,
        rescale=rescale,
        **kwargs,
    )


def flowpp_front(
    data_shape: Sequence[int],
    num_bins: int,
    *,
    dequantization: str,
    coupling: str,
    use_attention: bool,
    hidden_channels: int,
    num_blocks: int,
    num_components: int,
    num_heads: int,
    dropout: float,
    pointwise: bool,
    dequant_stages: Sequence[Any],
    dequant_hidden_channels: int | None,
    dequant_num_blocks: int,
    dequant_context_channels: int,
    dequant_context_blocks: int,
    dequant_context_attention: bool,
    num_bisection_iters: int,
    weight_norm: bool = False,
    output_concat_elu: bool = False,
    mixture_rescale: bool = True,
    attention: str = "self",
) -> tuple[dict[str, Any], dict[str, Any], Transform]:
    """The part shared by the Flow++-style builders (``flowpp``, ``vflow``, ``anf``), from
    their hyperparameters of the same names: the coupling-network hyperparameters, the stage
    hyperparameters (coupling kind, mixture size, ...) and the dequantizer, whose parameters are
    created before any other of the model's."""
    net_kwargs: dict[str, Any] = dict(
        hidden_channels=hidden_channels,
        num_blocks=num_blocks,
        num_heads=num_heads,
        dropout=dropout,
        use_attention=use_attention,
        weight_norm=weight_norm,
        output_concat_elu=output_concat_elu,
        attention=attention,
    )
    common: dict[str, Any] = dict(
        coupling=check_choice(coupling, COUPLINGS, "coupling"),
        num_components=num_components,
        pointwise=pointwise,
        num_bisection_iters=num_bisection_iters,
        rescale=mixture_rescale,
    )
    dequantizer = flowpp_dequantizer(
        data_shape,
        num_bins,
        dequantization,
        net_kwargs,
        stages=dequant_stages,
        hidden_channels=dequant_hidden_channels or hidden_channels,
        num_blocks=dequant_num_blocks,
        context_channels=dequant_context_channels,
        context_blocks=dequant_context_blocks,
        context_attention=dequant_context_attention,
        **common,
    )
    return net_kwargs, common, dequantizer


@register("architecture", "flowpp")
def flowpp(
    data_shape: Sequence[int] = (3, 32, 32),
    num_bins: int | None = 256,
    dequantization: str = "variational",
    coupling: str = "mixture",
    use_attention: bool = True,
    hidden_channels: int = 96,
    num_blocks: int = 10,
    num_components: int = 32,
    num_heads: int = 4,
    dropout: float = 0.2,
    stages: Sequence[Any] = tuple(CIFAR10_STAGES),
    pointwise: bool = True,
    dequant_stages: Sequence[Any] = (("columns", 4),),
    dequant_hidden_channels: int | None = None,
    dequant_num_blocks: int = 2,
    dequant_context_channels: int = 32,
    dequant_context_blocks: int = 3,
    dequant_context_attention: bool = False,
    logit_eps: float = 0.05,
    num_bisection_iters: int = 100,
    weight_norm: bool = False,
    output_concat_elu: bool = False,
    mixture_rescale: bool = False,
    attention: str = "self",
) -> Flow:
    """Flow++: dequantization → ``logit(0.05 + 0.9·x)`` → Flow++ stages → N(0, I).

    Likelihood: a lower bound on the discrete log-likelihood (dequantization), so ``exact`` is
    False. Ablations of the paper: ``dequantization="uniform"``, ``coupling="affine"`` (no
    mixture CDF), ``use_attention=False`` (attention removed) or ``attention="pointwise"`` (the
    official ablation's parameter-matched pointwise stand-in, ``flows/ablations/abl_noattn.py``).
    Defaults: the official CIFAR-10 model
    (``flows/run_cifar.py``). ``weight_norm`` and ``output_concat_elu`` switch on the official
    ImageNet models' weight-normalised convolutions and concat-ELU before each coupling
    network's output conv; ``mixture_rescale`` adds survae's learnable per-channel scale of the
    mixture couplings' ``tanh`` (one parameter per transformed channel; not in the official code).
    """
    check_discrete_image(data_shape, num_bins, "flowpp")
    net_kwargs, common, dequantizer = flowpp_front(
        data_shape,
        num_bins,
        dequantization=dequantization,
        coupling=coupling,
        use_attention=use_attention,
        hidden_channels=hidden_channels,
        num_blocks=num_blocks,
        num_components=num_components,
        num_heads=num_heads,
        dropout=dropout,
        pointwise=pointwise,
        dequant_stages=dequant_stages,
        dequant_hidden_channels=dequant_hidden_channels,
        dequant_num_blocks=dequant_num_blocks,
        dequant_context_channels=dequant_context_channels,
        dequant_context_blocks=dequant_context_blocks,
        dequant_context_attention=dequant_context_attention,
        num_bisection_iters=num_bisection_iters,
        weight_norm=weight_norm,
        output_concat_elu=output_concat_elu,
        mixture_rescale=mixture_rescale,
        attention=attention,
    )
    main, latent_shape = flowpp_stages(data_shape, stages, **common, **net_kwargs)
    layers: list[Transform] = [dequantizer, Logit(eps=logit_eps), *main]
    return Flow(StandardNormal(latent_shape), layers)
