"""Neural spline flows on vectors (Durkan et al. 2019, Sec. 5.1 and App. B.1): tabular data
(POWER, GAS, HEPMASS, MINIBOONE, BSDS300) and 2-D toy sets, optionally conditional.

A *step* is an invertible linear map followed by a rational-quadratic spline transform; the
flow is ``num_steps`` steps and a final linear map, on a standard normal base (the paper's
setup; ``base`` can name a mixture of Gaussians instead).

* linear map (``linear="lu"``): a fixed random permutation, then an LU-factorised matrix
  initialised to the identity (the paper's choice; the official ``LULinear`` also adds a
  learned bias, ``D`` parameters per linear map, which survae's LU layer does not have);
  ``linear="permutation"`` drops the LU part;
* ``transform="coupling"``, RQ-NSF (C): a spline coupling whose network is a residual MLP
  (``num_blocks`` pre-activation blocks of width ``hidden``, ``dropout`` inside them); the
  halves alternate between steps; ``unconditional_transform=True`` also splines the
  conditioning half with learned parameters (the official code's
  ``--apply_unconditional_transform 1``);
* ``transform="autoregressive"``, RQ-NSF (AR): a spline MADE layer on NSF's residual MADE
  (:class:`~survae.nn.resmade.ResidualMADE`: ``num_blocks`` two-layer masked residual blocks of
  width ``hidden``, ``dropout`` inside them).

``context_features > 0`` makes every transform conditional on a context vector
``[B, context_features]`` (concatenated to the coupling networks' input, fed to the MADE's
context inputs); a conditional base (``context_normal``, ``conditional_mixture_of_gaussians``)
also receives it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from survae import registry
from survae.config_check import ConfigError
from survae.flows import Flow
from survae.registry import register
from survae.transforms import Transform
from survae.transforms.bijections.conv1x1 import Conv1x1LU
from survae.transforms.bijections.permutation import RandomPermutation
from survae.transforms.bijections.spline import RQSplineAutoregressive, RQSplineCoupling

TRANSFORMS = ("coupling", "autoregressive")
LINEARS = ("lu", "permutation")
CONDITIONAL_BASES = ("context_normal", "conditional_mixture_of_gaussians")


def identity_lu(features: int) -> Conv1x1LU:
    """An LU-factorised invertible matrix ``[features, features]`` set to the identity
    (``P = L = U = I``), as NSF initialises its linear layers."""
    layer = Conv1x1LU(features)
    with torch.no_grad():
        layer.perm.copy_(torch.eye(features))
        layer.sign_s.fill_(1.0)
        layer.lower.zero_()
        layer.upper.zero_()
        layer.log_s.zero_()
    return layer


def _linear(kind: str, features: int, seed: int) -> list[Transform]:
    layers: list[Transform] = [RandomPermutation(features, seed=seed)]
    if kind == "lu":
        layers.append(identity_lu(features))
    return layers


def _base(spec: str | Mapping[str, Any], features: int, context_features: int):
    spec = {"name": spec} if isinstance(spec, str) else dict(spec)
    name = spec.pop("name", None)
    if name is None:
        raise ConfigError(f"nsf: base must be a distribution name or {{name: ...}}, got {spec}")
    cls = registry.get("distribution", name)
    if name in CONDITIONAL_BASES:
        if context_features < 1:
            raise ConfigError(
                f"nsf: base {name!r} is conditional; set model.context_features (> 0)"
            )
        spec.setdefault("context_features", context_features)
    return cls(shape=(features,), **spec)


@register("architecture", "nsf")
def nsf(
    data_shape: Sequence[int],
    num_bins: int | None = None,
    transform: str = "coupling",
    num_steps: int = 10,
    hidden: int = 256,
    num_blocks: int = 2,
    dropout: float = 0.0,
    batch_norm: bool = False,
    bins: int = 8,
    tail_bound: float = 3.0,
    linear: str = "lu",
    context_features: int = 0,
    base: str | Mapping[str, Any] = "standard_normal",
    seed: int = 0,
    unconditional_transform: bool = False,
) -> Flow:
    """Neural spline flow, RQ-NSF (C) or (AR), on vectors ``(D,)`` (see the module docstring).

    ``bins`` is the spline's ``K`` (``num_bins`` is the data's number of levels, which must be
    ``None``: the model is for continuous vectors); ``seed`` fixes the random permutations.
    """
    if num_bins is not None or len(data_shape) != 1:
        raise ConfigError(
            f"nsf: models continuous vectors (D,); got data_shape {tuple(data_shape)} "
            f"with num_bins={num_bins}"
        )
    if transform not in TRANSFORMS:
        raise ConfigError(f"nsf: unknown transform {transform!r}; valid: {', '.join(TRANSFORMS)}")
    if linear not in LINEARS:
        raise ConfigError(f"nsf: unknown linear {linear!r}; valid: {', '.join(LINEARS)}")
    if unconditional_transform and transform != "coupling":
        raise ConfigError(
            f"nsf: unconditional_transform applies to transform=coupling, got {transform!r}"
        )
    D = int(data_shape[0])
    if transform == "coupling" and D < 2:
        raise ConfigError(f"nsf: coupling needs at least 2 features, got {D}")
    layers: list[Transform] = []
    for i in range(num_steps):
        layers += _linear(linear, D, seed + i)
        if transform == "coupling":
            net = {
                "name": "residual_mlp",
                "hidden": int(hidden),
                "num_blocks": int(num_blocks),
                "dropout": float(dropout),
                "batch_norm": bool(batch_norm),
            }
            layers.append(
                RQSplineCoupling(
                    D,
                    net,
                    num_bins=bins,
                    tail_bound=tail_bound,
                    split_sizes=(D // 2, D - D // 2),
                    reverse_mask=i % 2 == 1,
                    context_channels=context_features,
                    unconditional_identity=bool(unconditional_transform),
                )
            )
        else:
            layers.append(
                RQSplineAutoregressive(
                    D,
                    hidden=[int(hidden)] * (int(num_blocks) + 1),
                    residual=True,
                    dropout=float(dropout),
                    num_bins=bins,
                    tail_bound=tail_bound,
                    context_features=context_features,
                )
            )
    layers += _linear(linear, D, seed + num_steps)
    return Flow(_base(base, D, context_features), layers)


def num_parameters(flow: torch.nn.Module) -> int:
    """Trainable parameter count (for comparing model sizes)."""
    return sum(math.prod(p.shape) for p in flow.parameters() if p.requires_grad)


__all__ = ["identity_lu", "nsf", "num_parameters"]
