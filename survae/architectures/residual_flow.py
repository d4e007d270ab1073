"""Residual Flows (Chen et al. 2019) and i-ResNets (Behrmann et al. 2019) for images and vectors.

Images ``[C, H, W]`` of ``num_bins`` levels (the official ``train_img.py`` and
``resflows/resflow.py``, rtqichen/residual-flows, with its defaults): uniform dequantization to
``(x + u) / num_bins``, the logit ``logit(α + (1 - 2α) y)`` (``logit_eps``: α = 1e-6 for MNIST,
0.05 for CIFAR-10), then ``len(num_blocks)`` scales; scale ``s`` is ``num_blocks[s]``
convolutional residual blocks (LipSwish pre-activation, kernels 3-1-3, ``hidden`` channels,
coefficient ``coeff``) each followed by ActNorm, and a squeeze between scales (no factoring
out: the official ``--factor-out False``). The first block has no pre-activation and an ActNorm
before it (``--first-resblock True``). The last scale ends with ``fc_blocks`` residual blocks on
the flattened image (hidden ``fc_hidden``, two hidden layers; ``--fc-end True --fc-idim 128``),
each followed by ActNorm. Standard normal base.

Vectors ``(D,)`` (2-D toys, tabular): ``sum(num_blocks)`` residual MLP blocks (hidden sizes
``vector_hidden``), ActNorm after each when ``actnorm``.

``logdet`` chooses the log-determinant in training (``roulette``: the unbiased estimator with
``n_exact_terms`` terms plus ``N ~ Poisson(rate)``; ``series``: i-ResNet's ``n_terms``-term
truncation; ``exact``: autograd Jacobian, small vectors only) and ``eval_logdet`` in evaluation
(default: ``roulette`` with ``eval_exact_terms`` = 20 exact terms, as the official evaluation).
``neumann_grad`` (Residual Flows) takes the gradient from the Neumann series; i-ResNet is
``logdet=series neumann_grad=false`` (backpropagation through the truncated series).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from survae.architectures.autoregressive import Flatten
from survae.architectures.glow import check_num_bins
from survae.config_check import ConfigError
from survae.distributions import StandardNormal
from survae.flows import Flow
from survae.registry import register
from survae.transforms import Transform
from survae.transforms.bijections.actnorm import ActNorm
from survae.transforms.bijections.elementwise import Logit
from survae.transforms.bijections.residual import ConvResidualBlock, ResidualBlock
from survae.transforms.bijections.squeeze import Squeeze2d
from survae.transforms.surjections.dequantization import UniformDequantization


def _image_layers(
    shape: tuple[int, int, int], num_blocks: Sequence[int], hidden: int, kernels: Sequence[int],
    fc_blocks: int, fc_hidden: int, actnorm: bool, block_kw: dict,
) -> list[Transform]:  # fmt: skip
    C, H, W = shape
    layers: list[Transform] = [ActNorm(C)] if actnorm else []
    for s, n in enumerate(num_blocks):
        for i in range(int(n)):
            first = s == 0 and i == 0
            layers.append(
                ConvResidualBlock(
                    C, (H, W), hidden=hidden, kernels=kernels, preact=not first, **block_kw
                )
            )
            if actnorm:
                layers.append(ActNorm(C))
        if s < len(num_blocks) - 1:
            layers.append(Squeeze2d())
            C, H, W = C * 4, H // 2, W // 2
    if fc_blocks:
        D = C * H * W
        layers.append(Flatten((C, H, W)))
        for _ in range(int(fc_blocks)):
            layers.append(ResidualBlock(D, hidden=(fc_hidden, fc_hidden), **block_kw))
            if actnorm:
                layers.append(ActNorm(D))
    return layers


@register("architecture", "residual_flow")
def residual_flow(
    data_shape: Sequence[int],
    num_bins: int | None = None,
    num_blocks: Sequence[int] = (16, 16, 16),
    hidden: int = 512,
    kernels: Sequence[int] = (3, 1, 3),
    fc_blocks: int = 4,
    fc_hidden: int = 128,
    vector_hidden: Sequence[int] = (128, 128),
    actnorm: bool = True,
    logit_eps: float = 0.05,
    coeff: float = 0.98,
    n_power_iterations: int | None = None,
    power_tol: float = 1e-3,
    logdet: str = "roulette",
    eval_logdet: str | None = None,
    n_terms: int = 5,
    n_exact_terms: int = 2,
    eval_exact_terms: int = 20,
    distribution: str = "poisson",
    rate: float = 2.0,
    neumann_grad: bool = True,
) -> Flow:
    """A Residual Flow on images or vectors (see the module docstring)."""
    block_kw = {
        "coeff": float(coeff),
        "n_power_iterations": n_power_iterations,
        "power_tol": float(power_tol),
        "logdet": logdet,
        "eval_logdet": eval_logdet,
        "n_terms": int(n_terms),
        "n_exact_terms": int(n_exact_terms),
        "eval_exact_terms": int(eval_exact_terms),
        "distribution": distribution,
        "rate": float(rate),
        "neumann_grad": bool(neumann_grad),
    }
    shape = tuple(int(s) for s in data_shape)
    if len(shape) == 1:
        if num_bins is not None:
            raise ConfigError("residual_flow: vectors must be continuous (num_bins is set)")
        layers: list[Transform] = []
        for _ in range(sum(int(n) for n in num_blocks)):
            layers.append(ResidualBlock(shape[0], hidden=list(vector_hidden), **block_kw))
            if actnorm:
                layers.append(ActNorm(shape[0]))
        return Flow(StandardNormal(shape), layers)
    if len(shape) != 3:
        raise ConfigError(f"residual_flow: data_shape must be (D,) or (C, H, W), got {shape}")
    bins = check_num_bins("residual_flow", num_bins)
    C, H, W = shape
    scale = 2 ** (len(num_blocks) - 1)
    if H % scale or W % scale:
        raise ConfigError(
            f"residual_flow: {len(num_blocks)} scales need H and W divisible by {scale}, "
            f"got {H}x{W}"
        )
    layers = [UniformDequantization(num_bins=bins), Logit(eps=float(logit_eps))]
    layers += _image_layers(
        shape, num_blocks, int(hidden), kernels, fc_blocks, int(fc_hidden), actnorm, block_kw
    )
    if fc_blocks:
        base_shape: tuple[int, ...] = (math.prod(shape),)
    else:
        base_shape = (C * scale * scale, H // scale, W // scale)
    return Flow(StandardNormal(base_shape), layers)


__all__ = ["residual_flow"]
