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
from survae.distributions.targets import (
    DoubleWell,
    GaussianMixtureTarget,
    RingEnergy,
    Target,
    TwoMoonsEnergy,
)

__all__ = [
    "DoubleWell",
    "GaussianMixtureTarget",
    "RingEnergy",
    "Target",
    "TwoMoonsEnergy",
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
