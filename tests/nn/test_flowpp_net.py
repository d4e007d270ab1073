"""Flow++ coupling network: gated convolutions, gated self-attention, layer norm."""

import math

import pytest
import torch
from torch.nn import functional as F

from survae.errors import ShapeError
from survae.nn.build import build_network
from survae.nn.flowpp import (
    ChannelLayerNorm,
    FlowPPNet,
    GatedPointwiseMaxout,
    GatedResidualConv,
    GatedSelfAttention,
    WeightNormConv2d,
    concat_elu,
)
from survae.registry import get


def _num_params(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def _assert_all_grads(net: torch.nn.Module) -> None:
    for name, p in net.named_parameters():
        assert p.grad is not None, f"{name} got no gradient"
        assert p.grad.abs().sum() > 0, f"{name} has an all-zero gradient"


def _small(**kw) -> FlowPPNet:
    args = dict(hidden_channels=8, num_blocks=2, num_heads=2, dropout=0.0)
    args.update(kw)
    return FlowPPNet(3, 6, **args)


def test_registered():
    assert get("network", "flowpp_net") is FlowPPNet
    net = build_network({"name": "flowpp_net", "hidden_channels": 8, "num_heads": 2}, 3, 6)
    assert isinstance(net, FlowPPNet)


def test_parameter_count_of_paper_cifar10_coupling():
    # One main-flow coupling of the paper's CIFAR-10 model (checkerboard half 32×16, 3 channels,
    # 32 mixture components); with the other 12 couplings, normalisation and 1×1 layers the
    # official model has 31,443,440 parameters.
    F_, K = 96, 32
    net = FlowPPNet(3, 3 * (3 * K + 2), hidden_channels=F_, num_blocks=10, image_size=(32, 16))
    block = (18 * F_ * F_ + F_) + (4 * F_ * F_ + 2 * F_) + 2 * F_
    block += (3 * F_ * F_ + 3 * F_) + (2 * F_ * F_ + 2 * F_) + 2 * F_
    expected = (27 * F_ + F_) + 32 * 16 * F_ + 10 * block + 9 * F_ * 294 + 294
    assert _num_params(net) == expected == 2_805_990


def test_parameter_count_of_official_imagenet32_coupling():
    # One main-flow coupling of flows_imagenet/launchers/imagenet32_official.py: 128 filters,
    # 20 blocks, 3 channels on 32×16, 32 components; every conv/dense layer weight-normalised
    # (V, g, b: one gain per output unit) and a concat-ELU before the output conv (input 2F).
    F_, K, C = 128, 32, 3
    net = FlowPPNet(
        C,
        C * (3 * K + 2),
        hidden_channels=F_,
        num_blocks=20,
        image_size=(32, 16),
        weight_norm=True,
        output_concat_elu=True,
    )
    block = (18 * F_ * F_ + 2 * F_) + (4 * F_ * F_ + 4 * F_) + 2 * F_
    block += (3 * F_ * F_ + 6 * F_) + (2 * F_ * F_ + 4 * F_) + 2 * F_
    expected = (9 * C * F_ + 2 * F_) + 32 * 16 * F_ + 20 * block
    expected += 9 * 2 * F_ * C * (3 * K + 2) + 2 * C * (3 * K + 2)
    assert _num_params(net) == expected == 9_645_772


def test_weight_norm_conv_is_gain_times_direction():
    torch.manual_seed(0)
    conv = WeightNormConv2d(3, 5, 3, padding=1)
    plain = torch.nn.Conv2d(3, 5, 3, padding=1)
    with torch.no_grad():
        plain.weight.copy_(conv.weight)
        plain.bias.copy_(conv.bias)
    x = torch.randn(2, 3, 4, 6)
    # the gains start at the norms: the layer starts as the plain convolution
    torch.testing.assert_close(conv(x), plain(x))
    with torch.no_grad():
        conv.weight_g.normal_()
        conv.weight.mul_(torch.rand(5, 1, 1, 1) + 0.5)  # rescaling V does not change W
    v = conv.weight
    w = conv.weight_g.view(-1, 1, 1, 1) * v / v.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
    torch.testing.assert_close(conv(x), F.conv2d(x, w, conv.bias, padding=1))
    assert _num_params(conv) == 5 * 3 * 9 + 5 + 5
    conv(x).square().sum().backward()
    assert all(p.grad is not None for p in conv.parameters())


def test_output_concat_elu_and_weight_norm_options():
    net = _small(weight_norm=True, output_concat_elu=True)
    assert net.out.in_channels == 16 and isinstance(net.out, WeightNormConv2d)
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    assert all(isinstance(c, WeightNormConv2d) for c in convs)
    x = torch.randn(2, 3, 4, 6)
    assert torch.equal(net(x), torch.zeros(2, 6, 4, 6))  # zero gains and bias at the output
    with torch.no_grad():
        net.out.weight_g.fill_(1.0)
    h = net.inp(x)
    for block in net.blocks:
        h = block(h)
    torch.testing.assert_close(net(x), net.out(concat_elu(h)))
    (net(x) - 1).square().sum().backward()
    _assert_all_grads(net)


@pytest.mark.parametrize("hw", [(4, 6), (5, 3)])
@pytest.mark.parametrize("use_pos", [False, True])
def test_shape_and_zero_output_non_square(hw, use_pos):
    net = _small(image_size=hw if use_pos else None)
    y = net(torch.randn(2, 3, *hw))
    assert y.shape == (2, 6, *hw)
    assert torch.equal(y, torch.zeros_like(y))


def test_gradients_reach_all_parameters_with_context_and_positions():
    net = _small(context_channels=4, image_size=(4, 6), dropout=0.1)
    with torch.no_grad():
        net.out.weight.normal_(std=0.1)
    x, ctx = torch.randn(2, 3, 4, 6), torch.randn(2, 4, 4, 6)
    (net(x, ctx) - torch.randn(2, 6, 4, 6)).square().sum().backward()
    _assert_all_grads(net)


def test_attention_is_global_on_non_square_maps():
    """Every output position depends on every input position through attention, even with
    a single block whose convolutions only see 3×3 neighbourhoods."""
    net = _small(num_blocks=1).eval()
    with torch.no_grad():
        net.out.weight.normal_()
    x = torch.randn(1, 3, 3, 9, requires_grad=True)
    net(x)[0, :, 0, 0].sum().backward()
    assert (x.grad.abs().sum(1) > 0).all()  # far corner (2, 8) included
    no_attn = _small(num_blocks=1, use_attention=False).eval()
    with torch.no_grad():
        no_attn.out.weight.normal_()
    x2 = x.detach().clone().requires_grad_(True)
    no_attn(x2)[0, :, 0, 0].sum().backward()
    assert x2.grad[0, :, 2, 8].abs().sum() == 0  # only local receptive field


def test_gated_attention_matches_explicit_softmax():
    attn = GatedSelfAttention(8, num_heads=2)
    x, pos = torch.randn(2, 8, 3, 5), torch.randn(1, 8, 3, 5)
    B, C, H, W = x.shape
    qkv = attn.qkv(x + pos).flatten(2).transpose(1, 2)  # [B, T, 3C]
    q, k, v = (t.reshape(B, H * W, 2, 4).transpose(1, 2) for t in qkv.split(C, dim=2))
    w = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(4), dim=-1)
    a = (w @ v).transpose(1, 2).reshape(B, H * W, C).transpose(1, 2).reshape(B, C, H, W)
    g, s = attn.proj(a).chunk(2, dim=1)
    torch.testing.assert_close(attn(x, pos), x + g * torch.sigmoid(s))


def test_gated_pointwise_maxout_formula_and_size():
    """The official no-attention ablation's block (abl_noattn.py gated_nin): proj1 to 3C, the
    maximum over each channel's 3 consecutive outputs, proj2 to 2C, gate, residual."""
    m = GatedPointwiseMaxout(4)
    x, pos = torch.randn(2, 4, 3, 5), torch.randn(1, 4, 3, 5)
    c = m.proj1(x + pos)  # [B, 12, H, W], channel 3·i + j
    h = torch.stack([c[:, 3 * i : 3 * i + 3].max(1).values for i in range(4)], 1)
    g, s = m.proj2(h).chunk(2, dim=1)
    torch.testing.assert_close(m(x, pos), x + g * torch.sigmoid(s))
    assert _num_params(m) == _num_params(GatedSelfAttention(4, num_heads=2))
    net = _small(attention="pointwise", image_size=(4, 6))
    assert all(isinstance(b.attn, GatedPointwiseMaxout) for b in net.blocks)
    assert _num_params(net) == _num_params(_small(image_size=(4, 6)))
    with pytest.raises(ValueError, match="attention must be one of"):
        _small(attention="global")


def test_gated_attention_is_position_equivariant_without_embedding():
    attn = GatedSelfAttention(8, num_heads=4)
    x = torch.randn(2, 8, 2, 6)
    perm = torch.randperm(12)
    out = attn(x).flatten(2)[:, :, perm]
    out_p = attn(x.flatten(2)[:, :, perm].reshape(2, 8, 2, 6)).flatten(2)
    torch.testing.assert_close(out, out_p)


def test_gated_residual_conv_formula():
    block = GatedResidualConv(4)
    x = torch.randn(2, 4, 3, 3)
    h = F.elu(torch.cat([x, -x], 1))
    h = F.elu(torch.cat([block.conv1(h), -block.conv1(h)], 1))
    a, b = block.conv2(h).chunk(2, 1)
    torch.testing.assert_close(block(x), x + a * torch.sigmoid(b))
    assert block.conv2.kernel_size == (1, 1)
    assert GatedResidualConv(4, second_kernel_size=3)(x).shape == x.shape


def test_concat_elu_and_layer_norm():
    x = torch.randn(2, 3, 4, 5)
    torch.testing.assert_close(concat_elu(x), torch.cat([F.elu(x), F.elu(-x)], 1))
    ln = ChannelLayerNorm(3)
    with torch.no_grad():
        ln.weight.normal_()
        ln.bias.normal_()
    ref = F.layer_norm(x.permute(0, 2, 3, 1), (3,), ln.weight, ln.bias, 1e-5).permute(0, 3, 1, 2)
    torch.testing.assert_close(ln(x), ref)


def test_bad_inputs_raise():
    with pytest.raises(ShapeError, match=r"FlowPPNet.*\(\*, 3, 4, 6\).*\(2, 3, 6, 4\)"):
        _small(image_size=(4, 6))(torch.randn(2, 3, 6, 4))
    with pytest.raises(ShapeError, match="FlowPPNet"):
        _small()(torch.randn(2, 2, 4, 4))
    net = _small(context_channels=4)
    with pytest.raises(ShapeError, match="context"):
        net(torch.randn(2, 3, 4, 4))
    with pytest.raises(ShapeError, match="context"):
        net(torch.randn(2, 3, 4, 4), torch.randn(2, 4, 4, 5))
    with pytest.raises(ValueError, match="divisible"):
        FlowPPNet(3, 6, hidden_channels=10, num_heads=4)
