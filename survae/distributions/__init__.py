"""Base and conditional distributions (registered as ``distribution``)."""

from survae.distributions.base import ConditionalDistribution, Distribution
from survae.distributions.conditional import (
    ConditionalBernoulli,
    ConditionalCategorical,
    ConditionalNormal,
)
from survae.distributions.conditional_mean import (
    ConditionalMeanNormal,
    ConditionalMeanStdNormal,
)
from survae.distributions.mixture import (
    ConditionalMixtureOfGaussians,
    ContextNormal,
    MixtureOfGaussians,
)
from survae.distributions.simple import (
    DiagonalNormal,
    StandardHalfNormal,
    StandardNormal,
    StandardUniform,
)

__all__ = [
    "ConditionalBernoulli",
    "ConditionalCategorical",
    "ConditionalDistribution",
    "ConditionalMeanNormal",
    "ConditionalMeanStdNormal",
    "ConditionalMixtureOfGaussians",
    "ConditionalNormal",
    "ContextNormal",
    "DiagonalNormal",
    "Distribution",
    "MixtureOfGaussians",
    "StandardHalfNormal",
    "StandardNormal",
    "StandardUniform",
]
