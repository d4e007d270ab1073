"""Flows on the torus ``[-π, π)^D`` (Rezende et al. 2020): circular rational-quadratic spline
couplings (or a MADE) for angle data, with a uniform base.

``num_steps`` circular spline layers (couplings alternate halves; the autoregressive variant
reverses the order between steps), then ``u = z / 2π + ½`` onto ``[0, 1)^D`` (contribution
``-D · log 2π``) and a uniform base: ``log p`` is a density on the torus, integrating to 1.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from survae.config_check import ConfigError
from survae.distributions import StandardUniform
from survae.flows import Flow
from survae.registry import register
from survae.transforms import Transform
from survae.transforms.bijections.circular import (
    CircularRQSplineAutoregressive,
    CircularRQSplineCoupling,
)
from survae.transforms.bijections.elementwise import Scale, Shift
from survae.transforms.bijections.permutation import Reverse

CONDITIONERS = ("coupling", "autoregressive")


def torus_flow(layers: Sequence[Transform], features: int) -> Flow:
    """``layers`` on ``[-π, π)^features`` followed by the map onto ``[0, 1)^features`` and a
    uniform base (see the module docstring)."""
    return Flow(StandardUniform(features), [*layers, Scale(1 / (2 * math.pi)), Shift(0.5)])


@register("architecture", "circular_flow")
def circular_flow(
    data_shape: Sequence[int],
    num_bins: int | None = None,
    conditioner: str = "coupling",
    num_steps: int = 4,
    hidden: Sequence[int] = (64, 64),
    spline_bins: int = 8,
) -> Flow:
    """A circular spline flow on angle vectors ``(D,)`` in ``[-π, π)`` (module docstring)."""
    if num_bins is not None or len(data_shape) != 1:
        raise ConfigError(f"circular_flow: models angle vectors (D,), got {tuple(data_shape)}")
    if conditioner not in CONDITIONERS:
        raise ConfigError(
            f"circular_flow: unknown conditioner {conditioner!r}; valid: {', '.join(CONDITIONERS)}"
        )
    D = int(data_shape[0])
    if conditioner == "coupling" and D < 2:
        raise ConfigError("circular_flow: a coupling needs at least 2 angles")
    hidden = [int(h) for h in hidden]
    layers: list[Transform] = []
    for i in range(int(num_steps)):
        if conditioner == "coupling":
            net = {"name": "mlp", "hidden": hidden}
            layers.append(
                CircularRQSplineCoupling(
                    D,
                    net,
                    num_bins=spline_bins,
                    split_sizes=(D // 2, D - D // 2),
                    reverse_mask=i % 2 == 1,
                )  # fmt: skip
            )
        else:
            layers.append(CircularRQSplineAutoregressive(D, hidden, num_bins=spline_bins))
            if i < num_steps - 1:
                layers.append(Reverse(D))
    return torus_flow(layers, D)


__all__ = ["circular_flow", "torus_flow"]
