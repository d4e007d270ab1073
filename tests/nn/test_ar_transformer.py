"""The autoregressive 2-D transformer: outputs depend only on earlier elements in raster
order, and it drives the 2-D autoregressive flows."""

import pytest
import torch

from survae import registry
from survae.nn import AutoregressiveTransformer2d
from survae.testing import assert_invertible, assert_logdet_matches_autograd
from survae.transforms import AffineAutoregressive2d


def _randomize(net):
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * 0.3)
    return net


@pytest.mark.parametrize("C", [1, 2])
def test_causal_in_raster_order(C):
    assert registry.get("network", "ar_transformer_2d") is AutoregressiveTransformer2d
    H, W, P = 2, 3, 2
    net = _randomize(AutoregressiveTransformer2d(C, P * C, embed_dim=8, num_heads=2)).double()
    net.eval()
    x = torch.randn(1, C, H, W, dtype=torch.float64)
    J = torch.autograd.functional.jacobian(net, x).reshape(P, C * H * W, C * H * W)
    c, h, w = torch.meshgrid(torch.arange(C), torch.arange(H), torch.arange(W), indexing="ij")
    order = ((h * W + w) * C + c).reshape(-1)
    not_before = order.view(-1, 1) <= order.view(1, -1)  # output i, input j at or after i
    assert torch.all(J[:, not_before] == 0)
    assert J[:, ~not_before].abs().sum() > 0


def test_flow_on_the_transformer():
    net = {"name": "ar_transformer_2d", "embed_dim": 8, "num_heads": 2, "num_layers": 1}
    layer = _randomize(AffineAutoregressive2d(2, net)).double().eval()
    x = torch.randn(2, 2, 2, 2, dtype=torch.float64)
    assert_invertible(layer, x, atol=1e-8, rtol=1e-8)
    assert_logdet_matches_autograd(layer, x)
    zero = AutoregressiveTransformer2d(1, 2)
    assert torch.equal(zero(torch.randn(1, 1, 2, 2)), torch.zeros(1, 2, 2, 2))
    with pytest.raises(ValueError, match="multiple of in_channels"):
        AutoregressiveTransformer2d(2, 3)
