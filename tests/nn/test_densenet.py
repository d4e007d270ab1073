"""SurVAE's gated DenseNet coupling network and its blocks."""

import pytest
import torch

from survae.errors import ShapeError
from survae.nn.build import build_network
from survae.nn.densenet import DenseBlock, DenseLayer, DenseNet, GatedConv2d
from survae.registry import get


def _num_params(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def _assert_all_grads(net: torch.nn.Module) -> None:
    for name, p in net.named_parameters():
        assert p.grad is not None, f"{name} got no gradient"
        assert p.grad.abs().sum() > 0, f"{name} has an all-zero gradient"


def test_registered():
    assert get("network", "densenet") is DenseNet
    assert get("network", "dense_block") is DenseBlock
    net = build_network({"name": "densenet", "mid_channels": 8, "depth": 2, "growth": 4}, 2, 4)
    assert isinstance(net, DenseNet)


def test_parameter_count_matches_official_coupling_net():
    # Official SurVAE main-flow coupling net (12 channels; in 6, out 12; mid 64, depth 10,
    # growth 64, gated): 3,745,228 parameters. This architecture matches it exactly.
    net = DenseNet(6, 12, num_blocks=1, mid_channels=64, depth=10, growth=64, gated_conv=True)
    assert _num_params(net) == 3_745_228


def test_parameter_count_formula_small():
    i, o, m, d, g = 3, 5, 8, 3, 4
    net = DenseNet(i, o, num_blocks=2, mid_channels=m, depth=d, growth=g, gated_conv=False)
    layers = sum((m + k * g) ** 2 + (m + k * g) + 9 * (m + k * g) * g + g for k in range(d))
    block = layers + (m + d * g) * m + m
    assert _num_params(net) == (i * m + m) + 2 * block + (m * o + o)


@pytest.mark.parametrize("gated", [True, False])
def test_shape_and_zero_output(gated):
    net = DenseNet(3, 6, num_blocks=2, mid_channels=8, depth=2, growth=4, gated_conv=gated)
    y = net(torch.randn(2, 3, 5, 6))
    assert y.shape == (2, 6, 5, 6)
    assert torch.equal(y, torch.zeros_like(y))


@pytest.mark.parametrize("dropout", [0.0, 0.2])
def test_gradients_reach_all_parameters(dropout):
    net = DenseNet(2, 4, num_blocks=2, mid_channels=8, depth=2, growth=4, dropout=dropout)
    with torch.no_grad():
        net.out.weight.normal_(std=0.1)
    x = torch.randn(4, 2, 4, 4)
    (net(x) - torch.randn(4, 4, 4, 4)).square().sum().backward()
    _assert_all_grads(net)


def test_dropout_only_in_training():
    net = DenseNet(2, 4, mid_channels=8, depth=2, growth=4, dropout=0.5)
    with torch.no_grad():
        net.out.weight.normal_()
    x = torch.randn(2, 2, 4, 4)
    net.eval()
    torch.testing.assert_close(net(x), net(x))
    net.train()
    assert not torch.allclose(net(x), net(x))


def test_gated_conv_formula():
    gc = GatedConv2d(4, 3, kernel_size=1)
    x = torch.randn(2, 4, 3, 3)
    a, b, c = gc.conv(x).chunk(3, dim=1)
    torch.testing.assert_close(gc(x), a + b * torch.sigmoid(c))
    assert gc(x).shape == (2, 3, 3, 3)


def test_dense_layer_concatenates_growth():
    layer = DenseLayer(5, growth=3)
    x = torch.randn(2, 5, 4, 4)
    y = layer(x)
    assert y.shape == (2, 8, 4, 4)
    torch.testing.assert_close(y[:, :5], x)
    assert (y[:, 5:] >= 0).all()  # ReLU output


@pytest.mark.parametrize("gated", [True, False])
def test_dense_block_shape(gated):
    block = DenseBlock(3, 7, depth=3, growth=4, gated_conv=gated)
    assert block(torch.randn(2, 3, 4, 5)).shape == (2, 7, 4, 5)
    zero = DenseBlock(3, 7, depth=1, growth=4, gated_conv=gated, zero_init_output=True)
    y = zero(torch.randn(2, 3, 4, 5))
    assert torch.equal(y, torch.zeros_like(y))


def test_wrong_input_raises_shape_error():
    net = DenseNet(3, 6, mid_channels=8, depth=1, growth=4)
    with pytest.raises(ShapeError, match=r"DenseNet.*\(\*, 3, \*, \*\).*\(2, 2, 4, 4\)"):
        net(torch.randn(2, 2, 4, 4))
