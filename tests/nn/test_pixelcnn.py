"""PixelCNN: masks, and outputs that depend only on inputs earlier in raster order."""

import pytest
import torch

from survae import registry
from survae.nn import PixelCNN
from survae.nn.pixelcnn import conv_mask


def _order_index(C, H, W):
    """Position of (c, h, w) in raster order: rows, columns, then channels."""
    c, h, w = torch.meshgrid(torch.arange(C), torch.arange(H), torch.arange(W), indexing="ij")
    return (h * W + w) * C + c


def _randomize(net):
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * 0.3)
    return net


@pytest.mark.parametrize("C", [1, 3])
def test_pixelcnn_is_autoregressive_in_raster_order(C):
    assert registry.get("network", "pixelcnn") is PixelCNN
    H = W = 4
    P = 2
    net = _randomize(
        PixelCNN(C, P * C, filters=6, num_blocks=2, output_filters=8, kernel_size_in=5)
    ).double()
    x = torch.randn(1, C, H, W, dtype=torch.float64)
    J = torch.autograd.functional.jacobian(net, x).reshape(P, C, H, W, C, H, W)
    order = _order_index(C, H, W)
    earlier = order.view(C, H, W, 1, 1, 1) > order.view(1, 1, 1, C, H, W)
    for p in range(P):  # output (p, c, h, w) sees inputs strictly earlier than (c, h, w)
        assert torch.all(J[p][~earlier] == 0)
    # and does see some of them (the masks are not all zero)
    assert J[0][earlier].abs().sum() > 0


def test_mask_centre_rules():
    a = conv_mask("A", 3, 6, 3, 3, 3)
    b = conv_mask("B", 3, 6, 3, 3, 3)
    assert torch.equal(a[:3, :, 1, 1], torch.tensor([[0, 0, 0], [1, 0, 0], [1, 1, 0]]).float())
    assert torch.equal(b[3:, :, 1, 1], torch.tensor([[1, 0, 0], [1, 1, 0], [1, 1, 1]]).float())
    assert torch.all(a[:, :, 2] == 0) and torch.all(a[:, :, 1, 2] == 0)
    assert torch.all(a[:, :, 0] == 1)
    with pytest.raises(ValueError, match="mask_type"):
        conv_mask("C", 1, 1, 3, 3, 1)
    with pytest.raises(ValueError, match="multiple of in_channels"):
        PixelCNN(3, 4)
    net = PixelCNN(1, 2, filters=4, num_blocks=1, output_filters=4, zero_init_output=True)
    assert torch.equal(net(torch.randn(2, 1, 5, 5)), torch.zeros(2, 2, 5, 5))
