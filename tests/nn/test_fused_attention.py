"""The fused CPU attention kernel (speed.fused_attention) against the textbook formula, against
the PyTorch path of SelfAttention, and as a speed option of a point-set model."""

from __future__ import annotations

import pytest
import torch

from survae.nn import fused_attention as FA
from survae.nn.transformer import SelfAttention


@pytest.fixture(scope="module")
def ext():
    """The built kernel; skipped only where there is no C++ compiler or ninja to build it (a
    failing build on a machine that has them fails the tests)."""
    import shutil

    if not any(shutil.which(c) for c in ("c++", "g++", "clang++")) or not shutil.which("ninja"):
        pytest.skip("no C++ compiler or ninja: the fused attention kernel cannot be built")
    return FA.load_extension()


def reference(qkv, heads, keep=None, scale=1.0):
    """softmax(q kᵀ/√d) v per head, query-major (``keep`` is [B, heads, key, query])."""
    B, N, d3 = qkv.shape
    d = d3 // 3
    q, k, v = qkv.reshape(B, N, 3, heads, d // heads).permute(2, 0, 3, 1, 4).unbind(0)
    w = torch.softmax(q @ k.transpose(-2, -1) / (d // heads) ** 0.5, dim=-1)
    if keep is not None:
        w = w * keep.transpose(-2, -1) * scale
    return (w @ v).transpose(1, 2).reshape(B, N, d)


def apply(qkv, heads, keep=None, scale=1.0):
    return FA._attention_forward(qkv, heads, keep, scale)[0]


@pytest.mark.parametrize("head_size", FA.HEAD_SIZES)
@pytest.mark.parametrize("N", [1, 7, 16, 17, 50])
def test_matches_formula_float64(ext, N, head_size):
    torch.manual_seed(N)
    heads = 2
    qkv = torch.randn(3, N, 3 * heads * head_size, dtype=torch.float64) * 2
    torch.testing.assert_close(apply(qkv, heads), reference(qkv, heads), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("N", [1, 7, 17])
@pytest.mark.parametrize("dropped", [False, True])
def test_gradcheck(ext, N, dropped):
    torch.manual_seed(0)
    heads = 2
    qkv = torch.randn(2, N, 3 * heads * 8, dtype=torch.float64, requires_grad=True)
    keep = torch.rand(2, heads, N, N) > 0.3 if dropped else None
    scale = 1 / 0.7 if dropped else 1.0
    assert torch.autograd.gradcheck(lambda t: apply(t, heads, keep, scale), (qkv,))
    out = apply(qkv, heads, keep, scale)
    torch.testing.assert_close(out, reference(qkv, heads, keep, scale), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("N", [25, 50])
def test_float32_as_accurate_as_pytorch(ext, N):
    """In float32 (the vectorised exponential and the float32 reductions) the kernel is as close
    to the float64 result as PyTorch's own float32 attention is."""
    torch.manual_seed(1)
    heads = 8
    qkv64 = (torch.randn(16, N, 3 * 64, dtype=torch.float64) * 3).requires_grad_()
    grad = torch.randn(16, N, 64, dtype=torch.float64)
    exact = reference(qkv64, heads)
    (exact_grad,) = torch.autograd.grad(exact, qkv64, grad)
    errors = {}
    for name, fn in (("kernel", apply), ("pytorch", reference)):
        qkv = qkv64.detach().float().requires_grad_()
        out = fn(qkv, heads)
        (g,) = torch.autograd.grad(out, qkv, grad.float())
        errors[name] = (
            (out.double() - exact).abs().max().item(),
            (g.double() - exact_grad).abs().max().item(),
        )
    scale = exact.abs().max().item(), exact_grad.abs().max().item()
    for i in range(2):
        assert errors["kernel"][i] < 1e-5 * scale[i]
        assert errors["kernel"][i] < 10 * errors["pytorch"][i] + 1e-6 * scale[i]


@pytest.mark.parametrize("dropout", [0.0, 0.3])
def test_self_attention_paths_agree(ext, dropout):
    """SelfAttention gives the same outputs and gradients fused or not, draws the same dropout
    mask from the generator, and leaves the generator in the same state."""
    torch.manual_seed(0)
    layer = SelfAttention(64, 8, dropout=dropout).train()
    x = torch.randn(4, 50, 64)
    results = []
    for fused in (False, True):
        layer.fused = fused
        layer.zero_grad()
        torch.manual_seed(7)
        xi = x.clone().requires_grad_()
        out = layer(xi)
        out.square().sum().backward()
        results.append((out, xi.grad, layer.in_proj.weight.grad.clone(), torch.get_rng_state()))
    (o0, g0, w0, s0), (o1, g1, w1, s1) = results
    torch.testing.assert_close(o1, o0, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(g1, g0, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(w1, w0, rtol=1e-4, atol=1e-4)
    assert torch.equal(s0, s1)
    if dropout:
        layer.fused = True
        torch.manual_seed(7)
        other = layer(x)
        torch.manual_seed(8)
        assert not torch.allclose(layer(x), other)  # the mask does come from the generator


def test_threads_split_the_work_without_changing_it(ext):
    torch.manual_seed(2)
    qkv = torch.randn(8, 50, 3 * 64, requires_grad=True)
    keep = torch.rand(8, 8, 50, 50) > 0.1
    grad = torch.randn(8, 50, 64)
    threads = torch.get_num_threads()
    results = []
    try:
        for n in (1, 2):
            torch.set_num_threads(n)
            out = apply(qkv, 8, keep, 1 / 0.9)
            (g,) = torch.autograd.grad(out, qkv, grad)
            results.append((out, g))
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(results[0][0], results[1][0]) and torch.equal(results[0][1], results[1][1])


def test_bad_inputs_are_named(ext):
    qkv = torch.randn(2, 5, 3 * 16)
    with pytest.raises(RuntimeError, match=r"mask must be \[B, heads, N, N\]"):
        ext.attention_forward(qkv, 2, torch.ones(2, 2, 5, 4, dtype=torch.bool), 1.0)
    with pytest.raises(RuntimeError, match="bool"):
        ext.attention_forward(qkv, 2, torch.ones(2, 2, 5, 5), 1.0)
    with pytest.raises(RuntimeError, match="multiple of 3 \\* heads"):
        ext.attention_forward(qkv, 5, None, 1.0)
    with pytest.raises(RuntimeError, match="head size 3"):
        ext.attention_forward(torch.randn(2, 5, 18), 2, None, 1.0)
    out, lse = ext.attention_forward(qkv, 2, None, 1.0)
    with pytest.raises(RuntimeError, match="gradient must be"):
        ext.attention_backward(qkv, 2, None, 1.0, lse, torch.randn(2, 5, 8))


def test_flop_counter_sees_the_same_model_flops(ext):
    from torch.utils.flop_counter import FlopCounterMode

    layer = SelfAttention(64, 8)
    x = torch.randn(4, 50, 64, requires_grad=True)
    counts = []
    for fused in (False, True):
        layer.fused = fused
        with FlopCounterMode(display=False) as counter:
            layer(x).sum().backward()
        counts.append(counter.get_total_flops())
    assert counts[0] == counts[1] > 0


def test_compiles_into_one_graph(ext):
    """The kernel is a registered operator: torch.compile keeps it inside its graph."""
    torch.manual_seed(0)
    layer = SelfAttention(64, 8)
    layer.fused = True
    x = torch.randn(4, 50, 64, requires_grad=True)
    expected = layer(x)
    (expected_grad,) = torch.autograd.grad(expected.square().sum(), x)
    torch._dynamo.reset()
    try:
        compiled = torch.compile(layer, fullgraph=True, backend="aot_eager")
        out = compiled(x)
        (grad,) = torch.autograd.grad(out.square().sum(), x)
    finally:
        torch._dynamo.reset()
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(grad, expected_grad)


def test_unsupported_inputs_use_pytorch(ext):
    layer = SelfAttention(6, 2)  # head size 3: no kernel instance
    layer.fused = True
    x = torch.randn(2, 5, 6)
    assert not FA.supports(layer.in_proj(x), 2)
    layer.fused = False
    expected = layer(x)
    layer.fused = True
    torch.testing.assert_close(layer(x), expected)
    qkv = torch.randn(2, 5, 3 * 64)
    assert FA.supports(qkv, 8)
    assert not FA.supports(qkv.half(), 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not FA.supports(qkv, 8)


def test_speed_option_on_a_point_flow(ext):
    from survae.models import build_model
    from survae.runtime.speed import apply_speed_options

    spec = {
        "architecture": "permute_flow",
        "num_steps": 2,
        "d_model": 64,
        "num_heads": 8,
        "dim_feedforward": 64,
        "num_layers": 1,
        "dropout": 0.0,
    }
    torch.manual_seed(0)
    plain = build_model(spec, (50, 2))
    torch.manual_seed(0)
    fused = apply_speed_options(build_model(spec, (50, 2)), {"fused_attention": True})
    attention = [m for m in fused.modules() if isinstance(m, SelfAttention)]
    assert attention and all(m.fused for m in attention)
    assert plain.state_dict().keys() == fused.state_dict().keys()
    with torch.no_grad():  # a non-trivial network: the zero-initialised outputs made random
        for a, b in zip(plain.parameters(), fused.parameters()):
            a.add_(0.05 * torch.randn_like(a))
            b.copy_(a)
    x = torch.rand(8, 50, 2) * 28
    torch.manual_seed(3)
    lp_plain = plain.log_prob(x)
    torch.manual_seed(3)
    lp_fused = fused.log_prob(x)
    torch.testing.assert_close(lp_fused, lp_plain, rtol=1e-5, atol=1e-3)
    (lp_fused.sum()).backward()
    assert all(p.grad is not None for p in fused.parameters() if p.requires_grad)


def test_build_failure_is_a_clear_error(monkeypatch):
    from torch.utils import cpp_extension

    def no_ninja():
        raise RuntimeError("Ninja is required to load C++ extensions")

    monkeypatch.setattr(cpp_extension, "verify_ninja_availability", no_ninja)
    FA.load_extension.cache_clear()
    try:
        with pytest.raises(FA.FusedAttentionBuildError, match="ninja.*fused_attention=false"):
            FA.load_extension()
        from survae.runtime.speed import set_fused_attention

        with pytest.raises(FA.FusedAttentionBuildError):
            set_fused_attention(SelfAttention(64, 8))
        assert set_fused_attention(torch.nn.Linear(2, 2)) == 0  # nothing to switch: no build
    finally:
        FA.load_extension.cache_clear()


def test_experiment_config_trains_with_the_option(ext, tmp_path):
    """``speed.fused_attention=true`` from the Hydra config reaches the model built for a
    point-set experiment, which then trains a step (at the paper's dropout, so the masked
    kernel runs) on tiny SpatialMNIST files in the real format."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parents[1] / "training"))
    from conftest import compose_config

    from survae.data.fake import write_fake_dataset
    from survae.training.module import FlowModule, split_batch
    from survae.training.pipeline import build_datamodule, data_info

    cfg = compose_config(
        ["experiment=permute_flow_spatial_mnist", "logger=none", "speed.fused_attention=true",
         "model.num_steps=2"],
        tmp_path / "run",
    )  # fmt: skip
    assert cfg["model"]["dropout"] > 0
    write_fake_dataset("spatial_mnist", tmp_path / "data", num=48)
    data = {**cfg["data"], "root": str(tmp_path / "data"), "batch_size": 4, "val_size": 8}
    dm = build_datamodule({**data, "num_workers": 0}, seed=0)
    module = FlowModule(cfg["model"], data_info(dm), cfg.get("optim"), speed=cfg["speed"])
    attention = [m for m in module.model.modules() if isinstance(m, SelfAttention)]
    assert attention and all(m.fused for m in attention)
    dm.setup("fit")
    x, context = split_batch(next(iter(dm.train_dataloader())))
    module.model.train()
    loss = -module.model.log_prob(x, context).mean()
    loss.backward()
    grads = [p.grad for p in module.model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)
