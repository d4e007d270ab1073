"""Augmented flows on images: VFlow (Chen et al., ICML 2020) and ANF (Huang et al., 2020).

Both add ``aug_channels`` noise channels ``e`` to the (dequantized, logit-space) image and
model the pair ``(x, e)`` with a Flow++-style flow; the likelihood is the bound
``E_q[log p(x, e) - log q(e | x)]`` (the ``augment`` generative surjection), so ``exact`` is
False and the test metric is the importance-weighted bound. They differ in ``q``:

* VFlow: a learned conditional flow ``q(e | x)``: ``ε ~ N(0, I)`` → column-split logistic-mixture
  couplings conditioned on a context processor of ``x`` → sigmoid, as the official code
  (``posterior_blocks`` = blocks of each of its coupling networks);
* ANF: fixed ``q(e) = N(0, I)``, independent of ``x``.

The defaults are the official VFlow CIFAR-10 model: Flow++'s variational dequantizer, then on
the 3 + 3 = 6 channels the stages ``[["columns", 2], ["channels", 2], "squeeze", ["columns", 2],
["channels", 3]]`` (96 filters, 10 blocks, 32 components, dropout 0.2), and a 4-step posterior
with 3-block networks.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from survae.architectures.flowpp import (
    check_discrete_image,
    conditional_flowpp,
    flowpp_front,
    flowpp_stages,
)
from survae.distributions import StandardNormal
from survae.flows import Flow
from survae.nn.flowpp_context import FlowPPContextNet
from survae.registry import register
from survae.transforms.base import Transform
from survae.transforms.bijections.elementwise import Logit
from survae.transforms.surjections.augment import Augment

#: the official VFlow CIFAR-10 main flow on 3 data + 3 augmented channels
VFLOW_STAGES: list[Any] = [
    ["columns", 2],
    ["channels", 2],
    "squeeze",
    ["columns", 2],
    ["channels", 3],
]


def _augmented_flowpp(
    posterior: str,
    data_shape: Sequence[int],
    num_bins: int | None,
    aug_channels: int,
    stages: Sequence[Any],
    logit_eps: float,
    posterior_stages: Sequence[Any] = (),
    posterior_hidden_channels: int | None = None,
    posterior_num_blocks: int = 3,
    posterior_context_channels: int = 32,
    posterior_context_blocks: int = 3,
    posterior_squash: bool = True,
    **flowpp_hparams: Any,
) -> Flow:
    """The VFlow / ANF model; ``flowpp_hparams`` are the Flow++ hyperparameters of
    :func:`~survae.architectures.flowpp.flowpp_front` (the dequantizer's context processor is
    never attention-based here)."""
    name = "vflow" if posterior == "flow" else "anf"
    check_discrete_image(data_shape, num_bins, name)
    if aug_channels < 1:
        raise ValueError(f"{name}: aug_channels must be >= 1, got {aug_channels}")
    C, H, W = (int(s) for s in data_shape)
    net_kwargs, common, dequantizer = flowpp_front(
        data_shape, num_bins, dequant_context_attention=False, **flowpp_hparams
    )
    if posterior == "flow":
        context_net = FlowPPContextNet(
            C, posterior_context_channels, posterior_context_blocks, net_kwargs["dropout"]
        )
        posterior_net = {
            **net_kwargs,
            "hidden_channels": posterior_hidden_channels or net_kwargs["hidden_channels"],
            "num_blocks": posterior_num_blocks,
        }
        encoder = conditional_flowpp(
            (aug_channels, H, W),
            posterior_stages,
            context_net,
            squash=posterior_squash,
            context_channels=posterior_context_channels,
            **common,
            **posterior_net,
        )
    else:
        encoder = None
    main, latent_shape = flowpp_stages((C + aug_channels, H, W), stages, **common, **net_kwargs)
    layers: list[Transform] = [
        dequantizer,
        Logit(eps=logit_eps),
        Augment(C, aug_channels, encoder=encoder),
        *main,
    ]
    return Flow(StandardNormal(latent_shape), layers)


@register("architecture", "vflow")
def vflow(
    data_shape: Sequence[int] = (3, 32, 32),
    num_bins: int | None = 256,
    aug_channels: int = 3,
    dequantization: str = "variational",
    coupling: str = "mixture",
    use_attention: bool = True,
    hidden_channels: int = 96,
    num_blocks: int = 10,
    num_components: int = 32,
    num_heads: int = 4,
    dropout: float = 0.2,
    stages: Sequence[Any] = tuple(VFLOW_STAGES),
    pointwise: bool = True,
    posterior_stages: Sequence[Any] = (("columns", 4),),
    posterior_hidden_channels: int | None = None,
    posterior_num_blocks: int = 3,
    posterior_context_channels: int = 32,
    posterior_context_blocks: int = 3,
    posterior_squash: bool = True,
    dequant_stages: Sequence[Any] = (("columns", 4),),
    dequant_hidden_channels: int | None = None,
    dequant_num_blocks: int = 2,
    dequant_context_channels: int = 32,
    dequant_context_blocks: int = 3,
    logit_eps: float = 0.05,
    num_bisection_iters: int = 100,
) -> Flow:
    """VFlow: dequantization → ``logit(0.05 + 0.9·x)`` → augment with ``e ~ q(e | x)`` (a
    conditional Flow++ flow, squashed to (0, 1) by a sigmoid) → Flow++ stages on the
    ``C + aug_channels`` channels → N(0, I). Likelihood: a lower bound (``exact`` False).
    Defaults: the official CIFAR-10 model."""
    # the parameters, as the keyword arguments of the shared model
    return _augmented_flowpp("flow", **locals())


@register("architecture", "anf")
def anf(
    data_shape: Sequence[int] = (3, 32, 32),
    num_bins: int | None = 256,
    aug_channels: int = 3,
    dequantization: str = "variational",
    coupling: str = "mixture",
    use_attention: bool = True,
    hidden_channels: int = 96,
    num_blocks: int = 10,
    num_components: int = 32,
    num_heads: int = 4,
    dropout: float = 0.2,
    stages: Sequence[Any] = tuple(VFLOW_STAGES),
    pointwise: bool = True,
    dequant_stages: Sequence[Any] = (("columns", 4),),
    dequant_hidden_channels: int | None = None,
    dequant_num_blocks: int = 2,
    dequant_context_channels: int = 32,
    dequant_context_blocks: int = 3,
    logit_eps: float = 0.05,
    num_bisection_iters: int = 100,
) -> Flow:
    """ANF-style augmented flow: as :func:`vflow` but with the fixed augmentation distribution
    ``q(e) = N(0, I)`` (Huang et al. 2020), so the bound's gap is the augmentation gap
    ``KL(q(e) || p(e | x))``. Likelihood: a lower bound (``exact`` False)."""
    # the parameters, as the keyword arguments of the shared model
    return _augmented_flowpp("standard_normal", **locals())
