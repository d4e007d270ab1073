"""Building networks from registered names.

Every registered network takes ``(in_channels, out_channels, **hyperparameters)`` (features for
vector networks), so a layer that knows its own sizes can build the network a config names.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import nn

from survae.config_check import check_kwargs
from survae.registry import build_from_spec, get

NetSpec = str | Mapping[str, Any] | nn.Module


def build_network(spec: NetSpec, in_channels: int, out_channels: int) -> nn.Module:
    """A network from a registered name, a ``{"name": ..., **hparams}`` mapping, or a module.

    A ready module is returned as is: the caller is responsible for its sizes.
    """
    if isinstance(spec, nn.Module):
        return spec
    if isinstance(spec, Mapping) and isinstance(spec.get("name"), str):
        # a wrong key names the network and its valid keys (ConfigError), not a bare TypeError
        params = {k: v for k, v in spec.items() if k != "name"}
        check_kwargs(get("network", spec["name"]), params, f"network {spec['name']!r}")
    return build_from_spec("network", spec, in_channels=in_channels, out_channels=out_channels)


def zero_init_(layer: nn.Module) -> nn.Module:
    """Zero a layer's weight and bias so a coupling starts at (or near) the identity."""
    for p in (getattr(layer, "weight", None), getattr(layer, "bias", None)):
        if p is not None:
            nn.init.zeros_(p)
    return layer
