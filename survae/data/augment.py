"""Batched data augmentation on ``uint8`` image tensors (values stay exact integers).

SurVAE's CIFAR-10 training augmentation is a random horizontal flip plus a translation of
about 4 % of the image size (1 pixel at 32x32) with edge padding. Here both are applied to a
whole ``[B, C, H, W]`` batch at once with one ``torch.where`` and two ``gather`` calls, so
the images remain ``uint8`` and the per-batch cost is tiny.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch


class RandomFlipTranslate:
    """Random horizontal flip (probability 1/2) and integer translation with edge padding.

    Each image gets its own flip and its own shift ``(dy, dx)`` drawn uniformly from
    ``{-translate, ..., translate}``; pixels shifted in from outside repeat the border
    (pad-with-edge then crop). Random numbers come from ``generator``; without one, from a
    generator seeded by ``(seed, key)`` when the caller passes the batch's example indices as
    ``key`` (as :class:`~survae.data.base.ArrayDataset` does), else from torch's global one.
    Keyed draws make a batch's augmentation a function of the run seed and the batch itself,
    so a run resumed mid-epoch, or loaded by other worker processes, augments exactly as an
    unbroken one (the global generator has moved on by the batches fetched ahead).
    """

    #: :class:`~survae.data.base.ArrayDataset` passes a batch's indices as ``key``
    keyed = True

    def __init__(
        self,
        flip: bool = True,
        translate: int = 1,
        generator: torch.Generator | None = None,
        seed: int = 0,
    ):
        if translate < 0:
            raise ValueError(f"RandomFlipTranslate: translate must be >= 0, got {translate}")
        self.flip = bool(flip)
        self.translate = int(translate)
        self.generator = generator
        self.seed = int(seed)

    def _generator(self, key: Sequence[int] | None) -> torch.Generator | None:
        if self.generator is not None or key is None:
            return self.generator
        state = np.random.SeedSequence([self.seed, *map(int, key)]).generate_state(2)
        return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))

    def __call__(self, x: torch.Tensor, key: Sequence[int] | None = None) -> torch.Tensor:
        if x.dim() != 4:
            raise ValueError(
                f"RandomFlipTranslate: expected a batch (B, C, H, W), got shape {tuple(x.shape)}"
            )
        B, C, H, W = x.shape
        g = self._generator(key)
        if self.flip:
            flip = torch.rand(B, generator=g) < 0.5
            x = torch.where(flip[:, None, None, None], x.flip(-1), x)
        if self.translate > 0:
            t = self.translate
            dy = torch.randint(-t, t + 1, (B, 1), generator=g)
            dx = torch.randint(-t, t + 1, (B, 1), generator=g)
            rows = (torch.arange(H)[None, :] + dy).clamp_(0, H - 1)  # [B, H]
            cols = (torch.arange(W)[None, :] + dx).clamp_(0, W - 1)  # [B, W]
            x = x.gather(2, rows[:, None, :, None].expand(B, C, H, W))
            x = x.gather(3, cols[:, None, None, :].expand(B, C, H, W))
        return x

    def __repr__(self) -> str:
        return f"RandomFlipTranslate(flip={self.flip}, translate={self.translate})"
