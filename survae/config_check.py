"""Fail-fast validation of keyword arguments and values coming from configs.

:func:`check_kwargs` refuses unknown keys and, through :func:`check_values`, values of the wrong
type (by the target's annotation: ``int``, ``float``, ``bool``, optionally ``None``) or outside
the range a hyperparameter's name implies (:data:`RANGES`: counts and sizes >= 1, ``num_bins``
>= 2, rates in [0, 1), ...), and nested network specs (parameters annotated ``NetSpec``) with
their location. The scalar checks (:func:`check_int`, :func:`check_number`, :func:`check_bool`,
:func:`check_choice`) raise a one-line :class:`ConfigError` naming the key and the valid range.
"""

from __future__ import annotations

import difflib
import inspect
import math
import numbers
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from survae import registry


class ConfigError(ValueError):
    """A config names a key or value that is not valid; the message lists the valid ones."""


# --- scalar checks ------------------------------------------------------------------------
def is_int(value: Any) -> bool:
    """An integer that is not a bool (``True`` is an ``int`` to Python, never to a config)."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    """A real number that is not a bool."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def check_int(
    key: str,
    value: Any,
    minimum: int | None = None,
    maximum: int | None = None,
    *,
    optional: bool = False,
    special: Mapping[int, str] | None = None,
) -> None:
    """``value`` must be an integer in ``[minimum, maximum]`` (``None`` if ``optional``; a key
    of ``special``, e.g. ``{-1: "no limit"}``, is also accepted)."""
    if optional and value is None:
        return
    if is_int(value) and special and int(value) in special:
        return
    ok = is_int(value) and (minimum is None or value >= minimum)
    ok = ok and (maximum is None or value <= maximum)
    if not ok:
        if minimum is not None and maximum is not None:
            valid = f"an integer in [{minimum}, {maximum}]"
        elif minimum is not None:
            valid = f"an integer >= {minimum}"
        elif maximum is not None:
            valid = f"an integer <= {maximum}"
        else:
            valid = "an integer"
        extras = [f"{k} ({v})" for k, v in (special or {}).items()] + (["null"] if optional else [])
        if extras:
            valid += ", or " + " or ".join(extras)
        raise ConfigError(f"{key}: must be {valid}, got {value!r}")


def _interval(gt: float | None, ge: float | None, lt: float | None, le: float | None) -> str:
    low = f"({gt:g}" if gt is not None else f"[{ge:g}" if ge is not None else None
    high = f"{lt:g})" if lt is not None else f"{le:g}]" if le is not None else None
    if low and high:
        return f"a number in {low}, {high}"
    if low:
        return f"a number {'>' if gt is not None else '>='} {low[1:]}"
    if high:
        return f"a number {'<' if lt is not None else '<='} {high[:-1]}"
    return "a finite number"


def check_number(
    key: str,
    value: Any,
    *,
    gt: float | None = None,
    ge: float | None = None,
    lt: float | None = None,
    le: float | None = None,
    optional: bool = False,
) -> None:
    """``value`` must be a finite real number within the given bounds (``None`` if
    ``optional``)."""
    if optional and value is None:
        return
    ok = is_number(value) and math.isfinite(value)
    if ok:
        ok = (gt is None or value > gt) and (ge is None or value >= ge)
        ok = ok and (lt is None or value < lt) and (le is None or value <= le)
    if not ok:
        valid = _interval(gt, ge, lt, le) + (", or null" if optional else "")
        raise ConfigError(f"{key}: must be {valid}, got {value!r}")


def check_bool(key: str, value: Any, *, optional: bool = False) -> None:
    """``value`` must be ``true`` or ``false`` (or ``null`` if ``optional``)."""
    if isinstance(value, bool) or (optional and value is None):
        return
    valid = "null, true or false" if optional else "true or false"
    raise ConfigError(f"{key}: must be {valid}, got {value!r}")


def check_choice(key: str, value: Any, choices: Sequence[Any]) -> None:
    """``value`` must be one of ``choices``."""
    if value not in choices:
        raise ConfigError(f"{key}: must be one of {', '.join(map(str, choices))}, got {value!r}")


# --- hyperparameter ranges by name ----------------------------------------------------------
_COUNTS = """num_couplings num_layers num_blocks num_levels num_steps num_scales num_heads
num_components num_iaf_steps num_bisection_iters num_points num_channels num_features
num_keep num_categories num_groups bins hidden hidden_channels mid_channels d_model
dim_feedforward depth growth densenet_blocks densenet_channels densenet_depth densenet_growth
dequant_steps dequant_context dequant_context_blocks dequant_context_channels dequant_num_blocks
dequant_hidden_channels posterior_context_blocks posterior_context_channels
posterior_hidden_channels posterior_num_blocks aug_channels latent_features iaf_context_features
kernel_size factor batch_size eval_batch_size val_size test_size train_size""".split()
_NON_NEGATIVE = "num_workers translate context_channels context_features data_seed".split()

#: name -> (kind, bounds): the valid range of a hyperparameter wherever it appears (architecture
#: builders, layers, data modules). Integers may also come as a list (e.g. ``hidden``).
RANGES: dict[str, tuple[str, dict[str, float]]] = {
    **{name: ("int", {"minimum": 1}) for name in _COUNTS},
    **{name: ("int", {"minimum": 0}) for name in _NON_NEGATIVE},
    "num_bins": ("int", {"minimum": 2}),
    "dropout": ("float", {"ge": 0.0, "lt": 1.0}),
    "logit_eps": ("float", {"ge": 0.0, "lt": 0.5}),
    "tail_bound": ("float", {"gt": 0.0}),
    "bound": ("float", {"gt": 0.0}),
    "batch_norm_momentum": ("float", {"gt": 0.0, "le": 1.0}),
}


def _annotation(param: inspect.Parameter) -> str:
    """A parameter's annotation as text, ``Optional[X]`` spelled ``X | None``."""
    ann = param.annotation
    if ann is inspect.Parameter.empty:
        return ""
    text = ann if isinstance(ann, str) else getattr(ann, "__name__", None) or str(ann)
    text = text.replace("typing.", "")
    if text.startswith("Optional[") and text.endswith("]"):
        text = f"{text[9:-1]} | None"
    return text


def _check_typed(key: str, value: Any, annotation: str) -> None:
    optional = annotation.endswith(" | None") or annotation.startswith("None | ")
    base = annotation.replace(" | None", "").replace("None | ", "")
    if base == "int":
        check_int(key, value, optional=optional)
    elif base == "float":
        check_number(key, value, optional=optional)
    elif base == "bool":
        check_bool(key, value, optional=optional)


def _check_range(key: str, name: str, value: Any) -> None:
    kind, bounds = RANGES[name]
    if kind == "int":
        values = value if isinstance(value, Sequence) and not isinstance(value, str) else [value]
        for v in values:
            if v is not None:
                check_int(key, v, int(bounds["minimum"]))
    elif value is not None:
        check_number(key, value, **bounds)


def _check_network_spec(spec: Any, where: str) -> None:
    """A nested ``NetSpec``: a registered network name, or ``{name, **hyperparameters}``."""
    name = spec.get("name") if isinstance(spec, Mapping) else spec
    if not isinstance(name, str):
        return  # a ready module (or something the layer will reject itself)
    valid = registry.available("network")
    if name not in valid:
        raise ConfigError(f"{where}: unknown network {name!r}; valid: {', '.join(valid)}")
    if isinstance(spec, Mapping):
        params = {k: v for k, v in spec.items() if k != "name"}
        check_kwargs(registry.get("network", name), params, where)


def _key(where: str, name: str) -> str:
    """``model.layers[0].net`` + ``hidden`` -> ``model.layers[0].net.hidden``; a location with a
    note, ``model (architecture 'glow')``, keeps the note after the key."""
    head, sep, note = where.partition(" (")
    return f"{head}.{name}{sep}{note}"


def check_values(
    target: Callable[..., Any], kwargs: Mapping[str, Any], where: str, ranges: bool = True
) -> None:
    """Check ``kwargs``' values against ``target``'s annotations, :data:`RANGES` (when
    ``ranges``) and nested network specs; raise :class:`ConfigError` naming the key."""
    params: dict[str, inspect.Parameter] = {}
    fns = (
        [c.__init__ for c in target.__mro__ if "__init__" in vars(c)]
        if isinstance(target, type)
        else [target]
    )
    for fn in fns:
        try:
            sig = inspect.signature(fn)
        except (TypeError, ValueError):
            continue
        for n, p in sig.parameters.items():
            params.setdefault(n, p)
    for name, value in kwargs.items():
        key = _key(where, name)
        param = params.get(name)
        annotation = _annotation(param) if param is not None else ""
        if annotation:
            _check_typed(key, value, annotation)
        numeric = not annotation or "int" in annotation or "float" in annotation
        if ranges and name in RANGES and numeric:
            _check_range(key, name, value)
        if "NetSpec" in annotation and value is not None:
            _check_network_spec(value, f"{where}.{name}")


# --- keys ---------------------------------------------------------------------------------
def check_kwargs(
    target: Callable[..., Any], kwargs: Mapping[str, Any], where: str, values: bool = True
) -> None:
    """Raise :class:`ConfigError` if ``kwargs`` has keys ``target`` does not accept, then (if
    ``values``) check the values with :func:`check_values`.

    ``where`` is the config path shown to the user (e.g. ``"data"`` or ``"model.layers[2]"``).
    """
    valid: list[str] = []
    # a class whose __init__ forwards **kwargs accepts its bases' keywords too
    targets = (
        [c.__init__ for c in target.__mro__ if "__init__" in vars(c)]
        if isinstance(target, type)
        else [target]
    )
    checkable = False
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
            checkable = True
            break
    unknown = [k for k in kwargs if k not in valid] if checkable else []
    if unknown:
        name = getattr(target, "registry_name", getattr(target, "__name__", str(target)))
        close = [m for k in unknown for m in difflib.get_close_matches(str(k), valid, n=2)]
        hint = f" Did you mean {', '.join(repr(c) for c in dict.fromkeys(close))}?"
        raise ConfigError(
            f"{where}: unknown key(s) {', '.join(repr(k) for k in unknown)} for {name!r}. "
            f"Valid keys: {', '.join(valid)}.{hint if close else ''}"
        )
    if values:
        check_values(target, kwargs, where)
