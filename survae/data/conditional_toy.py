"""2-D toy sets whose density depends on a context, for conditional density estimation.

* ``gaussian_classes``: eight Gaussians (std 0.35) on a circle of radius 3, at angles
  ``k·π/4``; class ``c ∈ {0, 1, 2, 3}`` owns the two neighbouring modes ``2c`` and ``2c + 1``,
  so ``p(x | c)`` is a two-mode mixture and ``p(x)`` the eight-mode one. With
  ``conditional=True`` the context is the one-hot class.
* ``rotated_moons``: the two-moons set (as in :mod:`survae.data.toy`, centred) rotated by an
  angle ``θ ~ U[0, 2π)``; the context is ``(cos θ, sin θ)``, a continuous context that is not
  a label. Without ``conditional`` it is the rotation-averaged (ring-like) density.

Splits are independent seeded samples as for the other toy sets (``(data_seed, split)``).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from survae.data.base import ArrayDataset
from survae.data.toy import ToyDataModule
from survae.registry import register

RADIUS = 3.0
MODE_STD = 0.35


def mode_centres() -> np.ndarray:
    """The eight mode centres ``(8, 2)`` of ``gaussian_classes``; class ``c`` owns rows
    ``2c`` and ``2c + 1``."""
    angles = np.pi / 4 * np.arange(8)
    return RADIUS * np.stack([np.cos(angles), np.sin(angles)], axis=1)


def sample_gaussian_classes(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``n`` points ``(n, 2)`` float32 and their classes ``(n,)`` in ``0..3``."""
    classes = rng.integers(0, 4, n)
    modes = 2 * classes + rng.integers(0, 2, n)
    pts = mode_centres()[modes] + MODE_STD * rng.standard_normal((n, 2))
    return pts.astype(np.float32), classes


def sample_rotated_moons(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``n`` points ``(n, 2)`` and their contexts ``(cos θ, sin θ)`` ``(n, 2)``, float32."""
    t = rng.uniform(0.0, np.pi, n)
    inner = rng.integers(0, 2, n).astype(bool)
    outer_pts = np.stack([np.cos(t), np.sin(t)], 1)
    inner_pts = np.stack([1.0 - np.cos(t), 0.5 - np.sin(t)], 1)
    pts = np.where(inner[:, None], inner_pts, outer_pts) + 0.1 * rng.standard_normal((n, 2))
    pts = 1.5 * (pts - np.array([0.5, 0.25]))  # centred, radius about 2.3
    theta = rng.uniform(0.0, 2 * np.pi, n)
    c, s = np.cos(theta), np.sin(theta)
    rotated = np.stack([c * pts[:, 0] - s * pts[:, 1], s * pts[:, 0] + c * pts[:, 1]], 1)
    return rotated.astype(np.float32), np.stack([c, s], 1).astype(np.float32)


@register("dataset", "gaussian_classes")
class GaussianClassesDataModule(ToyDataModule):
    """Eight Gaussians in four classes of two neighbouring modes each (see the module
    docstring); ``conditional=True`` yields ``(x, one-hot class)``."""

    name = "gaussian_classes"
    num_classes = 4
    class_names = tuple(f"class {c} (modes {2 * c}, {2 * c + 1})" for c in range(4))

    def _load(self):
        sets = []
        for k, size in enumerate(self.sizes):
            pts, classes = sample_gaussian_classes(size, np.random.default_rng([self.data_seed, k]))
            sets.append(ArrayDataset(torch.from_numpy(pts), context=self.one_hot(classes)))
        return tuple(sets)


@register("dataset", "rotated_moons")
class RotatedMoonsDataModule(ToyDataModule):
    """Two moons rotated by a random angle ``θ``; ``conditional=True`` yields
    ``(x, (cos θ, sin θ))`` (see the module docstring)."""

    name = "rotated_moons"
    context_features = 2

    def _load(self):
        sets = []
        for k, size in enumerate(self.sizes):
            pts, ctx = sample_rotated_moons(size, np.random.default_rng([self.data_seed, k]))
            context = torch.from_numpy(ctx) if self.conditional else None
            sets.append(ArrayDataset(torch.from_numpy(pts), context=context))
        return tuple(sets)

    def sample_contexts(self) -> torch.Tensor | None:
        """Four rotations: 0, 90, 180 and 270 degrees."""
        if not self.conditional:
            return None
        angles = torch.arange(4) * (math.pi / 2)
        return torch.stack([torch.cos(angles), torch.sin(angles)], dim=1)

    def sample_context_labels(self) -> list[str] | None:
        """The rotation of each of :meth:`sample_contexts`: ``θ = 0°``, ``θ = 90°``, ..."""
        contexts = self.sample_contexts()
        if contexts is None:
            return None
        return [f"θ = {math.degrees(math.atan2(s, c)) % 360:.0f}°" for c, s in contexts.tolist()]


__all__ = [
    "GaussianClassesDataModule",
    "RotatedMoonsDataModule",
    "mode_centres",
    "sample_gaussian_classes",
    "sample_rotated_moons",
]
