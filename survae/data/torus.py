"""A toy data set on the torus ``[-π, π)²``: a mixture of wrapped Gaussians (angle pairs, as
torsion angles), for circular flows (``circular_flow``)."""

from __future__ import annotations

import math

import numpy as np
import torch

from survae.data.base import ArrayDataset
from survae.data.toy import ToyDataModule
from survae.registry import register

#: (mean angle 1, mean angle 2, std) of the components, equal weights; two straddle ±π
TORUS_COMPONENTS = ((-2.0, 2.5, 0.35), (1.0, -1.0, 0.5), (3.0, 0.5, 0.3), (0.0, 3.1, 0.4))


def sample_torus_mixture(num: int, rng: np.random.Generator) -> np.ndarray:
    """``num`` points of the wrapped-Gaussian mixture, float32 ``[num, 2]`` in ``[-π, π)``."""
    comps = np.asarray(TORUS_COMPONENTS)
    idx = rng.integers(len(comps), size=num)
    pts = comps[idx, :2] + rng.standard_normal((num, 2)) * comps[idx, 2:3]
    return (np.remainder(pts + math.pi, 2 * math.pi) - math.pi).astype(np.float32)


@register("dataset", "torus_mixture")
class TorusMixtureDataModule(ToyDataModule):
    """Angle pairs on the torus ``[-π, π)²`` from four wrapped Gaussians (two of them across
    the ``±π`` seam); seeded train/validation/test samples as the other 2-D toys."""

    name = "torus_mixture"

    def _load(self):
        return tuple(
            ArrayDataset(
                torch.from_numpy(
                    sample_torus_mixture(size, np.random.default_rng([self.data_seed, k]))
                )
            )
            for k, size in enumerate(self.sizes)
        )


__all__ = ["TorusMixtureDataModule", "sample_torus_mixture"]
