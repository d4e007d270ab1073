"""Parameter counts of every Flow++ and Glow experiment against the official code's build.

Each official count is computed here from the variable shapes the official code creates (read
from its source; the code itself is TensorFlow and is not run), checked against the count the
official code states where it states one, and compared with the model survae builds from the
experiment's config. Models are built on the ``meta`` device: no memory is allocated.

Sources:
* Flow++: github aravindsrinivas/flowpp — ``flows/flows.py`` (layers) and ``flows/run_cifar.py``
  ("Params: 31,443,440"); ``flows/ablations/abl_nodequant.py`` ("Params: 32,324,408") and
  ``abl_nomixlog.py`` ("Params: 32,045,708"); ``flows_imagenet/launchers/imagenet32_official.py``
  (layers and "Num params: 168955724").
* Glow: github openai/glow — ``model.py`` (``revnet2d_step``, ``f``, ``split2d_prior``,
  ``prior`` with ``--learntop``) and ``tfops.py`` (``conv2d``/``conv2d_zeros`` with
  ``edge_bias=True``: a 3×3 convolution of ``C`` channels has ``9·(C + 1)`` weights per output;
  ``actnorm``: a bias and a log-scale per channel). The README's commands give the
  hyperparameters (CIFAR-10: ``--n_level 3 --depth 32 --learntop``, width 512 by default;
  ImageNet 32: depth 48; ImageNet 64: ``--n_level 4 --depth 48``). No count is published.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from survae.models import build_model

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
DATA_SHAPES = {
    "cifar10": (3, 32, 32),
    "imagenet32": (3, 32, 32),
    "imagenet64": (3, 64, 64),
    "mnist": (1, 28, 28),
    "fashion_mnist": (1, 28, 28),
}


# ------------------------------------------------------------------------------------------
# Flow++: the official variable shapes
# ------------------------------------------------------------------------------------------


def flowpp_coupling(
    C: int, H: int, W: int, F: int, blocks: int, K: int, ctx: int = 0, imagenet: bool = False
) -> int:
    """``MixLogisticAttnCoupling`` on a half of ``C`` channels, ``H×W`` (official shapes).

    pos_emb ``H·W·F``; ``proj_in``/``c1`` conv3×3 ``C→F``; per block: ``gated_conv`` (conv3×3
    ``2F→F``, with a context ``a_proj`` dense ``2·ctx→F``, ``c2`` dense ``2F→2F``), layer norm,
    ``gated_attn`` (dense ``F→3F`` and ``F→2F``), layer norm; output conv3×3 to
    ``C·(2 + 3K)``. The ImageNet code weight-normalises every conv/dense (``V, g, b``: one more
    parameter per output unit) and applies a concat-ELU before the output conv (input ``2F``).
    """
    g = 1 if imagenet else 0

    def layer(fan_in: int, out: int) -> int:
        return fan_in * out + out + g * out

    n = H * W * F + layer(9 * C, F)
    for _ in range(blocks):
        n += layer(9 * 2 * F, F) + (layer(2 * ctx, F) if ctx else 0) + layer(2 * F, 2 * F)
        n += 2 * F + layer(F, 3 * F) + layer(F, 2 * F) + 2 * F
    return n + layer(9 * (2 * F if imagenet else F), C * (2 + 3 * K))


def flowpp_step(C: int, H: int, W: int, pointwise: bool, **coupling: int | bool) -> int:
    """``Norm`` (a gain and bias per element of both halves), ``Pointwise`` (a ``C×C`` matrix
    per half, CIFAR code only) and the coupling."""
    return (
        2 * 2 * H * W * C + (2 * C * C if pointwise else 0) + flowpp_coupling(C, H, W, **coupling)
    )


def official_flowpp_cifar10(F: int = 96, dequantization: bool = True) -> int:
    """``flows/run_cifar.py``: shallow context processor (conv3×3 6→32, 3 ``gated_conv`` with
    conv3×3 ``c2``), 4 dequantizer steps (2 blocks, 32 context channels), then 4 column-split
    steps on 3×32×16, space-to-depth, 2 channel-split steps on 6×16×16, 3 column-split steps on
    12×16×8, all with ``Pointwise``; 10 blocks, 32 components."""
    kw = dict(F=F, K=32)
    n = 0
    if dequantization:
        n += 9 * 6 * 32 + 32 + 3 * ((9 * 64 * 32 + 32) + (9 * 64 * 64 + 64))
        n += 4 * flowpp_step(3, 32, 16, True, blocks=2, ctx=32, **kw)
    n += 4 * flowpp_step(3, 32, 16, True, blocks=10, **kw)
    n += 2 * flowpp_step(6, 16, 16, True, blocks=10, **kw)
    return n + 3 * flowpp_step(12, 16, 8, True, blocks=10, **kw)


def official_flowpp_imagenet32() -> int:
    """``flows_imagenet/launchers/imagenet32_official.py``: deep context processor (WN conv3×3
    6→32, pos_emb 32×16×32, 8 × [gated_resnet with conv3×3 c1 64→32 and c2 64→64, LN,
    attention 32→96 / 32→64, LN]), 2 × 4 dequantizer steps (8 blocks, 32 context channels),
    then 4 + 3 column-split steps on 3×32×16, space-to-depth, 3 channel-split steps on 6×16×16,
    3 column-split steps on 12×16×8; no ``Pointwise``; 128 filters, 20 blocks, 32 components."""
    kw = dict(F=128, K=32, imagenet=True)
    ctx = 9 * 6 * 32 + 2 * 32 + 32 * 16 * 32
    per_block = (9 * 64 * 32 + 2 * 32) + (9 * 64 * 64 + 2 * 64) + 64
    per_block += (32 * 96 + 2 * 96) + (32 * 64 + 2 * 64) + 64
    n = ctx + 8 * per_block
    n += 8 * flowpp_step(3, 32, 16, False, blocks=8, ctx=32, **kw)
    n += 7 * flowpp_step(3, 32, 16, False, blocks=20, **kw)
    n += 3 * flowpp_step(6, 16, 16, False, blocks=20, **kw)
    return n + 3 * flowpp_step(12, 16, 8, False, blocks=20, **kw)


# ------------------------------------------------------------------------------------------
# Glow: the official variable shapes
# ------------------------------------------------------------------------------------------


def official_glow(C0: int, levels: int, depth: int, width: int = 512) -> int:
    """openai/glow ``model.py`` with ``--flow_permutation 2 --flow_coupling 1 --learntop``.

    Per step on ``c`` channels: actnorm ``2c``; invertible 1×1 conv ``c²``; ``f``: ``l_1``
    conv3×3 ``c/2 (+1 edge) → width`` without bias + actnorm ``2·width``, ``l_2`` conv1×1
    ``width → width`` + actnorm, ``l_last`` conv2d_zeros 3×3 ``width (+1) → c`` with bias and
    logs. ``split2d_prior``: conv2d_zeros 3×3 ``c/2 (+1) → c``. ``prior``: conv2d_zeros 3×3
    ``2c (+1) → 2c`` on a map of zeros.
    """
    n, c = 0, 4 * C0  # the first squeeze
    for level in range(levels):
        half = c // 2
        step = 2 * c + c * c
        step += 9 * (half + 1) * width + 2 * width
        step += width * width + 2 * width
        step += 9 * (width + 1) * c + 2 * c
        n += depth * step
        if level < levels - 1:
            n += 9 * (half + 1) * c + 2 * c
            c = 4 * half  # split, then the next level's squeeze
    return n + 9 * (2 * c + 1) * 2 * c + 2 * (2 * c)


# ------------------------------------------------------------------------------------------
# the official counts
# ------------------------------------------------------------------------------------------


def test_flowpp_official_counts_from_their_shapes_match_the_stated_counts():
    # stated in the official files' docstrings
    assert official_flowpp_cifar10() == 31_443_440
    assert official_flowpp_imagenet32() == 168_955_724
    assert official_flowpp_cifar10(F=104, dequantization=False) == 32_324_408


def test_glow_official_counts():
    # CIFAR-10: one step at c = 12 / 24 / 48 channels has 352,044 / 435,576 / 603,504
    # parameters (c = 12: 24 + 144 + 9·7·512 + 1,024 + 512² + 1,024 + 9·513·12 + 24), 32 steps
    # per level: 11,265,408 + 13,938,432 + 19,312,128; split priors 9·7·12 + 24 = 780 and
    # 9·13·24 + 48 = 2,856; top prior 9·97·96 + 192 = 84,000. Total 44,603,604.
    assert official_glow(3, 3, 32) == 44_603_604
    assert official_glow(3, 3, 48) == 66_861_588
    assert official_glow(3, 4, 48) == 112_377_540
    # survae's small MNIST / Fashion-MNIST Glow (no official model: the official code has the
    # layers; its MNIST runs are 3-channel 32×32 copies, and the count does not depend on H, W)
    assert official_glow(1, 2, 16, width=256) == 2_873_572


# ------------------------------------------------------------------------------------------
# survae's experiments
# ------------------------------------------------------------------------------------------


#: experiment -> the official count of its model
EXPECTED = {
    "flowpp_cifar10": official_flowpp_cifar10(),
    "flowpp_imagenet32": official_flowpp_imagenet32(),
    "glow_cifar10": official_glow(3, 3, 32),
    "glow_imagenet32": official_glow(3, 3, 48),
    "glow_imagenet64": official_glow(3, 4, 48),
    "glow_mnist": official_glow(1, 2, 16, width=256),
    "glow_fashion_mnist": official_glow(1, 2, 16, width=256),
}


def _experiment(name: str) -> tuple[dict, tuple[int, int, int]]:
    """The model spec (model config merged with the experiment's ``model`` overrides) and the
    data shape an experiment config builds."""
    exp = OmegaConf.load(CONFIGS / "experiment" / f"{name}.yaml")
    overrides = {}
    for entry in exp.defaults:
        overrides.update({k.replace("override /", ""): v for k, v in entry.items()})
    cfg = OmegaConf.load(CONFIGS / "model" / f"{overrides['model']}.yaml")
    cfg = OmegaConf.merge(cfg, exp.get("model", {}))
    return OmegaConf.to_container(cfg, resolve=True), DATA_SHAPES[overrides["data"]]


def test_every_flowpp_and_glow_experiment_is_checked():
    found = {
        p.stem
        for pattern in ("flowpp_*.yaml", "glow_*.yaml")
        for p in (CONFIGS / "experiment").glob(pattern)
        # class-conditional variants (openai/glow's --ycond) have no official count
        if "conditional" not in p.stem
    }
    assert found == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_experiment_has_the_official_parameter_count(name):
    spec, shape = _experiment(name)
    with torch.device("meta"):
        model = build_model(spec, shape, 256)
    assert sum(p.numel() for p in model.parameters()) == EXPECTED[name]


def test_flowpp_affine_ablation_has_the_official_count():
    # flows/ablations/abl_nomixlog.py, "Params: 32,045,708": AffineAttnCoupling (output conv
    # to 2·C) with filters = dequant_filters = 108. Official shapes: as
    # official_flowpp_cifar10 with K = 0.
    spec, shape = _experiment("flowpp_cifar10")
    spec = {**spec, "coupling": "affine", "hidden_channels": 108, "dequant_hidden_channels": 108}
    with torch.device("meta"):
        model = build_model(spec, shape, 256)
    n = sum(p.numel() for p in model.parameters())
    assert n == 32_045_708
    kw = dict(F=108, K=0)
    official = 9 * 6 * 32 + 32 + 3 * ((9 * 64 * 32 + 32) + (9 * 64 * 64 + 64))
    official += 4 * flowpp_step(3, 32, 16, True, blocks=2, ctx=32, **kw)
    official += 4 * flowpp_step(3, 32, 16, True, blocks=10, **kw)
    official += 2 * flowpp_step(6, 16, 16, True, blocks=10, **kw)
    official += 3 * flowpp_step(12, 16, 8, True, blocks=10, **kw)
    assert n == official


def test_flowpp_no_attention_ablation_has_the_official_count():
    # flows/ablations/abl_noattn.py, "Params: 31,443,440": the attention replaced by gated_nin
    # (dense F→3F, maxout over 3, dense F→2F: the attention's parameters), so the count equals
    # the full model's.
    spec, shape = _experiment("flowpp_cifar10")
    with torch.device("meta"):
        model = build_model({**spec, "attention": "pointwise"}, shape, 256)
    assert sum(p.numel() for p in model.parameters()) == official_flowpp_cifar10() == 31_443_440


def test_flowpp_uniform_dequantization_ablation_has_the_official_count():
    # flows/ablations/abl_nodequant.py, "Params: 32,324,408" (104 filters)
    spec, shape = _experiment("flowpp_cifar10")
    spec = {**spec, "dequantization": "uniform", "hidden_channels": 104}
    with torch.device("meta"):
        model = build_model(spec, shape, 256)
    assert sum(p.numel() for p in model.parameters()) == 32_324_408
