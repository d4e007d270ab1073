"""The peer benchmark's models, built with the same architecture in survae and in each peer
library (nflows, normflows, zuko, FrEIA); see :mod:`survae.bench.peers` for the models and
the timing protocol."""

from __future__ import annotations

import importlib.util
import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

#: the peers and the module that must be importable for each
PEERS: dict[str, str] = {"nflows": "nflows", "normflows": "normflows", "zuko": "zuko",
                         "FrEIA": "FrEIA"}  # fmt: skip
#: model → (batch, shape of one example)
PEER_MODELS: dict[str, tuple[int, tuple[int, ...]]] = {
    "toy": (128, (2,)),
    "maf": (100, (6,)),
    "maf_nobn": (100, (6,)),
    "glow": (32, (1, 28, 28)),
}
#: the small Glow: levels (L), steps per level (K), hidden channels of the coupling networks
GLOW_LEVELS, GLOW_STEPS, GLOW_HIDDEN = 2, 4, 128
#: per model, why the libraries' parameter counts differ (under the markdown table)
PEER_NOTES: dict[str, str] = {
    "glow": "survae's coupling networks are Glow's (an actnorm after each hidden convolution, "
    "a learned output scale); normflows' have the actnorms but no output scale, nflows' and "
    "FrEIA's are plain biased convolutions (nflows' 1×1 convolution has a bias); zuko has no "
    "image layers",
}

LogProb = Callable[[torch.Tensor], torch.Tensor]


def installed(peer: str) -> bool:
    """Whether the peer library can be imported."""
    return importlib.util.find_spec(PEERS[peer]) is not None


def _mlp(sizes: Sequence[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for a, b in zip(sizes[:-1], sizes[1:]):
        layers += [nn.Linear(a, b), nn.ReLU()]
    return nn.Sequential(*layers[:-1])


def _conv_net(in_channels: int, out_channels: int, hidden: int = GLOW_HIDDEN) -> nn.Sequential:
    """Glow's coupling network shape with plain biased convolutions: 3×3 conv → ReLU → 1×1
    conv → ReLU → 3×3 conv, the last zero-initialised (each coupling starts as a fixed map)."""
    out = nn.Conv2d(hidden, out_channels, 3, padding=1)
    nn.init.zeros_(out.weight)
    nn.init.zeros_(out.bias)
    return nn.Sequential(
        nn.Conv2d(in_channels, hidden, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(hidden, hidden, 1),
        nn.ReLU(),
        out,
    )


class _ContextMLP(nn.Module):
    """An MLP called as ``net(x, context)`` (nflows' coupling networks take a context)."""

    def __init__(self, sizes: Sequence[int]):
        super().__init__()
        self.net = _mlp(sizes)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        return self.net(x)


class _ContextConvNet(nn.Module):
    """:func:`_conv_net` called as ``net(x, context)`` (nflows' coupling networks)."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.net = _conv_net(in_channels, out_channels)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        return self.net(x)


def _glow_shapes() -> list[tuple[int, int, int]]:
    """Shape ``(C, H, W)`` of each level of the small Glow after its squeeze, data side first:
    ``[(4, 14, 14), (8, 7, 7)]`` (the split after each level but the last halves C)."""
    c, h, w = PEER_MODELS["glow"][1]
    shapes = []
    for _ in range(GLOW_LEVELS):
        c, h, w = 4 * c, h // 2, w // 2
        shapes.append((c, h, w))
        c //= 2
    return shapes


# --------------------------------------------------------------------------- builders
#: the data kind of each peer model, which the speed preset reads
PEER_KINDS = {"toy": "toy", "glow": "image", "maf": "tabular", "maf_nobn": "tabular"}

#: the training steps of the run the preset plans for: the paper toy run's 10,000 (10 epochs of
#: 128,000 points at batch 128), so that the toy model is compiled as such a run compiles it
PEER_RUN_STEPS = 10_000


def _survae(model: str, preset: str = "auto") -> tuple[nn.Module, LogProb]:
    """survae's model, with the speed ``preset`` applied as a run of :data:`PEER_RUN_STEPS`
    steps applies it (``off``: the bare model)."""
    from survae.runtime.speed import apply_speed_options, compile_if_it_pays

    flow, _ = _survae_bare(model)
    apply_speed_options(flow, {"preset": preset}, kind=PEER_KINDS.get(model))
    compile_if_it_pays(flow, PEER_RUN_STEPS)
    return flow, flow  # flow(x) is log_prob(x), through the compiled graph when compiled


def _survae_bare(model: str) -> tuple[nn.Module, LogProb]:
    from survae.models import build_model

    if model == "toy":
        spec = {
            "layers": [
                {
                    "name": "affine_coupling",
                    "num_channels": 2,
                    "net": {"name": "mlp", "hidden": [200, 100]},
                },
                {"name": "reverse"},
            ]
            * 4
        }
        spec["layers"] = spec["layers"][:-1]
        flow = build_model(spec, (2,))
    elif model == "glow":
        # the steps of the glow builder's glow_step with its defaults: actnorm, conv1x1, affine
        # coupling (sigmoid(s + 2)) with glow_net (inner actnorms folded into its convolutions)
        net = {"name": "glow_net", "hidden_channels": GLOW_HIDDEN}
        layers: list[dict[str, Any]] = []
        for level, (c, _, _) in enumerate(_glow_shapes()):
            layers.append({"name": "squeeze"})
            for _ in range(GLOW_STEPS):
                layers += [
                    {"name": "actnorm", "num_channels": c},
                    {"name": "conv1x1", "num_channels": c},
                    {"name": "affine_coupling", "num_channels": c, "net": net},
                ]
            if level < GLOW_LEVELS - 1:
                layers.append({"name": "slice", "num_channels": c, "num_keep": c // 2})
        flow = build_model({"layers": layers}, PEER_MODELS["glow"][1])
    else:
        # the maf experiments' model (configs/model/maf.yaml): the paper's unbounded log-scale
        spec = {"architecture": "maf", "num_layers": 5, "hidden": [100, 100]}
        spec.update(batch_norm=model == "maf", log_scale_bound=None)
        flow = build_model(spec, (6,))
    return flow, flow.log_prob


def _nflows(model: str) -> tuple[nn.Module, LogProb] | None:
    from nflows import distributions, flows, transforms

    layers: list[Any] = []
    if model == "toy":
        for i in range(4):
            mask = torch.tensor([1, -1] if i % 2 == 0 else [-1, 1])
            layers.append(
                transforms.AffineCouplingTransform(mask, lambda a, b: _ContextMLP([a, 200, 100, b]))
            )
        base = distributions.StandardNormal([2])
    elif model == "glow":
        # output: the factored-out channels and the top latent, flattened
        multiscale = transforms.MultiscaleCompositeTransform(GLOW_LEVELS)
        for c, h, w in _glow_shapes():
            mask = torch.tensor([-1] * (c // 2) + [1] * (c - c // 2))
            steps: list[Any] = [transforms.SqueezeTransform()]
            for _ in range(GLOW_STEPS):
                steps += [
                    transforms.ActNorm(c),
                    transforms.OneByOneConvolution(c),
                    transforms.AffineCouplingTransform(mask, _ContextConvNet),
                ]
            multiscale.add_transform(transforms.CompositeTransform(steps), (c, h, w))
        base = distributions.StandardNormal([math.prod(PEER_MODELS["glow"][1])])
        flow = flows.Flow(multiscale, base)
        return flow, flow.log_prob
    else:
        for i in range(5):
            layers.append(
                transforms.MaskedAffineAutoregressiveTransform(
                    features=6, hidden_features=100, num_blocks=1, use_residual_blocks=False
                )
            )
            if model == "maf":
                layers.append(transforms.BatchNorm(6))
            if i < 4:
                layers.append(transforms.ReversePermutation(6))
        base = distributions.StandardNormal([6])
    flow = flows.Flow(transforms.CompositeTransform(layers), base)
    return flow, flow.log_prob


def _normflows(model: str) -> tuple[nn.Module, LogProb] | None:
    import normflows as nf

    layers: list[nn.Module] = []
    if model == "toy":
        for i in range(4):
            layers.append(nf.flows.AffineCouplingBlock(nf.nets.MLP([1, 200, 100, 2])))
            if i < 3:
                layers.append(nf.flows.Permute(2, mode="swap"))
        base = nf.distributions.DiagGaussian(2, trainable=False)
    elif model == "maf":
        return None  # normflows' BatchNorm has no inverse, which its log_prob runs
    elif model == "glow":
        # lists in sampling order, top level first: its K Glow blocks then the squeeze (whose
        # forward unsqueezes); a Merge joins the factored-out channels; one base per latent
        shapes = _glow_shapes()[::-1]
        levels = [
            [
                *(nf.flows.GlowBlock(c, GLOW_HIDDEN, use_lu=False, net_actnorm=True)
                  for _ in range(GLOW_STEPS)),
                nf.flows.Squeeze(),
            ]
            for c, _, _ in shapes
        ]  # fmt: skip
        latents = [shapes[0]] + [(c // 2, h, w) for c, h, w in shapes[1:]]
        bases = [nf.distributions.DiagGaussian(z, trainable=False) for z in latents]
        merges = [nf.flows.Merge() for _ in shapes[1:]]
        ms = nf.MultiscaleFlow(bases, levels, merges, class_cond=False)
        return ms, lambda x: ms.log_prob(x, None)
    else:
        for i in range(5):
            layers.append(
                nf.flows.MaskedAffineAutoregressive(6, 100, num_blocks=1, use_residual_blocks=False)
            )
            if i < 4:
                layers.append(nf.flows.Permute(6, mode="swap"))
        base = nf.distributions.DiagGaussian(6, trainable=False)
    flow = nf.NormalizingFlow(base, layers)
    return flow, flow.log_prob


def _zuko(model: str) -> tuple[nn.Module, LogProb] | None:
    import zuko

    if model != "maf_nobn":
        # zuko has no batch norm; its coupling flows are not this toy model; it has no image
        # layers (squeeze, 1×1 convolution, convolutional couplings, multi-scale split): no Glow
        return None
    flow = zuko.flows.MAF(6, transforms=5, hidden_features=(100, 100))
    return flow, lambda x: flow().log_prob(x)


def _freia(model: str) -> tuple[nn.Module, LogProb] | None:
    if model not in ("toy", "glow"):
        return None  # FrEIA has no masked autoregressive flow
    import FrEIA.framework as ff
    import FrEIA.modules as fm

    if model == "glow":
        return _freia_glow(ff, fm)

    inn = ff.SequenceINN(2)
    for i in range(4):
        inn.append(
            fm.AffineCouplingOneSided, subnet_constructor=lambda a, b: _mlp([a, 200, 100, b])
        )
        if i < 3:
            inn.append(fm.PermuteRandom, seed=i)
    log_norm = -0.5 * 2 * torch.log(torch.tensor(2 * torch.pi)).item()

    def log_prob(x: torch.Tensor) -> torch.Tensor:
        z, log_jac = inn(x)
        return -0.5 * z.square().sum(1) + log_norm + log_jac

    return inn, log_prob


def _freia_glow(ff: Any, fm: Any) -> tuple[nn.Module, LogProb]:
    """The small Glow as a FrEIA graph: i-RevNet squeezes, ``AllInOneBlock`` steps (coupling,
    global affine, ``C`` learned Householder reflections), a ``Split`` whose second half is
    an output."""
    shape = PEER_MODELS["glow"][1]
    nodes: list[Any] = [ff.InputNode(*shape, name="x")]
    outputs: list[Any] = []
    prev: Any = nodes[0]
    for level, (c, _, _) in enumerate(_glow_shapes()):
        nodes.append(ff.Node(prev, fm.IRevNetDownsampling, {}))
        for _ in range(GLOW_STEPS):
            block = {"subnet_constructor": _conv_net, "learned_householder_permutation": c}
            nodes.append(ff.Node(nodes[-1], fm.AllInOneBlock, block))
        prev = nodes[-1]
        if level < GLOW_LEVELS - 1:
            split = ff.Node(prev, fm.Split, {"section_sizes": [c // 2, c - c // 2], "dim": 0})
            nodes.append(split)
            outputs.append(ff.OutputNode(split.out1))
            prev = split.out0
    outputs.append(ff.OutputNode(prev))
    inn = ff.GraphINN(nodes + outputs)
    log_norm = -0.5 * math.prod(shape) * math.log(2 * math.pi)

    def log_prob(x: torch.Tensor) -> torch.Tensor:
        zs, log_jac = inn(x)
        sq = sum(z.square().flatten(1).sum(1) for z in zs)
        return -0.5 * sq + log_norm + log_jac

    return inn, log_prob


BUILDERS: dict[str, Callable[[str], tuple[nn.Module, LogProb] | None]] = {
    "survae": _survae,
    "nflows": _nflows,
    "normflows": _normflows,
    "zuko": _zuko,
    "FrEIA": _freia,
}
