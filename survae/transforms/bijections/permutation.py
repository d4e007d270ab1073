"""Fixed permutations of the channel (feature) dimension, used between couplings so that
every dimension gets transformed (RealNVP, Glow). Likelihood contribution: 0."""

from __future__ import annotations

import torch

from survae.errors import check_ndim, check_shape
from survae.registry import register
from survae.transforms.base import Bijection


def _check(layer: object, x: torch.Tensor, num_channels: int | None, what: str) -> None:
    check_ndim(layer, x, (2, 3, 4), what)
    if num_channels is not None:
        check_shape(layer, x, (None, num_channels, *x.shape[2:]), what)


@register("layer", "reverse")
class Reverse(Bijection):
    """Reverses the order of dimension 1 (channels of images/sequences, features of vectors).

    Likelihood contribution: 0. ``num_channels`` is optional and, when given, checked.
    """

    def __init__(self, num_channels: int | None = None):
        super().__init__()
        self.num_channels = num_channels

    def forward(
        self, x: torch.Tensor, context: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        _check(self, x, self.num_channels, "input")
        return torch.flip(x, dims=(1,)), x.new_zeros(x.shape[0])

    def inverse_with_ldj(
        self, z: torch.Tensor, context: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        _check(self, z, self.num_channels, "latent")
        return torch.flip(z, dims=(1,)), z.new_zeros(z.shape[0])

    def extra_repr(self) -> str:
        return "" if self.num_channels is None else f"num_channels={self.num_channels}"


@register("layer", "random_permutation")
class RandomPermutation(Bijection):
    """A fixed random permutation of dimension 1: ``z[:, i] = x[:, perm[i]]``.

    Drawn at construction from a generator seeded with ``seed`` (so a model rebuilt from its
    config gets the same permutation) and stored as buffers ``perm``/``inverse_perm`` (so
    checkpoints carry it too). Likelihood contribution: 0.
    """

    def __init__(self, num_channels: int, seed: int = 0):
        super().__init__()
        if num_channels < 1:
            raise ValueError(f"RandomPermutation: num_channels must be >= 1, got {num_channels}")
        self.num_channels = num_channels
        self.seed = seed
        generator = torch.Generator().manual_seed(seed)
        perm = torch.randperm(num_channels, generator=generator)
        self.register_buffer("perm", perm)
        self.register_buffer("inverse_perm", torch.argsort(perm))

    def forward(
        self, x: torch.Tensor, context: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        _check(self, x, self.num_channels, "input")
        return x.index_select(1, self.perm), x.new_zeros(x.shape[0])

    def inverse_with_ldj(
        self, z: torch.Tensor, context: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        _check(self, z, self.num_channels, "latent")
        return z.index_select(1, self.inverse_perm), z.new_zeros(z.shape[0])

    def extra_repr(self) -> str:
        return f"num_channels={self.num_channels}, seed={self.seed}"
