"""Flow++ (Ho et al., ICML 2019): variational dequantization, logistic-mixture CDF couplings
with self-attention networks, laid out as the paper's official code builds its models.

The official models work on *pairs* of half-tensors: a "checkerboard" split takes alternate
columns (``[B, C, H, W] → 2 × [B, C, H, W/2]``), a channel split takes the two channel halves.
Each step on a pair is ``Norm`` (a gain and bias for every element of both halves) →
``Pointwise`` (an invertible ``C × C`` 1×1 map per half) → coupling (one half conditions, the
other is transformed) → swap of the halves. Here a pair is stored as one tensor with the two
halves stacked on the channel axis (:class:`HalfSplit`), the swap becomes alternating which
half conditions (``flip``), and a stage ends by merging the halves back (swapped when the
stage has an odd number of couplings, exactly as the official ``TupleFlip`` leaves them).

Stages are given as a list: ``["columns", n]`` (column split, ``n`` steps), ``["channels", n]``
(channel split, ``n`` steps) or ``"squeeze"`` (TensorFlow's ``space_to_depth`` ordering, as the
official code). The official CIFAR-10 model (``flows/run_cifar.py``, 31,443,440 parameters) is
``[["columns", 4], "squeeze", ["channels", 2], ["columns", 3]]`` with 96 filters, 10 blocks,
32 components, and a 4-step variational dequantizer (2-block networks, 32 context channels).
The official ImageNet 32 model (``flows_imagenet/launchers/imagenet32_official.py``,
168,955,724 parameters) adds weight normalisation to every convolution (``weight_norm``), a
concat-ELU before each coupling network's output convolution (``output_concat_elu``) and an
attention-based context processor (``dequant_context_attention``), and drops ``Pointwise``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from torch import nn

from survae.distributions import StandardNormal
from survae.flows import Flow
from survae.nn.flowpp_context import ContextFlowSampler, FlowPPContextNet
from survae.registry import register
from survae.transforms.base import InverseBijection, Transform
from survae.transforms.bijections.elementwise import Logit, Sigmoid
from survae.transforms.bijections.flowpp import (
    SPLITS,
    ElementwiseActNorm,
    FlowPPAffineCoupling,
    GroupedConv1x1,
    HalfSplit,
    SpaceToDepth,
)
from survae.transforms.bijections.logistic_mixture import LogisticMixtureCoupling
from survae.transforms.surjections.dequantization import (
    UniformDequantization,
    VariationalDequantization,
)

#: the official CIFAR-10 main flow (``flows/run_cifar.py``)
CIFAR10_STAGES: list[Any] = [["columns", 4], "squeeze", ["channels", 2], ["columns", 3]]
#: the official ImageNet 32 main flow (``flows_imagenet/launchers/imagenet32_official.py``)
IMAGENET32_STAGES: list[Any] = [
    ["columns", 4],
    ["columns", 3],
    "squeeze",
    ["channels", 3],
    ["columns", 3],
]
COUPLINGS = ("mixture", "affine")
_DEQUANTIZATIONS = ("variational", "uniform")


def _parse_stage(stage: Any) -> tuple[str, int]:
    if isinstance(stage, str):
        if stage != "squeeze":
            raise ValueError(f"Flow++ stage {stage!r}: a string stage must be 'squeeze'")
        return "squeeze", 0
    if isinstance(stage, Mapping):
        stage = (stage.get("split"), stage.get("couplings"))
    if not isinstance(stage, Sequence) or len(stage) != 2 or stage[0] not in SPLITS:
        raise ValueError(
            f"Flow++ stage {stage!r}: expected 'squeeze' or [split, number_of_couplings] with "
            f"split one of {SPLITS}"
        )
    if int(stage[1]) < 1:
        raise ValueError(f"Flow++ stage {list(stage)!r}: needs at least one coupling")
    return str(stage[0]), int(stage[1])


def flowpp_stages(
    shape: Sequence[int],
    stages: Sequence[Any],
    *,
    coupling: str = "mixture",
    num_components: int = 32,
    pointwise: bool = True,
    context_channels: int = 0,
    num_bisection_iters: int = 100,
    rescale: bool = True,
    **net_kwargs: Any,
) -> tuple[list[Transform], tuple[int, int, int]]:
    """The layers of a Flow++-style flow on examples of ``shape = (C, H, W)`` (data → latent
    order) and the output shape. ``net_kwargs`` go to every ``flowpp_net`` (its ``image_size``
    is filled in per stage); ``context_channels`` makes every coupling conditional; ``rescale``
    gives the mixture couplings survae's learnable per-channel scale of ``tanh`` (the official
    code has none). ``net_kwargs["data_init"]`` also gives the ``Norm`` layers the official
    initial scale ``1/√(var + 1e-8)`` (else ``1/√(var + 1e-6)``)."""
    data_init = bool(net_kwargs.get("data_init", False))
    if coupling not in COUPLINGS:
        raise ValueError(f"Flow++: coupling must be one of {COUPLINGS}, got {coupling!r}")
    C, H, W = (int(s) for s in shape)
    layers: list[Transform] = []
    for stage in stages:
        split, n = _parse_stage(stage)
        if split == "squeeze":
            if H % 2 or W % 2:
                raise ValueError(f"Flow++: cannot squeeze a {C}×{H}×{W} tensor (odd H or W)")
            layers.append(SpaceToDepth())
            C, H, W = 4 * C, H // 2, W // 2
            continue
        if split == "columns" and W % 2:
            raise ValueError(f"Flow++: a column split needs an even width, got {C}×{H}×{W}")
        if split == "channels" and C % 2:
            raise ValueError(
                f"Flow++: a channel split needs an even channel count, got {C}×{H}×{W}; "
                "squeeze first or use a column split"
            )
        pair = (2 * C, H, W // 2) if split == "columns" else (C, H, W)
        layers.append(HalfSplit(split))
        net = {"name": "flowpp_net", **net_kwargs, "image_size": pair[1:]}
        for i in range(n):
            # the official Norm's init: 1/sqrt(var + 1e-8) (survae's: + 1e-6)
            layers.append(ElementwiseActNorm(pair, eps=1e-8 if data_init else 1e-6))
            if pointwise:
                layers.append(GroupedConv1x1(pair[0], num_groups=2))
            if coupling == "mixture":
                layers.append(
                    LogisticMixtureCoupling(
                        pair[0],
                        net,
                        num_components=num_components,
                        mask="channel",
                        flip=i % 2 == 1,
                        context_channels=context_channels,
                        context_mode="net",
                        num_bisection_iters=num_bisection_iters,
                        rescale=rescale,
                    )
                )
            else:
                layers.append(
                    FlowPPAffineCoupling(
                        pair[0], net, flip=i % 2 == 1, context_channels=context_channels
                    )
                )
        layers.append(InverseBijection(HalfSplit(split, swap=n % 2 == 1)))
    return layers, (C, H, W)


def conditional_flowpp(
    shape: Sequence[int],
    stages: Sequence[Any],
    context_net: nn.Module | None,
    squash: bool = False,
    **stage_kwargs: Any,
) -> ContextFlowSampler:
    """A conditional flow ``q(y | c)`` run in the direction the official code runs it:
    ``ε ~ N(0, I)`` → the stage layers' forward maps (conditioned on ``context_net(c)``) →
    optional sigmoid. Sampling with its log-density needs no inverse (no bisection)."""
    layers, out_shape = flowpp_stages(shape, stages, **stage_kwargs)
    if tuple(out_shape) != tuple(int(s) for s in shape):
        raise ValueError(f"conditional_flowpp: stages must keep the shape {tuple(shape)}")
    if squash:
        layers.append(Sigmoid())
    flow = Flow(StandardNormal(tuple(shape)), [InverseBijection(t) for t in reversed(layers)])
    return ContextFlowSampler(flow, context_net)


def flowpp_dequantization(
    shape: Sequence[int],
    num_bins: int,
    stages: Sequence[Any] = (("columns", 4),),
    context_channels: int = 32,
    context_blocks: int = 3,
    context_attention: bool = False,
    dropout: float = 0.2,
    **stage_kwargs: Any,
) -> VariationalDequantization:
    """Flow++'s variational dequantizer: ``u = sigmoid(flow(ε; context_net(x)))``, a flow of
    column-split couplings conditioned on a context processor of ``x``."""
    C, H, W = (int(s) for s in shape)
    for stage in stages:
        if _parse_stage(stage)[0] != "columns":
            raise ValueError(
                "Flow++ dequantization: only column-split stages are supported (the context "
                f"has the column-split spatial size), got {stage!r}"
            )
    context_net = FlowPPContextNet(
        C,
        context_channels,
        context_blocks,
        dropout,
        attention=context_attention,
        num_heads=stage_kwargs.get("num_heads", 4),
        image_size=(H, W // 2),
        weight_norm=stage_kwargs.get("weight_norm", False),
        data_init=stage_kwargs.get("data_init", False),
    )
    sampler = conditional_flowpp(
        shape, stages, None, context_channels=context_channels, dropout=dropout, **stage_kwargs
    )
    return VariationalDequantization(sampler.flow, num_bins, context_net=context_net, squash=True)


def check_discrete_image(data_shape: Sequence[int], num_bins: int | None, name: str) -> None:
    if len(data_shape) != 3:
        raise ValueError(f"{name}: needs images (C, H, W), got data_shape {tuple(data_shape)}")
    if num_bins is None:
        raise ValueError(f"{name}: models discrete images and needs num_bins (e.g. 256)")


def check_choice(value: str, valid: tuple[str, ...], what: str) -> str:
    if value not in valid:
        raise ValueError(f"Flow++: {what} must be one of {valid}, got {value!r}")
    return value


def flowpp_dequantizer(
    data_shape: Sequence[int],
    num_bins: int,
    dequantization: str,
    net_kwargs: Mapping[str, Any],
    coupling: str,
    num_components: int,
    pointwise: bool,
    num_bisection_iters: int,
    stages: Sequence[Any],
    hidden_channels: int,
    num_blocks: int,
    context_channels: int,
    context_blocks: int,
    context_attention: bool,
    rescale: bool = True,
) -> Transform:
    """Uniform or Flow++ variational dequantization with the given hyperparameters."""
    if check_choice(dequantization, _DEQUANTIZATIONS, "dequantization") == "uniform":
        return UniformDequantization(num_bins)
    kwargs = {**net_kwargs, "hidden_channels": hidden_channels, "num_blocks": num_blocks}
    return flowpp_dequantization(
        data_shape,
        num_bins,
        stages=stages,
        context_channels=context_channels,
        context_blocks=context_blocks,
        context_attention=context_attention,
        coupling=coupling,
        num_components=num_components,
        pointwise=pointwise,
        num_bisection_iters=num_bisection_iters,
        rescale=rescale,
        **kwargs,
    )


def flowpp_front(
    data_shape: Sequence[int],
    num_bins: int,
    *,
    dequantization: str,
    coupling: str,
    use_attention: bool,
    hidden_channels: int,
    num_blocks: int,
    num_components: int,
    num_heads: int,
    dropout: float,
    pointwise: bool,
    dequant_stages: Sequence[Any],
    dequant_hidden_channels: int | None,
    dequant_num_blocks: int,
    dequant_context_channels: int,
    dequant_context_blocks: int,
    dequant_context_attention: bool,
    num_bisection_iters: int,
    weight_norm: bool = False,
    output_concat_elu: bool = False,
    mixture_rescale: bool = True,
    attention: str = "self",
    data_init: bool = False,
) -> tuple[dict[str, Any], dict[str, Any], Transform]:
    """The part shared by the Flow++-style builders (``flowpp``, ``vflow``, ``anf``), from
    their hyperparameters of the same names: the coupling-network hyperparameters, the stage
    hyperparameters (coupling kind, mixture size, ...) and the dequantizer, whose parameters are
    created before any other of the model's."""
    net_kwargs: dict[str, Any] = dict(
        hidden_channels=hidden_channels,
        num_blocks=num_blocks,
        num_heads=num_heads,
        dropout=dropout,
        use_attention=use_attention,
        weight_norm=weight_norm,
        output_concat_elu=output_concat_elu,
        attention=attention,
    )
    if data_init:  # only then in the network specs, which stay as before without it
        net_kwargs["data_init"] = True
    common: dict[str, Any] = dict(
        coupling=check_choice(coupling, COUPLINGS, "coupling"),
        num_components=num_components,
        pointwise=pointwise,
        num_bisection_iters=num_bisection_iters,
        rescale=mixture_rescale,
    )
    dequantizer = flowpp_dequantizer(
        data_shape,
        num_bins,
        dequantization,
        net_kwargs,
        stages=dequant_stages,
        hidden_channels=dequant_hidden_channels or hidden_channels,
        num_blocks=dequant_num_blocks,
        context_channels=dequant_context_channels,
        context_blocks=dequant_context_blocks,
        context_attention=dequant_context_attention,
        **common,
    )
    return net_kwargs, common, dequantizer


@register("architecture", "flowpp")
def flowpp(
    data_shape: Sequence[int] = (3, 32, 32),
    num_bins: int | None = 256,
    dequantization: str = "variational",
    coupling: str = "mixture",
    use_attention: bool = True,
    hidden_channels: int = 96,
    num_blocks: int = 10,
    num_components: int = 32,
    num_heads: int = 4,
    dropout: float = 0.2,
    stages: Sequence[Any] = tuple(CIFAR10_STAGES),
    pointwise: bool = True,
    dequant_stages: Sequence[Any] = (("columns", 4),),
    dequant_hidden_channels: int | None = None,
    dequant_num_blocks: int = 2,
    dequant_context_channels: int = 32,
    dequant_context_blocks: int = 3,
    dequant_context_attention: bool = False,
    logit_eps: float = 0.05,
    num_bisection_iters: int = 100,
    weight_norm: bool = False,
    output_concat_elu: bool = False,
    mixture_rescale: bool = False,
    attention: str = "self",
    data_init: bool = False,
) -> Flow:
    """Flow++: dequantization → ``logit(0.05 + 0.9·x)`` → Flow++ stages → N(0, I).

    Likelihood: a lower bound on the discrete log-likelihood (dequantization), so ``exact`` is
    False. Ablations of the paper: ``dequantization="uniform"``, ``coupling="affine"`` (no
    mixture CDF), ``use_attention=False`` (attention removed) or ``attention="pointwise"`` (the
    official ablation's parameter-matched pointwise stand-in, ``flows/ablations/abl_noattn.py``).
    Defaults: the official CIFAR-10 model
    (``flows/run_cifar.py``). ``weight_norm`` and ``output_concat_elu`` switch on the official
    ImageNet models' weight-normalised convolutions and concat-ELU before each coupling
    network's output conv; ``mixture_rescale`` adds survae's learnable per-channel scale of the
    mixture couplings' ``tanh`` (one parameter per transformed channel; not in the official code).
    ``data_init`` is the official code's data-dependent initialisation (``flows/flows.py``; on in
    the Flow++ configs): every convolution of the coupling networks and the dequantizer's
    context processor starts ``N(0, 0.05²)`` and is rescaled on the first training batch to
    output mean 0 and std ``init_scale`` per channel (1; 0.1 before a gate and at a coupling's
    output, which is then not zero), weight-norm gains included, and the ``Norm`` layers use
    ``1/√(var + 1e-8)``. ``False``: survae's initialisation (PyTorch's, zero output
    convolutions). A loaded or resumed model is never re-initialised.
    """
    check_discrete_image(data_shape, num_bins, "flowpp")
    net_kwargs, common, dequantizer = flowpp_front(
        data_shape,
        num_bins,
        dequantization=dequantization,
        coupling=coupling,
        use_attention=use_attention,
        hidden_channels=hidden_channels,
        num_blocks=num_blocks,
        num_components=num_components,
        num_heads=num_heads,
        dropout=dropout,
        pointwise=pointwise,
        dequant_stages=dequant_stages,
        dequant_hidden_channels=dequant_hidden_channels,
        dequant_num_blocks=dequant_num_blocks,
        dequant_context_channels=dequant_context_channels,
        dequant_context_blocks=dequant_context_blocks,
        dequant_context_attention=dequant_context_attention,
        num_bisection_iters=num_bisection_iters,
        weight_norm=weight_norm,
        output_concat_elu=output_concat_elu,
        mixture_rescale=mixture_rescale,
        attention=attention,
        data_init=data_init,
    )
    main, latent_shape = flowpp_stages(data_shape, stages, **common, **net_kwargs)
    layers: list[Transform] = [dequantizer, Logit(eps=logit_eps), *main]
    return Flow(StandardNormal(latent_shape), layers)
