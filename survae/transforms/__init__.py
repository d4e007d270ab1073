"""Layers: bijections, surjections and stochastic transforms (all registered as ``layer``).

Every registered layer class defined in this package is importable from here, e.g.
``from survae.transforms import AffineCoupling, AbsSurjection``.
"""

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
from survae.transforms.bijections.actnorm import ActNorm
from survae.transforms.bijections.autoregressive import (
    InverseAutoregressive,
    MaskedAffineAutoregressive,
)
from survae.transforms.bijections.autoregressive_2d import (
    AdditiveAutoregressive2d,
    AffineAutoregressive2d,
    CensoredLogisticMixtureAutoregressive2d,
    CubicSplineAutoregressive2d,
    GaussianMixtureAutoregressive2d,
    LinearSplineAutoregressive2d,
    LogisticMixtureAutoregressive2d,
    QuadraticSplineAutoregressive2d,
    RQSplineAutoregressive2d,
)
from survae.transforms.bijections.axes import Permute, PermuteAxes, Reshape, Rotate
from survae.transforms.bijections.batchnorm import BatchNormBijection
from survae.transforms.bijections.circular import (
    CircularRQSplineAutoregressive,
    CircularRQSplineCoupling,
)
from survae.transforms.bijections.conditional_elementwise import (
    ConditionalAdditive,
    ConditionalAffine,
)
from survae.transforms.bijections.conv1x1 import Conv1x1, Conv1x1LU
from survae.transforms.bijections.coupling import AdditiveCoupling, AffineCoupling
from survae.transforms.bijections.dsf import DSFAutoregressive, DSFCoupling
from survae.transforms.bijections.elementwise import Logit, Scale, Shift, Sigmoid
from survae.transforms.bijections.flowpp import (
    ElementwiseActNorm,
    FlowPPAffineCoupling,
    GroupedConv1x1,
    HalfSplit,
    SpaceToDepth,
)
from survae.transforms.bijections.linear_lowrank import LinearLowRank
from survae.transforms.bijections.logistic_mixture import LogisticMixtureCoupling
from survae.transforms.bijections.mixture_cdf_layers import (
    CensoredLogisticMixtureAutoregressive,
    CensoredLogisticMixtureCoupling,
    GaussianMixtureAutoregressive,
    GaussianMixtureCoupling,
    LogisticMixtureAutoregressive,
)
from survae.transforms.bijections.nonlinear import (
    LeakyReLU,
    SneakyReLU,
    Softplus,
    SoftplusInverse,
    Tanh,
)
from survae.transforms.bijections.orthogonal import HouseholderMixing, OrthogonalMixing
from survae.transforms.bijections.permutation import RandomPermutation, Reverse
from survae.transforms.bijections.piecewise_layers import (
    CubicSplineAutoregressive,
    CubicSplineCoupling,
    LinearSplineAutoregressive,
    LinearSplineCoupling,
    QuadraticSplineAutoregressive,
    QuadraticSplineCoupling,
)
from survae.transforms.bijections.residual import ConvResidualBlock, ResidualBlock
from survae.transforms.bijections.spline import RQSplineAutoregressive, RQSplineCoupling
from survae.transforms.bijections.squeeze import Squeeze2d, Unsqueeze2d
from survae.transforms.bijections.umnn import UMNNAutoregressive, UMNNCoupling
from survae.transforms.memory import MemorySavingBlock
from survae.transforms.stochastic.vae import VAE
from survae.transforms.surjections.abs_conditional import ConditionalAbsSurjection
from survae.transforms.surjections.absolute import AbsSurjection
from survae.transforms.surjections.augment import Augment
from survae.transforms.surjections.dequantization import (
    UniformDequantization,
    VariationalDequantization,
)
from survae.transforms.surjections.max_pool import MaxPoolSurjection2d
from survae.transforms.surjections.permutation import SortSurjection, StochasticPermutation
from survae.transforms.surjections.slicing import Slice

__all__ = [
    "AdditiveAutoregressive2d",
    "AffineAutoregressive2d",
    "CensoredLogisticMixtureAutoregressive2d",
    "CubicSplineAutoregressive2d",
    "GaussianMixtureAutoregressive2d",
    "LinearSplineAutoregressive2d",
    "LogisticMixtureAutoregressive2d",
    "QuadraticSplineAutoregressive2d",
    "RQSplineAutoregressive2d",
    "CensoredLogisticMixtureAutoregressive",
    "CensoredLogisticMixtureCoupling",
    "GaussianMixtureAutoregressive",
    "GaussianMixtureCoupling",
    "LogisticMixtureAutoregressive",
    "CubicSplineAutoregressive",
    "CubicSplineCoupling",
    "LinearSplineAutoregressive",
    "LinearSplineCoupling",
    "QuadraticSplineAutoregressive",
    "QuadraticSplineCoupling",
    "ConditionalAdditive",
    "ConditionalAffine",
    "LeakyReLU",
    "LinearLowRank",
    "Permute",
    "PermuteAxes",
    "Reshape",
    "Rotate",
    "SneakyReLU",
    "Softplus",
    "SoftplusInverse",
    "Tanh",
    "VAE",
    "AbsSurjection",
    "ActNorm",
    "AdditiveCoupling",
    "AffineCoupling",
    "Augment",
    "BatchNormBijection",
    "Bijection",
    "ConditionalAbsSurjection",
    "CircularRQSplineAutoregressive",
    "CircularRQSplineCoupling",
    "Conv1x1",
    "Conv1x1LU",
    "ConvResidualBlock",
    "InverseAutoregressive",
    "InverseBijection",
    "LogisticMixtureCoupling",
    "DSFAutoregressive",
    "DSFCoupling",
    "UMNNAutoregressive",
    "UMNNCoupling",
    "ElementwiseActNorm",
    "FlowPPAffineCoupling",
    "GroupedConv1x1",
    "HalfSplit",
    "HouseholderMixing",
    "SpaceToDepth",
    "Logit",
    "MaskedAffineAutoregressive",
    "MaxPoolSurjection2d",
    "MemorySavingBlock",
    "OrthogonalMixing",
    "RQSplineAutoregressive",
    "RQSplineCoupling",
    "RandomPermutation",
    "ResidualBlock",
    "Reverse",
    "Scale",
    "Sequential",
    "Shift",
    "Sigmoid",
    "Slice",
    "SortSurjection",
    "Squeeze2d",
    "StochasticPermutation",
    "StochasticTransform",
    "Surjection",
    "Transform",
    "UniformDequantization",
    "Unsqueeze2d",
    "VariationalDequantization",
]
