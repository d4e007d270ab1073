"""Architecture builders (registered as ``architecture``): functions composing registered layers
into a :class:`~survae.flows.Flow` from a few hyperparameters. Importing registers them all.

The layer, network and distribution classes these modules register are importable from here,
e.g. ``from survae.architectures import FlowPPAffineCoupling``. The builders stay in their
modules (``survae.architectures.glow.glow``; several share their module's name) and are built
by name with ``survae.registry.build("architecture", "glow", ...)``.
"""

import importlib
import pkgutil

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

from survae.architectures.autoregressive import Flatten, ScaleShiftMLP  # noqa: E402
from survae.architectures.conditional import (  # noqa: E402
    ClassEmbeddingContext,
    ConditionalGlowTopPrior,
)
from survae.architectures.glow import GlowTopPrior, MultiScaleFlow  # noqa: E402
from survae.architectures.point_flows import PointAffineCoupling, PointShuffle, SwapAxes  # noqa: E402
from survae.architectures.survae_image import ChannelwiseNormal  # noqa: E402
from survae.architectures.toy import FeatureAffine  # noqa: E402
from survae.architectures.vae import IAFPosterior  # noqa: E402
from survae.transforms.bijections.flowpp import (  # noqa: E402
    ElementwiseActNorm,
    FlowPPAffineCoupling,
    GroupedConv1x1,
    HalfSplit,
    SpaceToDepth,
)

__all__ = [
    "ChannelwiseNormal",
    "ClassEmbeddingContext",
    "ConditionalGlowTopPrior",
    "ElementwiseActNorm",
    "FeatureAffine",
    "Flatten",
    "FlowPPAffineCoupling",
    "GlowTopPrior",
    "GroupedConv1x1",
    "HalfSplit",
    "IAFPosterior",
    "MultiScaleFlow",
    "PointAffineCoupling",
    "PointShuffle",
    "ScaleShiftMLP",
    "SpaceToDepth",
    "SwapAxes",
]
