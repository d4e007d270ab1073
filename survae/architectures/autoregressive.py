"""Density estimators of the MAF paper (Papamakarios et al. 2017): MAF and its RealNVP baseline
on tabular data (POWER, GAS, HEPMASS, MINIBOONE, BSDS300) and MAF on MNIST in logit space.

* **MAF (K)**: ``K`` masked autoregressive layers (MADE with two hidden layers), batch
  normalisation after every layer, the autoregressive order reversed from one layer to the
  next, and a standard normal base (the official code's ``MaskedAutoregressiveFlow``).
* **RealNVP (K)**: ``K`` affine couplings on vectors with alternating (odd/even feature)
  masks, separate scale (tanh hidden units) and shift (ReLU hidden units) MLPs, scale = exp,
  batch normalisation after every coupling (the official code's ``RealNVP``).
* Images (``num_bins`` given): uniform dequantization ``(x + u) / num_bins``, then
  ``logit(λ + (1 − 2λ) x)`` with ``λ = 1e-6`` (MAF's MNIST preprocessing) and flattening to a
  vector. The dequantization and logit contributions make ``log_prob`` a lower bound on the
  discrete log-likelihood, so bits/dim are those of the 8-bit data.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from survae.distributions import StandardNormal
from survae.errors import check_shape
from survae.flows import Flow
from survae.nn.mlp import MLP
from survae.registry import register
from survae.transforms import Transform
from survae.transforms.base import Bijection
from survae.transforms.bijections.autoregressive import MaskedAffineAutoregressive
from survae.transforms.bijections.batchnorm import BatchNormBijection
from survae.transforms.bijections.coupling import AffineCoupling
from survae.transforms.bijections.elementwise import Logit
from survae.transforms.surjections.dequantization import UniformDequantization


# --------------------------------------------------------------------------------------------
# Building blocks
# --------------------------------------------------------------------------------------------
@register("layer", "flatten")
class Flatten(Bijection):
    """Reshapes ``[B, *shape] -> [B, prod(shape)]`` (e.g. an image ``[B, 1, 28, 28]`` to a
    784-vector for a MAF); the inverse restores ``shape``. Likelihood contribution: 0."""

    def __init__(self, shape: Sequence[int]):
        super().__init__()
        self.shape = tuple(int(s) for s in shape)
        if not self.shape or min(self.shape) < 1:
            raise ValueError(f"Flatten: shape must be non-empty and positive, got {shape}")
        self.features = math.prod(self.shape)

    def forward(
        self, x: torch.Tensor, context: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        check_shape(self, x, (None, *self.shape))
        dtype = x.dtype if x.is_floating_point() else torch.get_default_dtype()
        return x.reshape(x.shape[0], self.features), x.new_zeros(x.shape[0], dtype=dtype)

    def inverse_with_ldj(
        self, z: torch.Tensor, context: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        check_shape(self, z, (None, self.features), "latent")
        return z.reshape(z.shape[0], *self.shape), z.new_zeros(z.shape[0])

    def extra_repr(self) -> str:
        return f"shape={self.shape}"


@register("network", "scale_shift_mlp")
class ScaleShiftMLP(nn.Module):
    """Two separate MLPs on ``[..., in_channels]``: one for the shift and one for the
    (unconstrained) scale of an affine coupling, each with ``out_channels / 2`` outputs and its
    own hidden activation (the MAF paper's RealNVP: tanh for the scale, ReLU for the shift).
    Output ``[shift, scale]`` concatenated along the last dimension, the layout
    :class:`~survae.transforms.bijections.coupling.AffineCoupling` expects for vectors."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        hidden: Sequence[int] = (100, 100),
        scale_activation: str = "tanh",
        shift_activation: str = "relu",
        zero_init_output: bool = True,
    ):
        super().__init__()
        if out_channels % 2:
            raise ValueError(
                f"ScaleShiftMLP: out_channels must be even (shift and scale halves), "
                f"got {out_channels}"
            )
        half = out_channels // 2
        self.shift_net = MLP(in_channels, half, hidden, shift_activation, 0.0, zero_init_output)
        self.scale_net = MLP(in_channels, half, hidden, scale_activation, 0.0, zero_init_output)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.shift_net(x), self.scale_net(x)], dim=-1)


def image_preprocessing(
    data_shape: Sequence[int], num_bins: int, logit_eps: float
) -> list[Transform]:
    """Uniform dequantization, logit and flattening: an image ``[B, *data_shape]`` of integers
    in ``{0, …, num_bins − 1}`` becomes a vector in logit space (MAF's MNIST pipeline)."""
    return [UniformDequantization(num_bins), Logit(eps=logit_eps), Flatten(data_shape)]


def _features(data_shape: Sequence[int], num_bins: int | None, name: str) -> int:
    if num_bins is None and len(data_shape) != 1:
        raise ValueError(
            f"{name}: continuous data must be vectors (features,), got data_shape "
            f"{tuple(data_shape)}; discrete images need num_bins"
        )
    return math.prod(int(s) for s in data_shape)


# --------------------------------------------------------------------------------------------
# Architectures
# --------------------------------------------------------------------------------------------
@register("architecture", "maf")
def maf(
    data_shape: Sequence[int],
    num_bins: int | None = None,
    num_layers: int = 5,
    hidden: Sequence[int] = (100, 100),
    activation: str = "relu",
    batch_norm: bool = True,
    batch_norm_momentum: float = 0.1,
    log_scale_bound: float | None = 5.0,
    logit_eps: float = 1e-6,
) -> Flow:
    """MAF (``num_layers`` MADEs; Papamakarios et al. 2017) with a standard normal base.

    Vectors ``(D,)`` are modelled directly (exact likelihood); images (``num_bins`` given) are
    dequantized, mapped to logit space and flattened first (a bound on the discrete
    likelihood). ``log_scale_bound`` softly clamps each layer's log-scale (the library's
    stabiliser; ``None`` gives the paper's unbounded MADE).
    """
    D = _features(data_shape, num_bins, "maf")
    layers: list[Transform] = []
    if num_bins is not None:
        layers += image_preprocessing(data_shape, num_bins, logit_eps)
    for i in range(num_layers):
        layers.append(
            MaskedAffineAutoregressive(
                D,
                hidden=tuple(hidden),
                reverse_order=i % 2 == 1,  # each MADE uses the reverse of the previous order
                activation_name=activation,
                log_scale_bound=log_scale_bound,
            )
        )
        if batch_norm:
            layers.append(BatchNormBijection(D, momentum=batch_norm_momentum))
    return Flow(StandardNormal((D,)), layers)


@register("architecture", "realnvp_tabular")
def realnvp_tabular(
    data_shape: Sequence[int],
    num_bins: int | None = None,
    num_couplings: int = 10,
    hidden: Sequence[int] = (100, 100),
    scale_activation: str = "tanh",
    shift_activation: str = "relu",
    scale_fn: str = "exp",
    batch_norm: bool = True,
    batch_norm_momentum: float = 0.1,
    logit_eps: float = 1e-6,
) -> Flow:
    """RealNVP on vectors as the MAF paper's baseline "RealNVP (K)": ``num_couplings`` affine
    couplings with alternating masks (odd features condition first, then even, ...), separate
    scale/shift MLPs, batch normalisation after each coupling, standard normal base. Exact
    on vectors; images (``num_bins``) are preprocessed as for :func:`maf`."""
    D = _features(data_shape, num_bins, "realnvp_tabular")
    if D < 2:
        raise ValueError(f"realnvp_tabular: couplings need at least 2 features, got {D}")
    layers: list[Transform] = []
    if num_bins is not None:
        layers += image_preprocessing(data_shape, num_bins, logit_eps)
    net = {
        "name": "scale_shift_mlp",
        "hidden": list(hidden),
        "scale_activation": scale_activation,
        "shift_activation": shift_activation,
    }
    for i in range(num_couplings):
        # MAF's mask starts as (index % 2): odd features pass unchanged in the first coupling.
        layers.append(
            AffineCoupling(
                D, net=net, mask="checkerboard", scale_fn=scale_fn, reverse_mask=i % 2 == 0
            )
        )
        if batch_norm:
            layers.append(BatchNormBijection(D, momentum=batch_norm_momentum))
    return Flow(StandardNormal((D,)), layers)


__all__ = ["Flatten", "ScaleShiftMLP", "image_preprocessing", "maf", "realnvp_tabular"]
