"""Fail-fast validation of keyword arguments coming from configs."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any


class ConfigError(ValueError):
    """A config names a key or value that is not valid; the message lists the valid ones."""


def check_kwargs(target: Callable[..., Any], kwargs: Mapping[str, Any], where: str) -> None:
    """Raise :class:`ConfigError` if ``kwargs`` has keys ``target`` does not accept.

    ``where`` is the config path shown to the user (e.g. ``"data"`` or ``"model.layers[2]"``).
    """
    try:
        sig = inspect.signature(target)
    except (TypeError, ValueError):
        return
    params = sig.parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    valid = [n for n, p in params.items() if n != "self" and p.kind is not p.VAR_POSITIONAL]
    unknown = [k for k in kwargs if k not in valid]
    if unknown:
        name = getattr(target, "registry_name", getattr(target, "__name__", str(target)))
        raise ConfigError(
            f"{where}: unknown key(s) {', '.join(repr(k) for k in unknown)} for {name!r}. "
            f"Valid keys: {', '.join(valid)}."
        )
