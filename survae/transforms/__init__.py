"""Layers: bijections, surjections and stochastic transforms (all registered as ``layer``)."""

from survae.transforms import (  # noqa: F401  (registers)
    bijections,
    memory,
    stochastic,
    surjections,
)
from survae.transforms.base import (
    Bijection,
    InverseBijection,
    Sequential,
    StochasticTransform,
    Surjection,
    Transform,
)

__all__ = [
    "Bijection",
    "InverseBijection",
    "Sequential",
    "StochasticTransform",
    "Surjection",
    "Transform",
]
