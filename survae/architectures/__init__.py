"""Architecture builders (registered as ``architecture``): functions composing registered layers
into a :class:`~survae.flows.Flow` from a few hyperparameters. Importing registers them all."""

import importlib
import pkgutil

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")
