"""scripts/crosscheck_official_layers.py: survae's side runs on the shared inputs (edges
included) and the comparison reports per case and dtype (the official side needs the
official checkout and is run by hand)."""

import importlib.util
import math
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location(
    "crosscheck_official_layers", ROOT / "scripts" / "crosscheck_official_layers.py"
)
cc = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(cc)


def test_max_diff_treats_equal_infinities_as_equal():
    a = torch.tensor([-math.inf, 1.0, math.inf])
    assert cc._max_diff(a, torch.tensor([-math.inf, 1.5, math.inf])) == 0.5
    assert cc._max_diff(a, torch.tensor([math.inf, 1.0, math.inf])) == math.inf


def test_our_side_against_itself_is_exact_and_finite():
    g = torch.Generator().manual_seed(cc.SEED)
    inputs, params = cc._inputs(g), cc._params(g)
    with torch.no_grad():
        results = {dt: cc._our_cases(inputs, params, cc.DTYPES[dt]) for dt in cc.DTYPES}
    for case in results["float64"].values():
        assert all(torch.isfinite(v).all() for v in case.values())
    rows = cc.compare({"inputs": inputs, "params": params, "results": results})
    assert len(rows) == 2 * len(results["float64"]) and all(r.endswith(" ok") for r in rows)


def test_linear_layers_are_paired_encoder_first():
    state = {
        "t.decoder.net.0.weight": torch.zeros(2, 3),
        "t.decoder.net.0.bias": torch.zeros(2),
        "t.encoder.net.0.weight": torch.zeros(4, 5),
        "t.encoder.net.0.bias": torch.zeros(4),
        "t.actnorm.weight": torch.zeros(3),  # not a linear layer (1-D)
    }
    pairs = cc._linears(state)
    assert pairs == [
        ("t.encoder.net.0.weight", "t.encoder.net.0.bias"),
        ("t.decoder.net.0.weight", "t.decoder.net.0.bias"),
    ]
