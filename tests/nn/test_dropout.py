"""The CPU dropout: the Bernoulli keep-mask it draws, its scaling, its gradient, its RNG use."""

import math

import pytest
import torch

from survae.nn.dropout import Dropout, dropout, keep_mask


def test_identity_when_not_training_or_zero_probability():
    x = torch.randn(10, 7)
    assert dropout(x, 0.3, training=False) is x
    assert dropout(x, 0.0) is x
    assert torch.equal(dropout(x, 1.0), torch.zeros_like(x))


@pytest.mark.parametrize("p", [0.05, 0.1, 0.2, 0.5, 0.9])
def test_drop_fraction_matches_probability(p):
    torch.manual_seed(0)
    n = 2_000_001  # odd: the last 32-bit lane of the last 64-bit draw is cut off
    dropped = (~keep_mask((n,), p)).double().mean().item()
    assert abs(dropped - p) < 5 * math.sqrt(p * (1 - p) / n)


def test_both_lanes_of_each_draw_are_random_and_independent():
    torch.manual_seed(0)
    keep = keep_mask((1_000_000,), 0.5).double()
    even, odd = keep[0::2], keep[1::2]  # the two 32-bit halves of the same 64-bit draw
    sigma = math.sqrt(0.25 / even.numel())
    assert abs(even.mean().item() - 0.5) < 5 * sigma
    assert abs(odd.mean().item() - 0.5) < 5 * sigma
    corr = ((even - 0.5) * (odd - 0.5)).mean().item() / 0.25
    assert abs(corr) < 5 / math.sqrt(even.numel())


def test_kept_elements_are_rescaled_and_expectation_preserved():
    torch.manual_seed(0)
    x = torch.full((400, 500), 3.0)
    y = dropout(x, 0.2)
    assert set(torch.unique(y).tolist()) == {0.0, 3.0 / 0.8}
    assert abs(y.mean().item() - 3.0) < 5 * 3.0 / 0.8 * math.sqrt(0.2 * 0.8 / x.numel())


def test_gradient_uses_the_same_mask():
    torch.manual_seed(0)
    x = torch.randn(64, 33, requires_grad=True)
    y = dropout(x, 0.3)
    g = torch.randn_like(y)
    y.backward(g)
    kept = y.detach() != 0
    torch.testing.assert_close(x.grad, torch.where(kept, g / 0.7, torch.zeros_like(g)))
    torch.testing.assert_close(y.detach()[kept], x.detach()[kept] / 0.7)


def test_mask_follows_the_global_generator():
    x = torch.randn(50, 50)
    torch.manual_seed(3)
    a = dropout(x, 0.5)
    torch.manual_seed(3)
    assert torch.equal(dropout(x, 0.5), a)
    assert not torch.equal(dropout(x, 0.5), a)


def test_non_contiguous_input():
    x = torch.randn(20, 30).t()
    torch.manual_seed(0)
    y = dropout(x, 0.5)
    assert y.shape == x.shape
    kept = y != 0
    torch.testing.assert_close(y[kept], 2 * x[kept])


def test_module_and_bad_probability():
    m = Dropout(0.25)
    assert dict(m.state_dict()) == {} and "p=0.25" in repr(m)
    x = torch.randn(8, 8)
    m.eval()
    assert m(x) is x
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        Dropout(1.5)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        dropout(x, -0.1)


@pytest.mark.gpu
def test_cuda_uses_the_fused_kernel():
    x = torch.ones(1000, 1000, device="cuda")
    y = dropout(x, 0.1)
    assert y.device.type == "cuda"
    assert abs((y == 0).float().mean().item() - 0.1) < 0.005


def test_traceable_without_graph_breaks():
    from survae.nn.transformer import Transformer

    net = Transformer(1, 2, d_model=16, num_heads=4, dropout=0.1).train()
    explanation = torch._dynamo.explain(net)(torch.randn(4, 1, 10))
    assert explanation.graph_break_count == 0, explanation.break_reasons


def test_compiled_dropout_draws_the_eager_masks_and_never_reuses_one():
    def two_dropouts(x):
        return dropout(x, 0.5), dropout(x, 0.5)

    compiled = torch.compile(two_dropouts, fullgraph=True)
    x = torch.randn(4000)
    torch.manual_seed(5)
    eager = two_dropouts(x)
    torch.manual_seed(5)
    got = compiled(x)
    for a, b in zip(got, eager, strict=True):
        torch.testing.assert_close(a, b)
    assert not torch.equal(got[0], got[1])  # two calls, two masks (not merged by the compiler)
