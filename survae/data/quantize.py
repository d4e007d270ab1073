"""Batched transforms that change the number of levels of ``uint8`` images: fewer bits
(Glow's 5-bit CelebA, ``data.num_bits``) and Bernoulli binarization of grey levels (the
dynamically binarized MNIST of Salakhutdinov & Murray 2008).

They run in :class:`~survae.data.base.ArrayDataset` on whole batches; random draws follow
:class:`~survae.data.augment.RandomFlipTranslate`: a generator seeded by ``(seed, key)`` with
the batch's example indices as ``key``, so a resumed run draws what an unbroken one draws.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch


def bits_of(num_bins: int) -> int | None:
    """``log2(num_bins)`` when it is a whole number, else ``None``."""
    bits = int(num_bins).bit_length() - 1
    return bits if num_bins == 1 << bits else None


class ReduceBits:
    """``x >> (from_bits − to_bits)``: keeps the ``to_bits`` most significant bits, so
    ``2^from_bits`` levels become ``2^to_bits`` (floor of ``x / 2^(from_bits − to_bits)``)."""

    keyed = False

    def __init__(self, from_bits: int, to_bits: int):
        if not 1 <= to_bits <= from_bits <= 8:
            raise ValueError(
                f"ReduceBits: need 1 <= to_bits <= from_bits <= 8, got {to_bits}, {from_bits}"
            )
        self.shift = int(from_bits) - int(to_bits)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return torch.bitwise_right_shift(x, self.shift)

    def __repr__(self) -> str:
        return f"ReduceBits(shift={self.shift})"


def keyed_generator(seed: int, key: Sequence[int] | None) -> torch.Generator | None:
    """A generator seeded by ``(seed, *key)``; ``None`` (torch's global one) without a key."""
    if key is None:
        return None
    state = np.random.SeedSequence([int(seed), *map(int, key)]).generate_state(2)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


class DynamicBinarize:
    """Pixel ``x ∈ {0, …, 255}`` becomes 1 with probability ``x / 255``, else 0 (``uint8``);
    drawn afresh for every batch."""

    keyed = True

    def __init__(self, seed: int = 0):
        self.seed = int(seed)

    def __call__(self, x: torch.Tensor, key: Sequence[int] | None = None) -> torch.Tensor:
        u = torch.rand(x.shape, generator=keyed_generator(self.seed, key))
        return (u * 255 < x.to(u.dtype)).to(torch.uint8)

    def __repr__(self) -> str:
        return f"DynamicBinarize(seed={self.seed})"


def binarize_once(images: torch.Tensor, seed: int) -> torch.Tensor:
    """A fixed Bernoulli(x / 255) binarization of ``uint8`` images, drawn from ``seed``."""
    return DynamicBinarize(seed)(images, key=[])


class Chain:
    """Applies ``transforms`` in order, passing ``key`` to the keyed ones."""

    def __init__(self, transforms: Sequence[Callable[..., torch.Tensor]]):
        self.transforms = list(transforms)
        self.keyed = any(getattr(t, "keyed", False) for t in self.transforms)

    def __call__(self, x: torch.Tensor, key: Sequence[int] | None = None) -> torch.Tensor:
        for t in self.transforms:
            x = t(x, key=key) if getattr(t, "keyed", False) else t(x)
        return x

    def __repr__(self) -> str:
        return f"Chain({self.transforms})"


def chain(*transforms: Callable[..., torch.Tensor] | None) -> Callable[..., torch.Tensor] | None:
    """The transforms that are not ``None`` in order: ``None``, the one, or a :class:`Chain`."""
    present = [t for t in transforms if t is not None]
    if not present:
        return None
    return present[0] if len(present) == 1 else Chain(present)
