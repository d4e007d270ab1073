"""scripts/crosscheck_official.py: the pure helpers that map official SurVAE weights onto
survae's by meaning (the script itself needs the official checkout and is run by hand)."""

import importlib.util
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location(
    "crosscheck_official", ROOT / "scripts" / "crosscheck_official.py"
)
cc = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(cc)


def test_block_layout_swaps_scale_and_shift_blocks():
    rows = torch.tensor([10.0, 11.0, 20.0, 21.0])  # official [scale_0, scale_1, shift_0, shift_1]
    assert cc.coupling_rows_to_survae(rows, "blocks").tolist() == [20.0, 21.0, 10.0, 11.0]


def test_pairs_layout_deinterleaves():
    rows = torch.tensor([10.0, 20.0, 11.0, 21.0])  # official [scale_0, shift_0, scale_1, shift_1]
    w = torch.stack([rows, rows + 100], 1)  # a weight: rows move together with their columns
    out = cc.coupling_rows_to_survae(w, "pairs")
    assert out[:, 0].tolist() == [20.0, 21.0, 10.0, 11.0]
    assert torch.equal(out[:, 1], out[:, 0] + 100)


def test_coupling_rows_errors():
    with pytest.raises(ValueError, match="odd"):
        cc.coupling_rows_to_survae(torch.zeros(3), "blocks")
    with pytest.raises(ValueError, match="unknown coupling layout 'x'.*blocks, pairs"):
        cc.coupling_rows_to_survae(torch.zeros(4), "x")


def test_mapped_coupling_output_gives_the_same_shift_and_scale():
    # official ElementwiseParams1d (interleaved): [B, P*D, L] -> [B, D, L, P], P0 scale, P1 shift
    D, L = 3, 5
    h = torch.randn(2, 2 * D, L)
    official = h.reshape(2, 2, D, L).permute(0, 2, 3, 1)
    scale_o, shift_o = official[..., 0], official[..., 1]
    ours = cc.coupling_rows_to_survae(h.transpose(0, 1), "blocks").transpose(0, 1)
    shift_s, scale_s = ours.chunk(2, dim=1)  # survae: [shift, unconstrained scale]
    assert torch.equal(shift_s, shift_o) and torch.equal(scale_s, scale_o)


def test_transformer_names():
    t = cc.transformer_key_to_survae
    assert t("in_linear.weight") == "inp.weight"
    assert t("encode.encode_l") == "pos_emb"
    assert t("layers.1.self_attn.in_proj_weight") == "layers.1.attn.in_proj.weight"
    assert t("layers.0.self_attn.in_proj_bias") == "layers.0.attn.in_proj.bias"
    assert t("layers.0.self_attn.out_proj.bias") == "layers.0.attn.out_proj.bias"
    assert t("layers.0.linear2.weight") == "layers.0.linear2.weight"
    assert t("out_linear.weight") == "out.weight" and t("out_norm.bias") == "out_norm.bias"


def test_actnorm_mapping_is_the_same_function():
    shift, log_scale = torch.randn(1, 4, 1), torch.randn(1, 4, 1)
    x = torch.randn(2, 4, 7)
    z_official = (x - shift) * torch.exp(-log_scale)
    m = cc.actnorm_to_survae(shift, log_scale)
    z_ours = (x - m["loc"].view(1, 4, 1)) * torch.exp(m["log_scale"].view(1, 4, 1))
    torch.testing.assert_close(z_official, z_ours)


def test_group_state_and_pair_in_order():
    state = {
        "base_dist.loc": torch.zeros(2),
        "transforms.3.net.0.weight": torch.zeros(4, 2),
        "transforms.0.encoder.transforms.5.weight": torch.zeros(3, 3),
        "transforms.0.encoder.base_dist.loc": torch.zeros(1),
    }
    g = cc.group_state(state, ["transforms.0.encoder.transforms"])
    assert set(g) == {"base_dist", "transforms.3", "transforms.0.encoder.transforms.5",
                      "transforms.0"}  # fmt: skip
    assert set(g["transforms.0"]) == {"encoder.base_dist.loc"}
    pairs = cc.pair_in_order([("a", torch.zeros(2, 3))], [("b", torch.zeros(6))])
    assert pairs == [("a", "b")]
    with pytest.raises(ValueError, match="shape mismatch"):
        cc.pair_in_order([("a", torch.zeros(2))], [("b", torch.zeros(3))])
    with pytest.raises(ValueError, match="1 official tensors vs 0"):
        cc.pair_in_order([("a", torch.zeros(2))], [])


def test_inputs_end_with_the_support_edges():
    x = cc._inputs("toy_abs_corners")
    edges, labels = cc.edge_inputs("toy_abs_corners")
    assert len(labels) == len(edges) and torch.equal(x[-len(edges) :], edges)
    assert [0.0, 0.5] in edges.tolist() and [4.0, 4.0] in edges.tolist()
    assert x.abs().max() <= 4.0  # the official AbsFlow's Logit asserts |x|/4 in [0, 1]
    points = cc._inputs("sort_flow")[-1]
    assert points.min() == 0.0 and points.max() == 28.0
    images = cc._inputs("maxpool_flow_cifar10")[-2:]
    assert images.min() == 0 and images.max() == 255


def test_toy_abs_flow_logit_clamps_the_edges_like_the_official_code():
    # the official Logit: x clamped to [1e-6, 1 − 1e-6], ldj = −log x − log(1 − x) there
    logit = cc._our_model("toy_abs_corners").transforms[2].double()
    x = torch.tensor([[0.0, 0.5], [1.0, 0.5]], dtype=torch.float64)  # |x| / 4 at x = (0, 2), (4, 2)
    z, ldj = logit(x)
    c = x.clamp(1e-6, 1 - 1e-6)
    torch.testing.assert_close(z, torch.log(c) - torch.log1p(-c))
    torch.testing.assert_close(ldj, (-torch.log(c) - torch.log1p(-c)).sum(1))


def test_compare_reports_each_edge_case_against_the_target():
    n = 512 + len(cc.TOY_EDGES)
    log_p = torch.zeros(n, dtype=torch.float64)
    ours = log_p.clone()
    ours[512] = 0.02  # x = (0, 0.5) off by 0.02 nats
    ours[513] = -torch.inf
    official = {"log_prob": log_p, "cumulative": log_p[:, None].clone(), "layer_names": ["L"]}
    official["log_prob"][514] = -torch.inf  # both sides -inf: no difference
    ours[514] = -torch.inf
    ours = {"log_prob": ours, "cumulative": torch.zeros(n, 1, dtype=torch.float64)}
    lines = cc.compare("toy_baseline_corners", official, ours)
    assert len(lines) == 1 + len(cc.TOY_EDGES) and "max |Δ log p| = 0.00e+00" in lines[0]
    assert "x=(0, 0.5): |Δ log p| = 2.00e-02" in lines[1] and "> target 0.001" in lines[1]
    assert "inf" in lines[2] and "> target" in lines[2]
    assert "> target" not in lines[3] and "> target" not in lines[4]
