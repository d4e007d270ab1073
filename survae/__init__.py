"""survae: normalizing flows and SurVAE flows with likelihoods you can trust.

Importing the package registers every layer, network, distribution and architecture.
"""

__version__ = "0.1.0"  # the single source of the version (pyproject reads it)

from survae import _torchvision_compat

_torchvision_compat.install()

from survae import (  # noqa: E402,F401  (importing registers every building block)
    architectures,
    distributions,
    nn,
    registry,
    transforms,
)
from survae.flows import Flow  # noqa: E402
from survae.models import build_model, load_model  # noqa: E402

__all__ = [
    "Flow",
    "__version__",
    "architectures",
    "build_model",
    "distributions",
    "load_model",
    "nn",
    "registry",
    "transforms",
]
