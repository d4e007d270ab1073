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


def test_spatial_only_pixelcnn_sees_earlier_pixels_only():
    C, H, W = 2, 3, 3
    net = _randomize(
        PixelCNN(C, 2 * C, filters=4, num_blocks=1, output_filters=6, spatial_only=True)
    ).double()
    x = torch.randn(1, C, H, W, dtype=torch.float64)
    J = torch.autograd.functional.jacobian(net, x).reshape(2 * C, H * W, C, H * W)
    pixel = torch.arange(H * W)
    not_before = pixel.view(-1, 1) <= pixel.view(1, -1)
    assert torch.all(J.permute(1, 3, 0, 2)[not_before] == 0)
    assert J.abs().sum() > 0
    # a 2-D flow on it inverts in H·W passes
    from survae.testing import assert_invertible
    from survae.transforms import AffineAutoregressive2d

    net_spec = {"name": "pixelcnn", "filters": 4, "num_blocks": 1, "output_filters": 6,
                "spatial_only": True}  # fmt: skip
    layer = _randomize(AffineAutoregressive2d(C, net_spec, order="raster_wh")).double()
    assert_invertible(layer, x.expand(2, -1, -1, -1).contiguous(), atol=1e-8, rtol=1e-8)
