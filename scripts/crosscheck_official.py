"""Cross-check survae's SurVAE experiment models against the official SurVAE Flows code.

    python scripts/crosscheck_official.py --official PATH [--experiments NAME ...]

For each experiment the official model (from a checkout of github.com/didriknielsen/survae_flows
at PATH) and survae's model are built, each in its own subprocess (both packages are called
``survae``). The official side fills its zero-initialised parameters with small random values
(so a wrong weight layout cannot hide behind zeros), evaluates log p on fixed inputs layer by
layer and saves its weights, inputs and results as a plain tensor dict. survae's side loads it
(``weights_only=True``), maps the official weights onto its own model *by meaning* (the pure
helpers below: coupling output rows, ActNorm sign, positional-embedding shape, shuffles,
the dequantization flow's reversed layer order), evaluates the same inputs with the same random
seed and prints max |Δ log p| in nats for the whole model and the worst layer boundary,
then each support-edge input (:func:`edge_inputs`: exact zeros, interval bounds) on its own
line, marked where it exceeds the per-case target (1e-3 nats in float32, 1e-5 in float64).

This is a tool run by hand; nothing here is imported by survae.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
SEED = 1234
FILL_STD = 0.05
#: ``--double``: both sides evaluate in float64, so what remains is a real difference rather
#: than float32 rounding (log p of a CIFAR-10 image is ~10^4 nats: float32 rounds at ~1e-3)
DTYPE = {"value": torch.float32}
#: speed options of survae's side (``--fused-attention``)
SPEED = {"fused_attention": False}

#: experiment -> description; the model builders below follow the official scripts named here
EXPERIMENTS: dict[str, str] = {
    "toy_abs_checkerboard": "experiments/toy/train_abs_unif.py (ElementAbsSurjection, uniform)",
    "toy_baseline_checkerboard": "experiments/toy/train_flow.py (scale_fn exp)",
    "toy_abs_corners": "experiments/toy/train_abs_flow.py (scale_fn softplus)",
    "toy_baseline_corners": "experiments/toy/train_flow.py (scale_fn softplus)",
    "sort_flow": "experiments/point_cloud/train_sort_flow.py (32 steps)",
    "permute_flow": "experiments/point_cloud/train_perm_flow.py (32 steps)",
    "maxpool_flow_cifar10": "experiments/image/model/pool_flow.py (--pooling max, CIFAR-10)",
    "slice_flow_cifar10": "experiments/image/model/pool_flow.py (--pooling none, CIFAR-10)",
}


# ============================================================================================
# Pure mapping helpers (unit-tested in tests/test_crosscheck_official.py)
# ============================================================================================
def coupling_rows_to_survae(t: torch.Tensor, layout: str) -> torch.Tensor:
    """Reorder a coupling network's output rows (dim 0 of its last weight or bias) from the
    official layout to survae's ``[shift (D), unconstrained scale (D)]``.

    ``layout="blocks"``: official ``ElementwiseParams``/``ElementwiseParams1d`` (interleaved
    mode), rows ``[scale (D), shift (D)]``; ``"pairs"``: ``ElementwiseParams2d`` in sequential
    mode, rows ``[scale_0, shift_0, scale_1, shift_1, …]``.
    """
    if t.shape[0] % 2:
        raise ValueError(f"coupling output has an odd number of rows: {tuple(t.shape)}")
    if layout == "blocks":
        half = t.shape[0] // 2
        return torch.cat([t[half:], t[:half]], 0)
    if layout == "pairs":
        return torch.cat([t[1::2], t[0::2]], 0)
    raise ValueError(f"unknown coupling layout {layout!r}; valid: blocks, pairs")


#: official transformer parameter names -> survae's (PositionalDenseTransformer/DenseTransformer)
_TRANSFORMER_NAMES: list[tuple[str, str]] = [
    (r"^in_linear\.", "inp."),
    (r"^encode\.encode_l$", "pos_emb"),
    (r"^layers\.(\d+)\.self_attn\.in_proj_(weight|bias)$", r"layers.\1.attn.in_proj.\2"),
    (r"^layers\.(\d+)\.self_attn\.out_proj\.", r"layers.\1.attn.out_proj."),
    (r"^out_linear\.", "out."),
]


def transformer_key_to_survae(key: str) -> str:
    """Name of an official point-cloud transformer parameter in survae's ``Transformer``
    (``linear1``, ``linear2``, ``norm1``, ``norm2`` and ``out_norm`` keep their names)."""
    for pattern, repl in _TRANSFORMER_NAMES:
        new, n = re.subn(pattern, repl, key)
        if n:
            return new
    return key


def actnorm_to_survae(shift: torch.Tensor, log_scale: torch.Tensor) -> dict[str, torch.Tensor]:
    """Official ActNorm ``z = (x − shift)·e^(−log_scale)`` as survae's
    ``z = (x − loc)·e^(log_scale)``: ``loc = shift``, ``log_scale = −log_scale`` (flattened)."""
    return {"loc": shift.reshape(-1).clone(), "log_scale": -log_scale.reshape(-1)}


def pair_in_order(
    official: Sequence[tuple[str, torch.Tensor]], ours: Sequence[tuple[str, torch.Tensor]]
) -> list[tuple[str, str]]:
    """Pair two equally long lists of named tensors in order, checking every shape."""
    if len(official) != len(ours):
        raise ValueError(
            f"{len(official)} official tensors vs {len(ours)} survae tensors: "
            f"{[k for k, _ in official][:4]}… / {[k for k, _ in ours][:4]}…"
        )
    pairs = []
    for (ko, vo), (ks, vs) in zip(official, ours):
        if vo.numel() != vs.numel():
            raise ValueError(
                f"shape mismatch: official {ko} {tuple(vo.shape)} vs {ks} {tuple(vs.shape)}"
            )
        pairs.append((ko, ks))
    return pairs


def group_state(state: dict[str, torch.Tensor], depth_keys: Sequence[str]) -> dict[str, dict]:
    """Split a state dict into groups ``prefix -> {rest: tensor}``: keys starting with one of
    ``depth_keys`` (e.g. ``"transforms.0.encoder.transforms"``) are grouped one level below it
    (``…transforms.3``), every other key by its first two components (``transforms.7``,
    ``base_dist.loc`` → ``base_dist``)."""
    groups: dict[str, dict] = {}
    for key, value in state.items():
        for deep in sorted(depth_keys, key=len, reverse=True):
            if key.startswith(deep + "."):
                idx, rest = key[len(deep) + 1 :].split(".", 1)
                prefix = f"{deep}.{idx}"
                break
        else:
            parts = key.split(".")
            if parts[0] == "transforms":
                prefix, rest = ".".join(parts[:2]), ".".join(parts[2:])
            else:
                prefix, rest = parts[0], ".".join(parts[1:])
        groups.setdefault(prefix, {})[rest] = value
    return groups


# ============================================================================================
# Official side (runs in a subprocess with the official checkout first on sys.path)
# ============================================================================================
def _official_imports(official: Path) -> None:
    import types

    sys.path.insert(0, str(official))
    # torchvision built against CUDA torch fails at import on CPU torch (shared/README.md)
    for name in ("torchvision._meta_registrations", "torchvision._autograd_registrations"):
        sys.modules.setdefault(name, types.ModuleType(name))


def _official_model(name: str, official: Path):
    from survae.nn.layers import ElementwiseParams, ElementwiseParams1d, scale_fn
    from survae.nn.nets import MLP
    from torch import nn

    from survae.distributions import StandardNormal, StandardUniform  # official package
    from survae.flows import Flow
    from survae.transforms import (
        ActNormBijection1d,
        AffineCouplingBijection,
        Logit,
        PermuteAxes,
        Reverse,
        ScalarAffineBijection,
        Shuffle,
        SimpleAbsSurjection,
        SimpleSortSurjection,
        StochasticPermutation,
    )

    if name.startswith("toy_"):
        sys.path.insert(1, str(official / "experiments/toy"))
        from layers import ElementAbsSurjection, ScaleBijection, ShiftBijection

        if name == "toy_abs_checkerboard":
            classifier = MLP(2, 1, hidden_units=[200, 100], activation="relu",
                             out_lambda=lambda x: x.view(-1))  # fmt: skip
            return Flow(StandardUniform((2,)), [
                ElementAbsSurjection(classifier=classifier),
                ShiftBijection(shift=torch.tensor([[0.0, 4.0]])),
                ScaleBijection(scale=torch.tensor([[1 / 4, 1 / 8]])),
            ])  # fmt: skip
        fn = "exp" if name.endswith("checkerboard") else "softplus"
        transforms = []
        if name.startswith("toy_abs"):
            transforms += [SimpleAbsSurjection(), ScaleBijection(torch.tensor([[1 / 4, 1 / 4]])),
                           Logit()]  # fmt: skip
        for _ in range(4):
            net = nn.Sequential(MLP(1, 2, hidden_units=[200, 100], activation="relu"),
                                ElementwiseParams(2))  # fmt: skip
            transforms += [AffineCouplingBijection(net, scale_fn=scale_fn(fn)), Reverse(2)]
        return Flow(StandardNormal((2,)), transforms[:-1])

    if name in ("sort_flow", "permute_flow"):
        sys.path.insert(1, str(official / "experiments/point_cloud"))
        from nets import DenseTransformer, PositionalDenseTransformer

        D, L, P, d = 2, 50, 2, 64
        sort = name == "sort_flow"
        kw = dict(d_model=d, nhead=8, num_layers=2, dim_feedforward=4 * d, dropout=0.0,
                  activation="gelu")  # fmt: skip
        transforms = [
            PermuteAxes((0, 2, 1)),
            ScalarAffineBijection(scale=1 / 28, shift=-0.5),
            SimpleSortSurjection(dim=2, lambd=lambda x: x[:, 0, :]) if sort
            else StochasticPermutation(dim=2),
        ]  # fmt: skip
        for _ in range(32):
            net = nn.Sequential(DenseTransformer(d_input=D // 2, d_output=P * D // 2, **kw),
                                ElementwiseParams1d(P))  # fmt: skip
            transforms += [AffineCouplingBijection(net, split_dim=1, scale_fn=scale_fn("softplus")),
                           Reverse(D, dim=1)]  # fmt: skip
            if sort:
                point_net = PositionalDenseTransformer(l_input=L // 2, d_input=D, d_output=P * D,
                                                       **kw)  # fmt: skip
            else:
                point_net = DenseTransformer(d_input=D, d_output=P * D, **kw)
            net = nn.Sequential(point_net, ElementwiseParams1d(P))
            transforms += [AffineCouplingBijection(net, split_dim=2, scale_fn=scale_fn("softplus")),
                           Shuffle(L, dim=2) if sort else StochasticPermutation(dim=2),
                           ActNormBijection1d(2)]  # fmt: skip
        return Flow(StandardNormal((D, L)), transforms)

    if name in ("maxpool_flow_cifar10", "slice_flow_cifar10"):
        sys.path.insert(1, str(official / "experiments/image"))
        from model.pool_flow import PoolFlow

        return PoolFlow(data_shape=(3, 32, 32), num_bits=8, num_scales=2, num_steps=12,
                        actnorm=False, pooling="max" if name.startswith("maxpool") else "none",
                        dequant="flow", dequant_steps=4, dequant_context=32, densenet_blocks=1,
                        densenet_channels=64, densenet_depth=10, densenet_growth=64,
                        dropout=0.0, gated_conv=True)  # fmt: skip
    raise KeyError(name)


#: support-edge inputs appended to the random ones (within the official toy AbsFlow's ±4, whose
#: Logit asserts its input |x|/4 lies in [0, 1]): exact zeros (the abs surjections' fold point)
#: and the interval bounds (Logit input 0 and 1, the uniform base's bounds 0 and 1)
TOY_EDGES = [(0.0, 0.5), (0.0, 0.0), (0.5, 0.0), (4.0, 0.5), (-4.0, -0.5), (0.5, -4.0),
             (0.5, 4.0), (4.0, 4.0), (-4.0, -4.0)]  # fmt: skip
#: point-set edges: one set whose first points lie on the corners and sides of [0, 28]²
#: (no two share a first coordinate, so the sort order is unambiguous)
POINT_EDGES = [(0.0, 0.0), (28.0, 28.0), (14.0, 0.0), (7.0, 28.0), (21.0, 0.0)]


def edge_inputs(name: str) -> tuple[torch.Tensor, list[str]]:
    """Inputs on the support edges of experiment ``name`` and a label for each."""
    if name.startswith("toy_"):
        return torch.tensor(TOY_EDGES), [f"x=({a:g}, {b:g})" for a, b in TOY_EDGES]
    if name in ("sort_flow", "permute_flow"):
        x = torch.rand(1, 50, 2, generator=torch.Generator().manual_seed(2)) * 28
        x[0, : len(POINT_EDGES)] = torch.tensor(POINT_EDGES)
        return x, ["points on the edges of [0, 28]²"]
    x = torch.zeros(2, 3, 32, 32, dtype=torch.long)
    x[1] = 255
    x[0, :, 16:] = 255
    return x, ["8-bit image, top half 0, bottom half 255", "8-bit image, all 255"]


def _inputs(name: str) -> torch.Tensor:
    """The random inputs followed by :func:`edge_inputs`."""
    g = torch.Generator().manual_seed(0)
    if name.startswith("toy_"):
        x = torch.rand(512, 2, generator=g) * 7.8 - 3.9
    elif name in ("sort_flow", "permute_flow"):
        x = torch.rand(8, 50, 2, generator=g) * 28
    else:
        x = torch.randint(0, 256, (2, 3, 32, 32), generator=g)
    return torch.cat([x, edge_inputs(name)[0].to(x.dtype)])


def _per_layer(model, x: torch.Tensor, call: Callable) -> dict[str, torch.Tensor]:
    """log p and the cumulative contribution after every top-level layer (same seed both sides)."""
    torch.manual_seed(SEED)
    total = torch.zeros(x.shape[0], dtype=torch.float64)
    cum = []
    with torch.no_grad():
        for t in model.transforms:
            x, ldj = call(t, x.clone())
            total = total + ldj.double()
            cum.append(total.clone())
        log_p = total + model.base_dist.log_prob(x).double()
    return {"log_prob": log_p, "cumulative": torch.stack(cum, 1)}


class _Rescale8bit(torch.nn.Module):
    """``2x / 255 − 1`` in float64 (the official dequantizer's input scaling)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 2 * x.double() / 255 - 1


def official_side(name: str, official: Path, out: Path) -> None:
    _official_imports(official)
    torch.manual_seed(0)
    model = _official_model(name, official).eval().to(DTYPE["value"])
    if "cifar" in name and DTYPE["value"] == torch.float64:
        # the official context net casts the 8-bit input with .float(): cast to float64 instead
        model.transforms[0].encoder.context_init[0] = _Rescale8bit()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            if torch.count_nonzero(p) == 0:
                p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * FILL_STD)
        for m in model.modules():
            if hasattr(m, "initialized"):
                m.initialized.fill_(1.0)
    x = _inputs(name)
    x = x if "cifar" in name else x.to(DTYPE["value"])
    res = _per_layer(model, x, lambda t, v: t(v))
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    layers = [type(t).__name__ for t in model.transforms]
    params = [k for k, _ in model.named_parameters()]
    torch.save({"state": state, "params": params, "x": x, **res, "layer_names": layers}, out)
    print(f"official {name}: {sum(p.numel() for p in model.parameters()):,} parameters")


# ============================================================================================
# survae side
# ============================================================================================
def _model_config(name: str) -> dict:
    """survae's model config of the experiment: ``configs/model/*.yaml`` with the experiment's
    ``model:`` overrides (what ``run.py experiment=…`` builds)."""
    from omegaconf import OmegaConf

    def load(path: Path) -> dict:
        cfg = OmegaConf.to_container(OmegaConf.load(path))
        return cfg if isinstance(cfg, dict) else {}

    experiment = {
        "toy_abs_checkerboard": "abs_flow_checkerboard",
        "toy_baseline_checkerboard": "plain_flow_checkerboard",
        "toy_abs_corners": "abs_flow_corners",
        "toy_baseline_corners": "plain_flow_corners",
        "sort_flow": "sort_flow_spatial_mnist",
        "permute_flow": "permute_flow_spatial_mnist",
        "maxpool_flow_cifar10": "maxpool_flow_cifar10",
        "slice_flow_cifar10": "slice_flow_cifar10",
    }[name]
    exp = load(ROOT / "configs/experiment" / f"{experiment}.yaml")
    model_name = next(d["override /model"] for d in exp["defaults"] if "override /model" in d)
    model = load(ROOT / "configs/model" / f"{model_name}.yaml")
    for parent in model.pop("defaults", []):  # e.g. slice_flow: maxpool_flow's values first
        if isinstance(parent, str) and parent != "_self_":
            model = {**load(ROOT / "configs/model" / f"{parent}.yaml"), **model}
    return {**model, **exp.get("model", {})}


def _our_model(name: str):
    from survae.models import build_model

    if name.startswith("toy_"):
        return build_model(_model_config(name), (2,))
    points = name in ("sort_flow", "permute_flow")
    return build_model(_model_config(name), (50, 2) if points else (3, 32, 32))


def _alignment(name: str, n_official: int, n_ours: int) -> list[tuple[int, int]]:
    """(official layer index, survae layer index) after which both models are in the same state."""
    if name == "toy_abs_checkerboard":  # official shift + scale = survae feature_affine
        return [(0, 0), (2, 1)]
    if name in ("sort_flow", "permute_flow"):  # official scalar affine = survae scale + shift
        return [(0, 0)] + [(i, i + 1) for i in range(1, n_official)]
    if n_official != n_ours:
        raise ValueError(f"{name}: {n_official} official layers vs {n_ours} survae layers")
    return [(i, i) for i in range(n_official)]


def _layer_pairs(name: str, layer_names: list[str], n_ours: int) -> list[tuple[int, int]]:
    """(official, survae) indices of corresponding layers that hold weights."""
    if name == "toy_abs_checkerboard":
        return [(0, 0)]
    shift = 1 if name in ("sort_flow", "permute_flow") else 0
    return [(i, i + (shift if i >= 1 else 0)) for i in range(len(layer_names))]


def map_official_state(
    name: str,
    official_state: dict,
    official_params: Sequence[str],
    layer_names: list[str],
    model: torch.nn.Module,
) -> dict[str, torch.Tensor]:
    """survae's state dict for ``model`` holding the official weights, mapped by meaning:
    every official parameter (``official_params``), and the fixed shuffles (buffers)."""
    new = dict(model.state_dict())
    ours = {k: v.detach() for k, v in model.named_parameters()}
    deep_o = ["transforms.0.encoder.transforms"]
    deep_s = ["transforms.0.encoder.transforms"]
    go = group_state({k: official_state[k] for k in official_params}, deep_o)
    gs = group_state(ours, deep_s)
    layout = "pairs" if "cifar" in name else "blocks"

    def put(o_prefix: str, s_prefix: str, kind: str) -> None:
        o_group, s_group = go.get(o_prefix, {}), gs.get(s_prefix, {})
        if kind == "actnorm":
            mapped = actnorm_to_survae(o_group["shift"], o_group["log_scale"])
            for k, v in mapped.items():
                new[f"{s_prefix}.{k}"] = v.reshape(s_group[k].shape)
            return
        if kind == "shuffle":
            perm = official_state[f"{o_prefix}.permutation"]
            new[f"{s_prefix}.perm"] = perm.clone()
            new[f"{s_prefix}.inverse_perm"] = torch.argsort(perm)
            return
        o_items, s_items = list(o_group.items()), list(s_group.items())
        if kind == "transformer":
            by_name = {transformer_key_to_survae(k.split(".", 2)[2]): k for k, _ in o_items}
            pairs = [(by_name[ks.split(".", 1)[1]], ks) for ks, _ in s_items]
            if len(pairs) != len(o_items):
                raise ValueError(f"{o_prefix}: {len(o_items)} official vs {len(pairs)} tensors")
        else:
            pairs = pair_in_order(o_items, s_items)
        last = {pairs[-2][1], pairs[-1][1]} if kind in ("coupling", "transformer") else set()
        for ko, ks in pairs:
            v = o_group[ko]
            if ks in last:
                v = coupling_rows_to_survae(v, layout)
            new[f"{s_prefix}.{ks}"] = v.reshape(s_group[ks].shape).clone()

    def kind_of(cls_name: str) -> str:
        if "ActNorm" in cls_name:
            return "actnorm"
        if cls_name == "Shuffle":
            return "shuffle"
        if "Coupling" in cls_name:
            return "transformer" if name in ("sort_flow", "permute_flow") else "coupling"
        return "plain"

    for io, is_ in _layer_pairs(name, layer_names, len(model.transforms)):
        cls = layer_names[io]
        if cls == "VariationalDequantization":
            # the dequantization flow: survae lists its layers in the opposite (inference) order
            o_layers = sorted({p for p in go if p.startswith(deep_o[0])},
                              key=lambda p: int(p.rsplit(".", 1)[1]))  # fmt: skip
            s_layers = sorted({p for p in gs if p.startswith(deep_s[0])},
                              key=lambda p: int(p.rsplit(".", 1)[1]))  # fmt: skip
            o_layers = [p for p in o_layers if go[p]]
            for op, sp in zip(reversed(o_layers), s_layers):
                is_coupling = any("net" in k for k in go[op])
                put(op, sp, "coupling" if is_coupling else "plain")
            put("transforms.0", "transforms.0", "plain")  # encoder base + context net
            continue
        prefix_o, prefix_s = f"transforms.{io}", f"transforms.{is_}"
        if prefix_o in go or cls == "Shuffle":
            put(prefix_o, prefix_s, kind_of(cls))
    if "base_dist" in go:
        put("base_dist", "base_dist", "plain")
    return new


def our_side(name: str, src: Path, out: Path) -> None:
    sys.path.insert(0, str(ROOT))
    import survae  # noqa: F401  (registers everything)
    from survae.transforms.bijections.actnorm import ActNorm

    data = torch.load(src, weights_only=True)
    if "cifar" in name:  # survae reads 8-bit input in the default dtype
        torch.set_default_dtype(DTYPE["value"])
    torch.manual_seed(0)
    model = _our_model(name).eval().to(DTYPE["value"])
    model.load_state_dict(
        map_official_state(name, data["state"], data["params"], data["layer_names"], model)
    )
    for m in model.modules():
        if isinstance(m, ActNorm):
            m.initialized.fill_(True)
    if SPEED["fused_attention"]:
        from survae.runtime.speed import set_fused_attention

        set_fused_attention(model)
    x = data["x"].to(torch.uint8) if "cifar" in name else data["x"].to(DTYPE["value"])
    res = _per_layer(model, x, lambda t, v: t(v))
    torch.save(res, out)


# ============================================================================================
# Driver
# ============================================================================================
#: per-case targets in nats (float32 rounds a ~2·10⁴-nat image log-likelihood at ~1e-3)
TARGET = {torch.float32: 1e-3, torch.float64: 1e-5}


def _worst_step(name: str, official: dict, ours: dict, rows: slice) -> tuple[float, str]:
    """The largest difference one layer boundary adds over ``rows``, and that layer."""
    n_o, n_s = official["cumulative"].shape[1], ours["cumulative"].shape[1]
    worst, where = 0.0, "-"
    prev = torch.zeros_like(official["log_prob"][rows])
    for io, is_ in _alignment(name, n_o, n_s):
        diff = official["cumulative"][rows, io] - ours["cumulative"][rows, is_]
        step = (diff - prev).abs().max().item()  # what this layer adds to the difference
        if not step <= worst:  # NaN (an infinite log p on one side only) counts as worst
            worst, where = step, f"official layer {io} ({official['layer_names'][io]})"
        if step != step:
            break
        prev = diff
    return worst, where


def compare(name: str, official: dict, ours: dict) -> list[str]:
    """One line for the random inputs, then one per edge case (``> target`` where exceeded)."""
    labels = edge_inputs(name)[1]
    n_random = official["log_prob"].shape[0] - len(labels)
    target = TARGET[DTYPE["value"]]
    delta = official["log_prob"] - ours["log_prob"]
    both_inf = (official["log_prob"] == ours["log_prob"]) & official["log_prob"].isinf()
    delta = delta.abs().masked_fill(both_inf, 0.0)
    whole = delta[:n_random].max().item()
    worst, where = _worst_step(name, official, ours, slice(0, n_random))
    lines = [f"{name:28s} max |Δ log p| = {whole:.2e} nats   worst layer step {worst:.2e} at "
             f"{where}"]  # fmt: skip
    for i, label in enumerate(labels):
        row = n_random + i
        d = delta[row].item()
        flag = "" if d <= target else f"   > target {target:g}"
        lp_o, lp_s = official["log_prob"][row].item(), ours["log_prob"][row].item()
        step, at = _worst_step(name, official, ours, slice(row, row + 1))
        at = f", worst step at {at}" if step > 0 else (", base distribution" if d > 0 else "")
        lp = f"official {lp_o:.6g}, survae {lp_s:.6g}"
        lines.append(f"  edge {label}: |Δ log p| = {d:.2e} ({lp}{at}){flag}")
    return lines


def run(official: Path, names: Sequence[str]) -> list[str]:
    lines = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            o_file, s_file = Path(tmp) / f"{name}_official.pt", Path(tmp) / f"{name}_ours.pt"
            script = str(Path(__file__).resolve())
            base = [sys.executable, script, "--experiments", name]
            base += ["--double"] if DTYPE["value"] == torch.float64 else []
            base += ["--fused-attention"] if SPEED["fused_attention"] else []
            subprocess.run([*base, "--official", str(official), "--side", "official",
                            "--file", str(o_file)], check=True, cwd=tmp)  # fmt: skip
            subprocess.run([*base, "--side", "ours", "--file", str(o_file), "--out", str(s_file)],
                           check=True, cwd=tmp)  # fmt: skip
            o = torch.load(o_file, weights_only=True)
            o = {k: o[k] for k in ("log_prob", "cumulative", "layer_names")}
            got = compare(name, o, torch.load(s_file, weights_only=True))
            print("\n".join(got), flush=True)
            lines += got
    return lines


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--official", type=Path, help="checkout of the official SurVAE code")
    parser.add_argument("--experiments", nargs="+", default=list(EXPERIMENTS),
                        choices=list(EXPERIMENTS))  # fmt: skip
    parser.add_argument("--double", action="store_true", help="evaluate both sides in float64")
    parser.add_argument(
        "--fused-attention",
        action="store_true",
        help="survae's side with speed.fused_attention (point-set models)",
    )
    parser.add_argument("--side", choices=("official", "ours"), help=argparse.SUPPRESS)
    parser.add_argument("--file", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.double:
        DTYPE["value"] = torch.float64
    SPEED["fused_attention"] = args.fused_attention
    torch.set_num_threads(max(1, torch.get_num_threads()))
    if args.side == "official":
        official_side(args.experiments[0], args.official.resolve(), args.file)
    elif args.side == "ours":
        our_side(args.experiments[0], args.file, args.out)
    else:
        if args.official is None or not (args.official / "survae" / "flows").exists():
            parser.error(f"--official must be a checkout of the official SurVAE code, got "
                         f"{args.official}")  # fmt: skip
        run(args.official.resolve(), args.experiments)


if __name__ == "__main__":
    main()
