"""Neural autoregressive flows on vectors: NAF with deep sigmoidal flows (Huang et al. 2018) and
UMNN-MAF (Wehenkel & Louppe 2019), for tabular data and 2-D toy sets.

``num_steps`` monotone neural transforms with the order reversed between them (NAF's official
``maf_experiments.py``: ``FlipFlow`` after every flow) on a standard normal base:

* ``transform="dsf"``: :class:`~survae.transforms.bijections.dsf.DSFAutoregressive` (or the
  coupling variant) with ``num_units`` sigmoids per layer and ``depth`` layers (the official
  script's ``--num_ds_dim 16 --num_ds_layers 1``);
* ``transform="umnn"``: :class:`~survae.transforms.bijections.umnn.UMNNAutoregressive` (or
  coupling) with an ``embedding``-sized conditioner output and an ``integrand_hidden`` MLP.

``conditioner="autoregressive"`` uses a MADE with hidden sizes ``hidden``;
``conditioner="coupling"`` alternates halves and uses an MLP with those sizes. The official
NAF code ends with a learned elementwise linear map, which is not included here.
"""

from __future__ import annotations

from collections.abc import Sequence

from survae.config_check import ConfigError
from survae.distributions import StandardNormal
from survae.flows import Flow
from survae.registry import register
from survae.transforms import Transform
from survae.transforms.bijections.dsf import DSFAutoregressive, DSFCoupling
from survae.transforms.bijections.permutation import Reverse
from survae.transforms.bijections.umnn import UMNNAutoregressive, UMNNCoupling

TRANSFORMS = ("dsf", "umnn")
CONDITIONERS = ("autoregressive", "coupling")


def _step(
    transform: str, conditioner: str, D: int, i: int, hidden: list[int], activation: str,
    map_kwargs: dict,
) -> Transform:  # fmt: skip
    if conditioner == "autoregressive":
        cls = DSFAutoregressive if transform == "dsf" else UMNNAutoregressive
        return cls(D, hidden=hidden, activation_name=activation, **map_kwargs)
    cls = DSFCoupling if transform == "dsf" else UMNNCoupling
    net = {"name": "mlp", "hidden": hidden, "activation_name": activation}
    return cls(D, net, split_sizes=(D // 2, D - D // 2), reverse_mask=i % 2 == 1, **map_kwargs)


@register("architecture", "naf")
def naf(
    data_shape: Sequence[int],
    num_bins: int | None = None,
    transform: str = "dsf",
    conditioner: str = "autoregressive",
    num_steps: int = 5,
    hidden: Sequence[int] = (100, 100),
    activation: str = "elu",
    num_units: int = 16,
    depth: int = 1,
    embedding: int = 8,
    integrand_hidden: Sequence[int] = (64, 64),
    quadrature: int = 32,
) -> Flow:
    """NAF-DSF or UMNN flow on continuous vectors ``(D,)`` (see the module docstring);
    ``num_units``/``depth`` apply to DSF, ``embedding``/``integrand_hidden``/``quadrature``
    to UMNN."""
    if num_bins is not None or len(data_shape) != 1:
        raise ConfigError(
            f"naf: models continuous vectors (D,); got data_shape {tuple(data_shape)} "
            f"with num_bins={num_bins}"
        )
    if transform not in TRANSFORMS:
        raise ConfigError(f"naf: unknown transform {transform!r}; valid: {', '.join(TRANSFORMS)}")
    if conditioner not in CONDITIONERS:
        raise ConfigError(
            f"naf: unknown conditioner {conditioner!r}; valid: {', '.join(CONDITIONERS)}"
        )
    D = int(data_shape[0])
    if conditioner == "coupling" and D < 2:
        raise ConfigError(f"naf: coupling needs at least 2 features, got {D}")
    if transform == "dsf":
        map_kwargs = {"num_units": int(num_units), "depth": int(depth)}
    else:
        map_kwargs = {
            "embedding": int(embedding),
            "integrand_hidden": [int(h) for h in integrand_hidden],
            "quadrature": int(quadrature),
        }
    layers: list[Transform] = []
    for i in range(int(num_steps)):
        layers.append(
            _step(transform, conditioner, D, i, [int(h) for h in hidden], activation, map_kwargs)
        )
        if conditioner == "autoregressive" and i < num_steps - 1:
            layers.append(Reverse(D))
    return Flow(StandardNormal((D,)), layers)


__all__ = ["naf"]
