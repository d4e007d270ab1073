"""Point-set transformer: shapes, identity start, equivariance, positional embedding."""

import math

import pytest
import torch

from survae.errors import ShapeError
from survae.nn.build import build_network
from survae.nn.transformer import SelfAttention, Transformer
from survae.registry import get


def _num_params(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def _assert_all_grads(net: torch.nn.Module) -> None:
    for name, p in net.named_parameters():
        assert p.grad is not None, f"{name} got no gradient"
        assert p.grad.abs().sum() > 0, f"{name} has an all-zero gradient"


def _perturbed(net: Transformer) -> Transformer:
    with torch.no_grad():
        net.out.weight.normal_()
        net.out.bias.normal_()
    return net


def test_registered():
    assert get("network", "transformer") is Transformer
    assert isinstance(build_network({"name": "transformer", "d_model": 16}, 2, 4), Transformer)


def test_parameter_counts_match_official_point_cloud_nets():
    # Official PermuteFlow: 32 × (coordinate net 1→2 + point net 2→4 + actnorm 4) = 6,428,992;
    # SortFlow adds a 25-position embedding to the point nets: 6,480,192.
    assert _num_params(Transformer(1, 2)) == 100_354
    assert _num_params(Transformer(2, 4)) == 100_548
    assert _num_params(Transformer(2, 4, positional_embedding=25)) == 100_548 + 25 * 64


@pytest.mark.parametrize("pos", [None, 7])
def test_shape_and_zero_output(pos):
    net = Transformer(2, 4, d_model=16, num_heads=4, dim_feedforward=32, positional_embedding=pos)
    y = net(torch.randn(3, 2, 7))
    assert y.shape == (3, 4, 7)
    assert torch.equal(y, torch.zeros_like(y))


@pytest.mark.parametrize("pos", [None, 5])
def test_gradients_reach_all_parameters(pos):
    net = Transformer(2, 3, d_model=16, num_heads=4, dim_feedforward=32, positional_embedding=pos)
    with torch.no_grad():
        net.out.weight.normal_(std=0.1)
    (net(torch.randn(4, 2, 5)) - torch.randn(4, 3, 5)).square().sum().backward()
    _assert_all_grads(net)


def test_permutation_equivariance():
    net = _perturbed(Transformer(2, 4, d_model=16, num_heads=4, dim_feedforward=32)).eval()
    x = torch.randn(3, 2, 10)
    perm = torch.randperm(10)
    torch.testing.assert_close(net(x[:, :, perm]), net(x)[:, :, perm])


def test_positional_embedding_breaks_equivariance_and_fixes_length():
    net = Transformer(2, 4, d_model=16, num_heads=4, dim_feedforward=32, positional_embedding=6)
    net = _perturbed(net).eval()
    x = torch.randn(3, 2, 6)
    perm = torch.tensor([1, 0, 2, 3, 4, 5])
    assert not torch.allclose(net(x[:, :, perm]), net(x)[:, :, perm])
    with pytest.raises(ShapeError, match=r"Transformer.*\(\*, 2, 6\).*\(3, 2, 7\)"):
        net(torch.randn(3, 2, 7))


def test_points_interact():
    net = _perturbed(Transformer(2, 4, d_model=16, num_heads=4, dim_feedforward=32)).eval()
    x = torch.randn(1, 2, 6, requires_grad=True)
    net(x)[0, :, 0].sum().backward()
    assert (x.grad[0].abs().sum(0) > 0).all()


def test_dropout_only_in_training():
    net = _perturbed(Transformer(2, 4, d_model=16, num_heads=4, dropout=0.5))
    x = torch.randn(2, 2, 8)
    assert not torch.allclose(net(x), net(x))
    net.eval()
    torch.testing.assert_close(net(x), net(x))


def test_self_attention_matches_torch_multihead_attention():
    attn = SelfAttention(16, num_heads=4).eval()
    mha = torch.nn.MultiheadAttention(16, 4, batch_first=True).eval()
    with torch.no_grad():
        attn.in_proj.bias.normal_()
        mha.in_proj_weight.copy_(attn.in_proj.weight)
        mha.in_proj_bias.copy_(attn.in_proj.bias)
        mha.out_proj.weight.copy_(attn.out_proj.weight)
        mha.out_proj.bias.copy_(attn.out_proj.bias)
    x = torch.randn(2, 5, 16, requires_grad=True)
    ours, theirs = attn(x), mha(x, x, x, need_weights=False)[0]
    torch.testing.assert_close(ours, theirs)
    # the CPU path's transposed products: same gradients for the input and every weight
    grad_out = torch.randn_like(ours)
    g_ours = torch.autograd.grad(ours, (x, attn.in_proj.weight, attn.out_proj.weight), grad_out)
    g_theirs = torch.autograd.grad(theirs, (x, mha.in_proj_weight, mha.out_proj.weight), grad_out)
    for a, b in zip(g_ours, g_theirs):
        torch.testing.assert_close(a, b)


def test_wrong_input_raises_shape_error():
    net = Transformer(2, 4, d_model=16, num_heads=4)
    with pytest.raises(ShapeError, match=r"Transformer.*\(\*, 2, \*\).*\(3, 5, 2\)"):
        net(torch.randn(3, 5, 2))  # points-last layout is rejected
    with pytest.raises(ValueError, match="divisible"):
        Transformer(2, 4, d_model=10, num_heads=4)


def test_self_attention_dropout_acts_on_attention_weights_in_training_only():
    attn = SelfAttention(16, num_heads=4, dropout=0.5)
    x = torch.randn(2, 5, 16)
    torch.manual_seed(1)
    y1 = attn(x)
    torch.manual_seed(1)
    torch.testing.assert_close(attn(x), y1)  # the global generator decides the mask
    assert not torch.allclose(attn(x), y1)
    attn.eval()
    no_drop = attn(x)
    attn.dropout = 0.0
    attn.train()
    torch.testing.assert_close(attn(x), no_drop)


@pytest.mark.gpu
def test_self_attention_cuda_kernel_matches_cpu_path():
    attn = SelfAttention(64, num_heads=8).eval()
    with torch.no_grad():
        attn.in_proj.bias.normal_()
    x = torch.randn(4, 50, 64)
    expected = attn(x)
    got = attn.cuda()(x.cuda()).cpu()
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


# ------------------------------------------------------------- official-code options
def test_sigmoid_gelu_is_the_official_formula():
    from survae.nn.mlp import SigmoidGELU, activation

    x = torch.tensor([-3.0, -1.0, -0.25, 0.0, 0.5, 2.0], dtype=torch.float64)
    ref = torch.tensor([v / (1.0 + math.exp(-1.702 * v)) for v in x.tolist()], dtype=x.dtype)
    torch.testing.assert_close(SigmoidGELU()(x), ref)
    assert isinstance(activation("gelu_sigmoid"), SigmoidGELU)
    # it is an approximation: not the exact GELU used with activation="gelu"
    assert (SigmoidGELU()(x) - torch.nn.functional.gelu(x)).abs().max() > 1e-3


def test_sigmoid_gelu_fused_backward_is_the_product_forms_gradient():
    from survae.nn.mlp import SigmoidGELU

    act = SigmoidGELU()
    x = torch.linspace(-8.0, 8.0, 41, dtype=torch.float64).requires_grad_(True)
    assert torch.autograd.gradcheck(act, (x,))
    # against autograd of the product form, in float64 and float32
    for dtype, tol in ((torch.float64, 1e-12), (torch.float32, 1e-6)):
        x = torch.randn(4, 7, 33, dtype=dtype, generator=torch.Generator().manual_seed(0))
        x = (x * 4.0).requires_grad_(True)
        grad_out = torch.randn_like(x)
        (fused,) = torch.autograd.grad(act(x), x, grad_out)
        (product,) = torch.autograd.grad(x * torch.sigmoid(1.702 * x), x, grad_out)
        torch.testing.assert_close(fused, product, rtol=tol, atol=tol)
        torch.testing.assert_close(act(x), x * torch.sigmoid(1.702 * x), rtol=tol, atol=tol)
    # second derivatives are not provided: asking for one fails instead of returning a wrong one
    x = torch.randn(5, dtype=torch.float64, requires_grad=True)
    (grad,) = torch.autograd.grad(act(x).sum(), x, create_graph=True)
    with pytest.raises(RuntimeError):
        grad.sum().backward()


def test_activation_option_reaches_the_blocks():
    from survae.nn.mlp import SigmoidGELU

    net = Transformer(2, 4, d_model=16, num_heads=4, dim_feedforward=32, activation="gelu_sigmoid")
    assert all(isinstance(b.act, SigmoidGELU) for b in net.layers)
    assert isinstance(Transformer(2, 4, d_model=16, num_heads=4).layers[0].act, torch.nn.GELU)
    with pytest.raises(ValueError, match="Unknown activation 'swish'.*gelu_sigmoid"):
        Transformer(2, 4, d_model=16, num_heads=4, activation="swish")


def test_official_init_statistics():
    torch.manual_seed(0)
    net = Transformer(2, 4, d_model=64, num_layers=2, dim_feedforward=256, init="official")
    depth = math.sqrt(2 * 2)
    for block in net.layers:
        for linear, div in ((block.attn.in_proj, 1.0), (block.linear1, 1.0),
                            (block.attn.out_proj, depth), (block.linear2, depth)):  # fmt: skip
            want = 0.125 / math.sqrt(linear.weight.shape[1]) / div
            assert linear.weight.std().item() == pytest.approx(want, rel=0.1)
            assert linear.weight.mean().abs().item() < want / 5
            assert torch.equal(linear.bias, torch.zeros_like(linear.bias))
    assert torch.equal(net.out.weight, torch.zeros_like(net.out.weight))
    xavier = Transformer(2, 4, d_model=64, num_layers=2, dim_feedforward=256, init="xavier")
    in_std = xavier.layers[0].attn.in_proj.weight.std().item()
    assert in_std == pytest.approx(math.sqrt(2.0 / (64 + 192)), rel=0.1)
    with pytest.raises(ValueError, match="unknown init 'normal'.*official, xavier"):
        Transformer(2, 4, init="normal")


def test_inner_dropout_option():
    x = torch.randn(1, 5, 16)
    for inner, expect_changed in ((False, False), (True, True)):
        net = Transformer(2, 4, d_model=16, num_heads=4, dim_feedforward=32, dropout=0.5,
                          inner_dropout=inner)  # fmt: skip
        block = net.layers[0].train()
        calls: list[int] = []
        block.dropout.register_forward_hook(lambda m, i, o, c=calls: c.append(i[0].shape[-1]))
        block(x)
        # dropout after attention and after W2 (d_model wide); inner: also after act (32 wide)
        assert (32 in calls) is expect_changed and calls.count(16) == 2
