"""survae: normalizing flows and SurVAE flows with likelihoods you can trust.

Importing the package registers every layer, network, distribution and architecture.

Layout: the core at the package root (:mod:`~survae.registry`, :mod:`~survae.flows`,
:mod:`~survae.errors`, :mod:`~survae.config_check`, :mod:`~survae.models`,
:mod:`~survae.checkpoints`, :mod:`~survae.testing`, :mod:`~survae.utils`); the building blocks
in ``transforms``, ``distributions``, ``nn``, ``architectures``, ``data`` and ``metrics``; the
trainer in ``training``; the command line and evaluation in ``app``; runtime settings in
``runtime``; measurement tools in ``bench``.
"""

__version__ = "0.1.0"  # the single source of the version (pyproject reads it)

import importlib
import importlib.abc
import importlib.util
import sys
import warnings

from survae.runtime import torchvision_compat

torchvision_compat.install()

#: modules that moved into subpackages: old import path → new one. ``import survae.speed`` (and
#: ``from survae import speed``) still work, with a DeprecationWarning naming the new path.
MOVED_MODULES: dict[str, str] = {
    "survae.benchmarking": "survae.bench.benchmark",
    "survae.benchmark_peers": "survae.bench.peers",
    "survae.official_harness": "survae.bench.official_harness",
    "survae.threads": "survae.runtime.threads",
    "survae.malloc": "survae.runtime.heap",
    "survae.devices": "survae.runtime.devices",
    "survae.speed": "survae.runtime.speed",
    "survae._torchvision_compat": "survae.runtime.torchvision_compat",
    "survae.cli": "survae.app.cli",
    "survae.evaluation": "survae.app.evaluation",
}


class _MovedModuleLoader(importlib.abc.Loader):
    """Imports a moved module under its old name: the same module object as the new path."""

    def __init__(self, new: str):
        self.new = new

    def create_module(self, spec):
        warnings.warn(
            f"{spec.name} has moved to {self.new}; import it from there",
            DeprecationWarning,
            stacklevel=3,
        )
        return importlib.import_module(self.new)

    def exec_module(self, module) -> None:  # already executed under its new name
        pass


class _MovedModuleFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path=None, target=None):
        new = MOVED_MODULES.get(fullname)
        return (
            None
            if new is None
            else importlib.util.spec_from_loader(fullname, _MovedModuleLoader(new))
        )


if not any(isinstance(f, _MovedModuleFinder) for f in sys.meta_path):
    sys.meta_path.insert(0, _MovedModuleFinder())


def __getattr__(name: str):
    """``survae.speed`` and the other moved modules as attributes (see :data:`MOVED_MODULES`)."""
    if f"survae.{name}" in MOVED_MODULES:
        return importlib.import_module(f"survae.{name}")
    raise AttributeError(f"module 'survae' has no attribute {name!r}")


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
