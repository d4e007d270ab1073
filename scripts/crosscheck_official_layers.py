"""Cross-check survae's layers from the official SurVAE library families, one family at a time,
against the official code (github.com/didriknielsen/survae_flows, checkout at PATH).

    python scripts/crosscheck_official_layers.py --official PATH

The official side runs in a subprocess with the checkout first on ``sys.path`` (both packages
are called ``survae``): it draws inputs (support edges included: exact zeros, interval ends,
bin edges, far tails) and random parameters, evaluates each official layer or function in
float64 and float32 and saves inputs, parameters and results as a plain tensor dict. survae's
side loads it (``weights_only=True``), maps the parameters by meaning (the official
unit-interval splines are survae's splines on ``[-0.5, 0.5]`` shifted by 0.5; the cubic end
derivative raw values differ by ``log 2``), evaluates the same inputs and prints the largest
difference of the outputs and of the log-likelihood contributions per case and dtype.

This is a tool run by hand; nothing here is imported by survae.
"""

from __future__ import annotations

import argparse
import math
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
SEED = 4321
K = 6  # bins and mixture components
DTYPES = {"float64": torch.float64, "float32": torch.float32}
#: max |Δ| allowed per dtype (outputs and log-likelihood contributions)
TOLERANCE = {"float64": 1e-5, "float32": 1e-3}


def _edges_real() -> torch.Tensor:
    return torch.tensor([0.0, -0.0, 1e-30, -1e-30, 6.0, -6.0, 1.0, -1.0])


def _inputs(g: torch.Generator) -> dict[str, torch.Tensor]:
    """Inputs shared by both sides (float64); each has edge values in its first row."""
    real = torch.randn(15, 8, generator=g, dtype=torch.float64) * 2.5
    unit = torch.rand(15, 8, generator=g, dtype=torch.float64)
    return {
        "real": torch.cat([_edges_real().double().view(1, -1), real]),
        "positive": torch.cat(
            [torch.tensor([[1e-7, 1e-3, 0.5, 1.0, 5.0, 20.0, 1e-6, 2.0]]).double(), unit * 6]
        ),
        # the unit interval with both ends and the censored mixture's first/last bin edges
        "unit": torch.cat(
            [
                torch.tensor([[0.0, 1.0, 1 / 256, 255 / 256, 0.5, 1e-9, 1 - 1e-9, 0.25]]).double(),
                unit,
            ]
        ),
        "image": torch.randn(3, 2, 4, 4, generator=g, dtype=torch.float64),
        "context": torch.randn(16, 3, generator=g, dtype=torch.float64),
    }


def _params(g: torch.Generator) -> dict[str, torch.Tensor]:
    def randn(*shape: int, std: float = 1.0) -> torch.Tensor:
        return torch.randn(*shape, generator=g, dtype=torch.float64) * std

    return {
        "spline_w": randn(16, 8, K),
        "spline_h": randn(16, 8, K),
        "spline_h_quad": randn(16, 8, K + 1),
        "spline_d": randn(16, 8, 2),
        "mixture": torch.cat([randn(16, 8, K), randn(16, 8, K), randn(16, 8, K, std=0.5)], -1),
        "lowrank_d": torch.rand(8, generator=g, dtype=torch.float64) + 0.5,
        "lowrank_U": randn(8, 3, std=0.5),
        "lowrank_V": randn(3, 8, std=0.5),
        "lowrank_b": randn(8),
        "net_w": randn(16, 3, std=0.5),
        "net_b": randn(16, std=0.5),
        "log_scale": randn(8, std=0.3),
    }


# ============================================================================================
# Official side
# ============================================================================================
def _official_cases(inp: dict, par: dict, dt: torch.dtype) -> dict[str, dict]:
    """Each case: {"z": ..., "ldj": ...} (and "x" for inverses) from the official code."""
    from survae.transforms.bijections.functional import mixtures, splines

    from survae import distributions as D
    from survae import transforms as T
    from survae.transforms.bijections.linear_lowrank import LinearLowRank

    c = {k: v.to(dt) for k, v in inp.items()}
    p = {k: v.to(dt) for k, v in par.items()}
    out: dict[str, dict] = {}

    def layer(name: str, module, x: torch.Tensor, inverse: bool = True) -> None:
        z, ldj = module(x)
        out[name] = {"z": z, "ldj": ldj}
        if inverse:
            out[name]["x"] = module.inverse(z)

    layer("leaky_relu", T.LeakyReLU(0.1), c["real"])
    layer("sneaky_relu", T.SneakyReLU(0.1), c["real"])
    layer("tanh", T.Tanh(), c["real"])
    layer("softplus", T.Softplus(), c["real"])
    layer("softplus_inverse", T.SoftplusInverse(), c["positive"])
    lowrank = LinearLowRank(8, 3, bias=True).to(dt)
    with torch.no_grad():
        for name in ("d", "U", "V"):
            getattr(lowrank, name).copy_(p[f"lowrank_{name}"])
        lowrank.bias.copy_(p["lowrank_b"])
    layer("linear_lowrank", lowrank, c["real"], inverse=False)  # its inverse needs torch.solve
    for deg in (90, 180, 270):
        layer(f"rotate_{deg}", T.Rotate(deg, 2, 3), c["image"])
    layer("permute_axes", T.PermuteAxes([0, 2, 3, 1]), c["image"])
    layer("reshape", T.Reshape((2, 4, 4), (32,)), c["image"])
    net = torch.nn.Linear(3, 16).to(dt)
    with torch.no_grad():
        net.weight.copy_(p["net_w"])
        net.bias.copy_(p["net_b"])
    x8, ctx = c["real"], c["context"]
    z, ldj = T.ConditionalAffineBijection(net)(x8, ctx)
    out["conditional_affine"] = {"z": z, "ldj": ldj}
    mean_net = torch.nn.Linear(3, 16).to(dt)
    mean_net.load_state_dict(net.state_dict())
    mean_only = lambda v: mean_net(v)[:, :8]  # noqa: E731
    out["conditional_mean_normal"] = {
        "ldj": D.ConditionalMeanNormal(mean_only, scale=0.7).log_prob(x8, ctx)
    }
    std = D.ConditionalMeanStdNormal(mean_only, scale_shape=(8,)).to(dt)
    with torch.no_grad():
        std.log_scale.copy_(p["log_scale"])
    out["conditional_mean_std_normal"] = {"ldj": std.log_prob(x8, ctx)}
    u = c["unit"]
    for name, fn in (
        ("linear_spline", lambda v, inv: splines.linear_spline(v, p["spline_w"], inverse=inv)),
        (
            "quadratic_spline",
            lambda v, inv: splines.quadratic_spline(
                v, p["spline_w"], p["spline_h_quad"], inverse=inv
            ),
        ),
        (
            "cubic_spline",
            lambda v, inv: splines.cubic_spline(
                v, p["spline_w"], p["spline_h"], p["spline_d"][..., :1], p["spline_d"][..., 1:],
                inverse=inv,
            ),
        ),
    ):  # fmt: skip
        z, ldj = fn(u.clone(), False)
        x, _ = fn(z.clone(), True)
        out[name] = {"z": z, "ldj": ldj, "x": x}
    w, m, s = p["mixture"].split(K, -1)
    for name, fn, v in (
        ("gaussian_mixture", mixtures.gaussian_mixture_transform, c["real"]),
        ("logistic_mixture", mixtures.logistic_mixture_transform, c["real"]),
        ("censored_logistic_mixture", mixtures.censored_logistic_mixture_transform, u),
    ):
        z, ldj = fn(v, w, m, s, inverse=False)
        x = fn(z.clamp(0, 1), w, m, s, inverse=True)
        out[name] = {"z": z, "ldj": ldj, "x": x}
    img = c["image"]
    z, ldj = T.Slice(D.StandardNormal((2, 3, 4)), num_keep=1, dim=2).to(dt)(img)
    out["slice_dim2"] = {"z": z, "ldj": ldj}
    torch.manual_seed(SEED)  # the same noise on both sides
    z, ldj = T.Augment(D.StandardNormal((2, 3, 4)), x_size=4, split_dim=2).to(dt)(img)
    out["augment_dim2"] = {"z": z, "ldj": ldj}
    return out


# --------------------------------------------------------------------------------------------
# The official examples' models (examples/toy_flow.py, experiments/toy/train_aug_flow.py with
# its defaults, examples/mnist_vae.py), built on the official side with random parameters
# --------------------------------------------------------------------------------------------
def _official_example_models() -> dict[str, object]:
    from survae.nn.layers import ElementwiseParams
    from survae.nn.nets import MLP
    from torch import nn

    from survae import distributions as D
    from survae import transforms as T
    from survae.flows import Flow

    def mlp(i: int, o: int, hidden: list[int]) -> nn.Module:
        return nn.Sequential(
            MLP(i, o, hidden_units=hidden, activation="relu"), ElementwiseParams(2)
        )

    toy = []
    for k in range(4):
        toy += [T.AffineCouplingBijection(mlp(1, 2, [200, 100])), T.ActNormBijection(2)]
        toy += [T.Reverse(2)] if k < 3 else []
    aug = [T.Augment(D.StandardNormal((2,)), x_size=2)]
    for k in range(4):
        softplus = lambda s: torch.nn.functional.softplus(s)  # noqa: E731
        aug += [T.AffineCouplingBijection(mlp(2, 4, [50]), scale_fn=softplus)]
        aug += [T.Reverse(4)] if k < 3 else []
    encoder = D.ConditionalNormal(
        MLP(784, 40, hidden_units=[512, 256], activation="relu",
            in_lambda=lambda x: 2 * x.view(x.shape[0], 784) - 1)  # the example adds .float()
    )  # fmt: skip
    decoder = D.ConditionalBernoulli(
        MLP(20, 784, hidden_units=[512, 256], activation="relu",
            out_lambda=lambda x: x.view(x.shape[0], 1, 28, 28))
    )  # fmt: skip
    return {
        "toy_flow": Flow(D.StandardNormal((2,)), toy),
        "toy_aug_flow": Flow(D.StandardNormal((4,)), aug),
        "mnist_vae": Flow(D.StandardNormal((20,)), [T.VAE(encoder=encoder, decoder=decoder)]),
    }


def _example_inputs(g: torch.Generator) -> dict[str, torch.Tensor]:
    toy = torch.rand(64, 2, generator=g, dtype=torch.float64) * 7.8 - 3.9
    toy[0] = 0.0  # an exact zero
    binary = (torch.rand(4, 1, 28, 28, generator=g) < 0.3).double()
    binary[0] = 0.0  # an all-zero image
    return {"toy_flow": toy, "toy_aug_flow": toy, "mnist_vae": binary}


def _log_prob(model, x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``log p`` summed in ``dtype`` (the official ``Flow.log_prob`` accumulates in float32)."""
    total = torch.zeros(x.shape[0], dtype=dtype)
    for t in model.transforms:
        x, ldj = t(x)
        total = total + ldj.to(dtype)
    return total + model.base_dist.log_prob(x).to(dtype)


def _official_examples(inputs: dict, dt: torch.dtype) -> tuple[dict, dict]:
    models = _official_example_models()
    g = torch.Generator().manual_seed(SEED + 1)
    results, weights = {}, {}
    for name, model in models.items():
        model = model.to(dt).eval()
        with torch.no_grad():
            # small weights for the 784-input VAE, so its posterior scales stay moderate
            std = 0.02 if name == "mnist_vae" else 0.1
            for p in model.parameters():
                p.copy_(torch.randn(p.shape, generator=g, dtype=dt) * std)
            for m in model.modules():
                if hasattr(m, "initialized"):
                    m.initialized.fill_(1)
            weights[name] = {k: v.clone() for k, v in model.state_dict().items()}
            torch.manual_seed(SEED)  # the same augmentation and posterior noise on both sides
            results[name] = {"ldj": _log_prob(model, inputs[name].to(dt), dt)}
    return results, weights


def official_side(official: Path, out: Path) -> None:
    import types

    sys.path.insert(0, str(official))
    for name in ("torchvision._meta_registrations", "torchvision._autograd_registrations"):
        sys.modules.setdefault(name, types.ModuleType(name))  # see survae/runtime
    g = torch.Generator().manual_seed(SEED)
    inp, par = _inputs(g), _params(g)
    results = {dt: _official_cases(inp, par, DTYPES[dt]) for dt in DTYPES}
    examples = _example_inputs(g)
    weights = {}
    for dt in DTYPES:
        found, weights[dt] = _official_examples(examples, DTYPES[dt])
        results[dt].update(found)
    saved = {"inputs": inp, "params": par, "results": results}
    torch.save({**saved, "example_inputs": examples, "example_weights": weights}, out)


# ============================================================================================
# survae's side
# ============================================================================================
def _our_cases(inp: dict, par: dict, dt: torch.dtype) -> dict[str, dict]:
    sys.path.insert(0, str(ROOT))
    from survae import distributions as D
    from survae import transforms as T
    from survae.transforms.bijections import mixture_cdf as mix
    from survae.transforms.bijections import piecewise as pw

    c = {k: v.to(dt) for k, v in inp.items()}
    p = {k: v.to(dt) for k, v in par.items()}
    out: dict[str, dict] = {}

    def layer(name: str, module, x: torch.Tensor, inverse: bool = True) -> None:
        z, ldj = module(x)
        out[name] = {"z": z, "ldj": ldj}
        if inverse:
            out[name]["x"] = module.inverse(z)

    layer("leaky_relu", T.LeakyReLU(0.1), c["real"])
    layer("sneaky_relu", T.SneakyReLU(0.1), c["real"])
    layer("tanh", T.Tanh(), c["real"])
    layer("softplus", T.Softplus(), c["real"])
    layer("softplus_inverse", T.SoftplusInverse(), c["positive"])
    lowrank = T.LinearLowRank(8, 3, bias=True).to(dt)
    with torch.no_grad():
        for name in ("d", "U", "V"):
            getattr(lowrank, name).copy_(p[f"lowrank_{name}"])
        lowrank.bias.copy_(p["lowrank_b"])
    layer("linear_lowrank", lowrank, c["real"], inverse=False)
    for deg in (90, 180, 270):
        layer(f"rotate_{deg}", T.Rotate(deg, 2, 3), c["image"])
    layer("permute_axes", T.PermuteAxes([0, 2, 3, 1]), c["image"])
    layer("reshape", T.Reshape((2, 4, 4), (32,)), c["image"])
    net = torch.nn.Linear(3, 16).to(dt)
    with torch.no_grad():
        net.weight.copy_(p["net_w"])
        net.bias.copy_(p["net_b"])
    x8, ctx = c["real"], c["context"]
    z, ldj = T.ConditionalAffine(8, 3, net)(x8, ctx)
    out["conditional_affine"] = {"z": z, "ldj": ldj}
    mean_net = torch.nn.Linear(3, 8).to(dt)
    with torch.no_grad():
        mean_net.weight.copy_(p["net_w"][:8])
        mean_net.bias.copy_(p["net_b"][:8])
    out["conditional_mean_normal"] = {
        "ldj": D.ConditionalMeanNormal(mean_net, scale=0.7).log_prob(x8, ctx)
    }
    std = D.ConditionalMeanStdNormal(mean_net, scale_shape=(8,)).to(dt)
    with torch.no_grad():
        std.log_scale.copy_(p["log_scale"])
    out["conditional_mean_std_normal"] = {"ldj": std.log_prob(x8, ctx)}
    u = c["unit"]
    half = {"tail_bound": 0.5}  # the official unit interval, shifted by 0.5
    log2 = math.log(2.0)
    fns: dict[str, Callable] = {
        "linear_spline": lambda v, inv: pw.linear_spline(
            v, p["spline_w"], inv, min_bin_height=0.0, **half
        ),
        "quadratic_spline": lambda v, inv: pw.quadratic_spline(
            v, p["spline_w"], p["spline_h_quad"], inv, **half
        ),
        "cubic_spline": lambda v, inv: pw.cubic_spline(
            v, p["spline_w"], p["spline_h"], p["spline_d"][..., :1] + log2,
            p["spline_d"][..., 1:] + log2, inv, **half,
        ),
    }  # fmt: skip
    for name, fn in fns.items():
        z, ldj = fn(u - 0.5, False)
        x, _ = fn(z, True)
        out[name] = {"z": z + 0.5, "ldj": ldj, "x": x + 0.5}
    for name, fn, v in (
        ("gaussian_mixture", mix.gaussian_mixture_cdf, c["real"]),
        ("logistic_mixture", mix.logistic_mixture_cdf, c["real"]),
    ):
        z, ldj = fn(v, p["mixture"])
        out[name] = {"z": z, "ldj": ldj, "x": fn(z.clamp(0, 1), p["mixture"], inverse=True)[0]}
    z, ldj = mix.censored_logistic_mixture_cdf(u, p["mixture"], 256)
    x = mix.censored_logistic_mixture_cdf(z, p["mixture"], 256, inverse=True)[0]
    out["censored_logistic_mixture"] = {"z": z, "ldj": ldj, "x": x}
    img = c["image"]
    z, ldj = T.Slice(4, 1, dim=2)(img)
    out["slice_dim2"] = {"z": z, "ldj": ldj}
    torch.manual_seed(SEED)
    z, ldj = T.Augment(4, 3, dim=2)(img)
    out["augment_dim2"] = {"z": z, "ldj": ldj}
    return out


def _linears(state: dict[str, torch.Tensor], prefix: str = "") -> list[tuple[str, str]]:
    """``(weight key, bias key)`` of the linear layers under ``prefix``, in order."""
    keys = [k for k in state if k.startswith(prefix) and k.endswith(".weight")]
    keys = [k for k in keys if state[k].dim() == 2]
    # a VAE's encoder before its decoder, whatever order the modules were registered in
    keys.sort(key=lambda k: 0 if ".encoder." in k else 1 if ".decoder." in k else 2)
    return [(k, k[: -len("weight")] + "bias") for k in keys]


def map_example_state(name: str, official: dict, ours: dict) -> dict[str, torch.Tensor]:
    """survae's state dict for example ``name`` from the official one, by meaning: linear layers
    in order; coupling outputs ``[scale, shift]`` → ``[shift, scale]``; ActNorm's sign; the VAE
    encoder's ``2x − 1`` input map folded into its first layer."""
    new = dict(ours)
    theirs, mine = _linears(official), _linears(ours)
    assert len(theirs) == len(mine), (name, len(theirs), len(mine))
    for (tw, tb), (mw, mb) in zip(theirs, mine):
        new[mw], new[mb] = official[tw].clone(), official[tb].clone()
    if name == "mnist_vae":
        (w0, b0), (mw, mb) = theirs[0], mine[0]
        new[mw] = 2 * official[w0]
        new[mb] = official[b0] - official[w0].sum(1)
    else:  # each coupling's last layer: official ElementwiseParams rows [scale (n), shift (n)]
        for (tw, tb), (mw, mb) in zip(theirs, mine):
            if ours[mw].shape[0] in (2, 4):
                n = ours[mw].shape[0] // 2
                order = list(range(n, 2 * n)) + list(range(n))
                new[mw], new[mb] = official[tw][order], official[tb][order]
        actnorms = [k[: -len("shift")] for k in official if k.endswith(".shift")]
        mine_an = [k[: -len("loc")] for k in ours if k.endswith(".loc")]
        for t, m in zip(actnorms, mine_an):
            new[m + "loc"] = official[t + "shift"].reshape(-1).clone()
            new[m + "log_scale"] = -official[t + "log_scale"].reshape(-1)
            new[m + "initialized"] = torch.ones_like(ours[m + "initialized"])
    return new


def _our_examples(saved: dict, dt_name: str) -> dict[str, dict]:
    import yaml

    from survae.models import build_model

    dt = DTYPES[dt_name]
    shapes = {"toy_flow": (2,), "toy_aug_flow": (2,), "mnist_vae": (1, 28, 28)}
    out = {}
    for name, shape in shapes.items():
        spec = yaml.safe_load((ROOT / "configs" / "model" / f"{name}.yaml").read_text())
        model = build_model(spec, shape).to(dt).eval()
        official = saved["example_weights"][dt_name][name]
        model.load_state_dict(map_example_state(name, official, model.state_dict()))
        torch.manual_seed(SEED)
        x = saved["example_inputs"][name].to(dt)
        out[name] = {"ldj": _log_prob(model, x, dt)}
    return out


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach().double(), b.detach().double()
    both_inf = torch.isinf(a) & torch.isinf(b) & (a.sign() == b.sign())
    diff = torch.where(both_inf, torch.zeros_like(a), (a - b).abs())
    return float(diff.max()) if diff.numel() else 0.0


def compare(saved: dict) -> list[str]:
    """One row per case and dtype; a float32 case over the tolerance also gives both sides'
    distance from the official float64 result (which side rounds)."""
    rows = []
    reference = saved["results"]["float64"]
    for dt_name, official in saved["results"].items():
        with torch.no_grad():
            ours = _our_cases(saved["inputs"], saved["params"], DTYPES[dt_name])
            if "example_weights" in saved:
                ours.update(_our_examples(saved, dt_name))
        for case, theirs in official.items():
            diffs = {k: _max_diff(ours[case][k], v) for k, v in theirs.items()}
            worst = max(diffs.values())
            status = "ok" if worst <= TOLERANCE[dt_name] else "DIFFERS"
            parts = ", ".join(f"{k} {v:.1e}" for k, v in diffs.items())
            row = f"{case:28s} {dt_name:8s} max |Δ| {worst:.1e} ({parts}) {status}"
            if status != "ok" and dt_name != "float64":
                key = max(diffs, key=diffs.get)
                ref = reference[case][key]
                row += (
                    f"; {key} vs the float64 result: survae {_max_diff(ours[case][key], ref):.1e},"
                    f" official {_max_diff(theirs[key], ref):.1e}"
                )
            rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--official", type=Path, required=True, help="official checkout")
    parser.add_argument("--side", choices=["official"], help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.side == "official":
        official_side(args.official, args.out)
        return
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "official.pt"
        cmd = [sys.executable, __file__, "--official", str(args.official), "--side", "official"]
        subprocess.run([*cmd, "--out", str(out)], check=True, cwd=tmp)
        saved = torch.load(out, weights_only=True)
    for row in compare(saved):
        print(row)


if __name__ == "__main__":
    main()
