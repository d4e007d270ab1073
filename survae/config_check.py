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
    valid: list[str] = []
    # a class whose __init__ forwards **kwargs accepts its bases' keywords too
    targets = (
        [c.__init__ for c in target.__mro__ if "__init__" in vars(c)]
        if isinstance(target, type)
        else [target]
    )
    for fn in targets:
        try:
            params = inspect.signature(fn).parameters
        except (TypeError, ValueError):
            return
        valid += [
            n
            for n, p in params.items()
            if n != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD) and n not in valid
        ]
        if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
            break
    else:
        return  # every level takes **kwargs: nothing to check against
    unknown = [k for k in kwargs if k not in valid]
    if unknown:
        name = getattr(target, "registry_name", getattr(target, "__name__", str(target)))
        raise ConfigError(
            f"{where}: unknown key(s) {', '.join(repr(k) for k in unknown)} for {name!r}. "
            f"Valid keys: {', '.join(valid)}."
        )
