"""Registries of named building blocks.

Configs refer to layers, networks, distributions, architectures and data sets by registered
name only; nothing is imported from a config string. ``available(kind)`` lists the names,
``build(kind, name, **kwargs)`` builds one, and an unknown name raises
:class:`UnknownNameError` listing the valid ones.

>>> import survae  # importing the package registers every building block
>>> from survae import registry
>>> registry.get("layer", "max_pool").__name__
'MaxPoolSurjection2d'
>>> registry.build("layer", "scale", scale=0.5)
Scale(scale=0.5)
>>> registry.get("layer", "max_pol")  # doctest: +ELLIPSIS
Traceback (most recent call last):
    ...
survae.registry.UnknownNameError: Unknown layer 'max_pol'. Did you mean 'max_pool'...
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

KINDS: tuple[str, ...] = (
    "layer",
    "network",
    "distribution",
    "architecture",
    "dataset",
    "target",
)

_REGISTRIES: dict[str, dict[str, Callable[..., Any]]] = {kind: {} for kind in KINDS}

T = TypeVar("T", bound=Callable[..., Any])

#: kinds whose modules are heavy (they pull in Lightning) are imported on first lookup
_LAZY_MODULES: dict[str, str] = {"dataset": "survae.data", "target": "survae.distributions.targets"}


class UnknownNameError(KeyError):
    """A registry lookup named something that is not registered."""

    def __init__(self, kind: str, name: str, valid: list[str]):
        self.kind, self.name, self.valid = kind, name, valid
        close = difflib.get_close_matches(name, valid, n=3)
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        super().__init__(
            f"Unknown {kind} {name!r}.{hint} Valid {kind} names: {', '.join(valid) or '(none)'}."
        )

    def __str__(self) -> str:  # KeyError quotes its message; show it plainly
        return self.args[0]


def _check_kind(kind: str, populate: bool = True) -> dict[str, Callable[..., Any]]:
    if kind not in _REGISTRIES:
        raise UnknownNameError("registry kind", kind, list(KINDS))
    if populate and kind in _LAZY_MODULES:
        importlib.import_module(_LAZY_MODULES[kind])
    return _REGISTRIES[kind]


def register(kind: str, name: str | None = None) -> Callable[[T], T]:
    """Class/function decorator registering ``obj`` under ``name`` (default: its ``__name__``)."""
    registry = _check_kind(kind, populate=False)

    def decorator(obj: T) -> T:
        key = name or obj.__name__
        if key in registry and registry[key] is not obj:
            raise ValueError(f"{kind} {key!r} is already registered to {registry[key]!r}")
        registry[key] = obj
        obj.registry_name = key  # type: ignore[attr-defined]
        return obj

    return decorator


def available(kind: str) -> list[str]:
    """Sorted names registered under ``kind``."""
    return sorted(_check_kind(kind))


def get(kind: str, name: str) -> Callable[..., Any]:
    """The class or builder registered as ``name``; raises :class:`UnknownNameError`."""
    registry = _check_kind(kind)
    if name not in registry:
        raise UnknownNameError(kind, name, sorted(registry))
    return registry[name]


def build(kind: str, name: str, **kwargs: Any) -> Any:
    """Build the ``kind`` registered as ``name`` with keyword arguments."""
    return get(kind, name)(**kwargs)


def build_from_spec(kind: str, spec: str | Mapping[str, Any], **kwargs: Any) -> Any:
    """Build from a name or a mapping ``{"name": ..., **hyperparameters}``.

    ``kwargs`` are supplied by the caller (e.g. channel counts a layer knows) and are merged
    under the spec's own hyperparameters, which win only where the caller gave none.
    """
    if isinstance(spec, str):
        return build(kind, spec, **kwargs)
    if not isinstance(spec, Mapping) or "name" not in spec:
        raise TypeError(
            f"A {kind} spec must be a registered name or a mapping with a 'name' key; got {spec!r}"
        )
    params = {k: v for k, v in spec.items() if k != "name"}
    clash = set(params) & set(kwargs)
    if clash:
        raise ValueError(
            f"{kind} {spec['name']!r}: {sorted(clash)} are set by the enclosing layer and "
            "must not be given in the spec"
        )
    return build(kind, spec["name"], **params, **kwargs)
