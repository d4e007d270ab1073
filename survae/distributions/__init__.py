"""Base and conditional distributions (registered as ``distribution``)."""

from survae.distributions.base import ConditionalDistribution, Distribution
from survae.distributions.simple import (
    DiagonalNormal,
    StandardHalfNormal,
    StandardNormal,
    StandardUniform,
)

__all__ = [
    "ConditionalDistribution",
    "DiagonalNormal",
    "Distribution",
    "StandardHalfNormal",
    "StandardNormal",
    "StandardUniform",
]
