"""MultiscaleDenseNet: shapes, zero start, skip connections at every scale."""

import pytest
import torch

from survae import registry
from survae.nn import MultiscaleDenseNet


def test_shapes_zero_init_and_gradients():
    assert registry.get("network", "multiscale_densenet") is MultiscaleDenseNet
    net = MultiscaleDenseNet(3, 6, num_scales=3, mid_channels=8, depth=2, growth=4)
    x = torch.randn(2, 3, 8, 8)
    assert torch.equal(net(x), torch.zeros(2, 6, 8, 8))  # zero-initialised output layer
    torch.nn.init.normal_(net.up_out.out.weight)
    y = net(x)
    assert y.shape == (2, 6, 8, 8)
    y.square().sum().backward()
    assert all(p.grad is not None for p in net.down[-1].parameters())  # the coarsest scale
    with pytest.raises(ValueError, match="divisible by 4"):
        net(torch.randn(1, 3, 6, 6))
    with pytest.raises(ValueError, match="num_scales must be >= 2"):
        MultiscaleDenseNet(3, 6, num_scales=1)


def test_as_a_coupling_network():
    from survae.testing import assert_invertible, assert_logdet_matches_autograd
    from survae.transforms import AffineCoupling

    layer = AffineCoupling(
        2,
        {"name": "multiscale_densenet", "mid_channels": 4, "depth": 1, "growth": 2,
         "zero_init_output": False},
        scale_fn="tanh_exp",
    ).double()  # fmt: skip
    x = torch.randn(2, 2, 4, 4, dtype=torch.float64)
    assert_invertible(layer, x, atol=1e-9, rtol=1e-9)
    assert_logdet_matches_autograd(layer, x)
