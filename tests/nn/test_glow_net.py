"""GlowNet, ZeroConv2d and the network-internal ActNorm2d."""

import pytest
import torch

from survae.errors import ShapeError
from survae.nn.build import build_network
from survae.nn.glow import ActNorm2d, GlowNet, ZeroConv2d
from survae.registry import get


def _assert_all_grads(net: torch.nn.Module) -> None:
    for name, p in net.named_parameters():
        assert p.grad is not None, f"{name} got no gradient"
        assert p.grad.abs().sum() > 0, f"{name} has an all-zero gradient"


def test_registered_and_built_by_name():
    assert get("network", "glow_net") is GlowNet
    net = build_network({"name": "glow_net", "hidden_channels": 8}, 3, 6)
    assert isinstance(net, GlowNet) and net.conv1.out_channels == 8


@pytest.mark.parametrize("actnorm", [True, False])
def test_shape_and_zero_output_at_init(actnorm):
    net = GlowNet(3, 6, hidden_channels=16, actnorm=actnorm)
    x = torch.randn(4, 3, 5, 7)
    for mode in (net.train, net.eval):
        mode()
        y = net(x)
        assert y.shape == (4, 6, 5, 7)
        assert torch.equal(y, torch.zeros_like(y))


@pytest.mark.parametrize("actnorm", [True, False])
def test_gradients_reach_all_parameters(actnorm):
    net = GlowNet(2, 4, hidden_channels=8, actnorm=actnorm)
    with torch.no_grad():
        net.out.conv.weight.normal_(std=0.1)
        net.out.logs.normal_(std=0.1)
    x = torch.randn(3, 2, 4, 4)
    loss = (net(x) - torch.randn(3, 4, 4, 4)).square().sum()
    loss.backward()
    _assert_all_grads(net)


def test_hidden_convs_have_no_bias_with_actnorm():
    assert GlowNet(2, 4, 8, actnorm=True).conv1.bias is None
    assert GlowNet(2, 4, 8, actnorm=False).conv1.bias is not None


def test_zero_conv_scale_factor():
    zc = ZeroConv2d(3, 2, kernel_size=3, logscale_factor=3.0)
    x = torch.randn(2, 3, 4, 4)
    assert torch.equal(zc(x), torch.zeros(2, 2, 4, 4))
    with torch.no_grad():
        zc.conv.weight.normal_()
        zc.conv.bias.normal_()
        zc.logs.copy_(torch.tensor([0.1, -0.2]))
    expected = zc.conv(x) * torch.exp(3 * torch.tensor([0.1, -0.2])).view(1, 2, 1, 1)
    torch.testing.assert_close(zc(x), expected)


def test_actnorm_data_dependent_init():
    an = ActNorm2d(3)
    x = torch.randn(16, 3, 4, 4) * torch.tensor([2.0, 0.5, 3.0]).view(1, 3, 1, 1) + 1.5
    y = an(x)  # training mode: initialises from this batch
    torch.testing.assert_close(y.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-5, rtol=0)
    torch.testing.assert_close(
        y.std(dim=(0, 2, 3), unbiased=False), torch.ones(3), atol=1e-4, rtol=0
    )
    # parameters are kept afterwards: a differently scaled batch is not re-normalised
    y2 = an(x * 2)
    assert y2.std(dim=(0, 2, 3), unbiased=False).min() > 1.5


def test_actnorm_no_init_in_eval_and_state_dict_roundtrip():
    an = ActNorm2d(2).eval()
    x = torch.randn(8, 2, 3, 3) * 4 + 2
    torch.testing.assert_close(an(x), x)  # eval: identity, not initialised
    an.train()
    an(x)
    fresh = ActNorm2d(2)
    fresh.load_state_dict(an.state_dict())
    x2 = torch.randn(8, 2, 3, 3) * 10
    torch.testing.assert_close(fresh(x2), an(x2))  # loaded params used, no re-initialisation


def test_wrong_channels_raise_shape_error():
    net = GlowNet(3, 6, hidden_channels=8)
    with pytest.raises(ShapeError, match=r"GlowNet.*\(\*, 3, \*, \*\).*\(2, 4, 5, 5\)"):
        net(torch.randn(2, 4, 5, 5))
    with pytest.raises(ShapeError, match="GlowNet"):
        net(torch.randn(2, 3, 5))
