"""RealNVP-style ResNet coupling network and the plain ConvNet."""

import pytest
import torch

from survae.errors import ShapeError
from survae.nn.build import build_network
from survae.nn.convnet import ConvNet
from survae.nn.resnet import ResidualBlock, ResNet
from survae.registry import get


def _assert_all_grads(net: torch.nn.Module) -> None:
    for name, p in net.named_parameters():
        assert p.grad is not None, f"{name} got no gradient"
        assert p.grad.abs().sum() > 0, f"{name} has an all-zero gradient"


def test_registered():
    assert get("network", "resnet") is ResNet
    assert get("network", "conv_net") is ConvNet
    assert isinstance(build_network({"name": "resnet", "hidden_channels": 8}, 2, 4), ResNet)
    assert isinstance(build_network("conv_net", 2, 4), ConvNet)


@pytest.mark.parametrize("norm", ["batch", "weight", "none"])
def test_resnet_shape_and_zero_output(norm):
    net = ResNet(3, 6, hidden_channels=8, num_blocks=2, norm=norm)
    x = torch.randn(4, 3, 5, 6)
    for mode in (net.train, net.eval):
        mode()
        y = net(x)
        assert y.shape == (4, 6, 5, 6)
        assert torch.equal(y, torch.zeros_like(y))


@pytest.mark.parametrize("norm", ["batch", "weight", "none"])
def test_resnet_gradients_reach_all_parameters(norm):
    net = ResNet(2, 4, hidden_channels=8, num_blocks=2, norm=norm)
    with torch.no_grad():
        net.out.weight.normal_(std=0.1)
    x = torch.randn(4, 2, 4, 4)
    (net(x) - torch.randn(4, 4, 4, 4)).square().sum().backward()
    _assert_all_grads(net)


def test_weight_norm_is_applied():
    net = ResNet(2, 4, hidden_channels=8, num_blocks=1, norm="weight")
    names = {n for n, _ in net.named_parameters()}
    assert any("parametrizations.weight.original0" in n for n in names)
    assert not any("BatchNorm" in type(m).__name__ for m in net.modules())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in ResNet(2, 4, 8, 1).modules())


def test_residual_block_is_identity_when_last_conv_is_zero():
    block = ResidualBlock(4, norm="batch")
    torch.nn.init.zeros_(block.net[-1].weight)
    torch.nn.init.zeros_(block.net[-1].bias)
    x = torch.randn(3, 4, 5, 5)
    torch.testing.assert_close(block(x), x)


def test_unknown_norm_raises():
    with pytest.raises(ValueError, match="norm"):
        ResNet(2, 4, norm="layer")


def test_resnet_wrong_channels_raise_shape_error():
    with pytest.raises(ShapeError, match=r"ResNet.*\(\*, 2, \*, \*\).*\(1, 3, 4, 4\)"):
        ResNet(2, 4, hidden_channels=8, num_blocks=1)(torch.randn(1, 3, 4, 4))


@pytest.mark.parametrize("num_layers", [0, 1, 3])
def test_convnet_shape_zero_output_and_grads(num_layers):
    net = ConvNet(3, 5, hidden_channels=8, num_layers=num_layers)
    x = torch.randn(2, 3, 4, 7)
    y = net(x)
    assert y.shape == (2, 5, 4, 7)
    assert torch.equal(y, torch.zeros_like(y))
    with torch.no_grad():
        net.net[-1].weight.normal_(std=0.1)
    (net(x) - torch.randn(2, 5, 4, 7)).square().sum().backward()
    _assert_all_grads(net)


def test_convnet_rejects_even_kernel_and_wrong_input():
    with pytest.raises(ValueError, match="odd"):
        ConvNet(2, 2, kernel_size=2)
    with pytest.raises(ShapeError, match="ConvNet"):
        ConvNet(2, 2)(torch.randn(2, 3, 4, 4))
