"""The layers of Flow++'s official models that the generic library has in no other form: the
half split of a pair (columns or channels), TensorFlow's ``space_to_depth`` squeeze, the
element-wise actnorm of both halves, the per-half invertible 1×1 map, and the affine coupling
of a pair (see :mod:`survae.architectures.flowpp` for how the builder lays them out)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from survae.errors import ShapeError, check_ndim, check_shape
from survae.nn.build import NetSpec, build_network
from survae.registry import register
from survae.transforms.base import Bijection

SPLITS = ("columns", "channels")


def _zeros(x: torch.Tensor) -> torch.Tensor:
    return x.new_zeros(x.shape[0])


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
        if mode not in SPLITS:
            raise ValueError(f"HalfSplit: mode must be one of {SPLITS}, got {mode!r}")
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
