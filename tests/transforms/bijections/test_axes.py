"""Rotate, PermuteAxes, Reshape, Permute: zero log-determinant rearrangements."""

import pytest
import torch

from survae import registry
from survae.distributions import StandardNormal
from survae.errors import ShapeError
from survae.flows import Flow
from survae.testing import assert_invertible, assert_logdet_matches_autograd
from survae.transforms import Permute, PermuteAxes, Reshape, Rotate


def test_registered():
    for name, cls in [
        ("rotate", Rotate),
        ("permute_axes", PermuteAxes),
        ("reshape", Reshape),
        ("permute", Permute),
    ]:
        assert registry.get("layer", name) is cls


@pytest.mark.parametrize("degrees", [90, 180, 270])
def test_rotate(degrees):
    x = torch.randn(2, 1, 2, 3, dtype=torch.float64)
    layer = Rotate(degrees, 2, 3)
    z, ldj = assert_invertible(layer, x, atol=0, rtol=0)
    assert z.shape == ((2, 1, 3, 2) if degrees != 180 else x.shape)
    assert torch.equal(ldj, torch.zeros(2, dtype=torch.float64))
    assert_logdet_matches_autograd(
        Rotate(degrees, 2, 3), torch.randn(2, 1, 2, 2, dtype=torch.float64)
    )
    # 90° counter-clockwise: the top-right corner goes to the top-left
    img = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])
    quarter = {
        90: [[2.0, 4.0], [1.0, 3.0]],
        180: [[4.0, 3.0], [2.0, 1.0]],
        270: [[3.0, 1.0], [4.0, 2.0]],
    }
    assert torch.equal(Rotate(degrees)(img)[0][0, 0], torch.tensor(quarter[degrees]))


def test_permute_axes():
    x = torch.randn(2, 3, 4, 5, dtype=torch.float64)
    layer = PermuteAxes([0, 2, 3, 1])
    z, _ = assert_invertible(layer, x, atol=0, rtol=0)
    assert z.shape == (2, 4, 5, 3)
    assert torch.equal(z, x.permute(0, 2, 3, 1))
    assert_logdet_matches_autograd(layer, torch.randn(2, 2, 3, 2, dtype=torch.float64))
    flow = Flow(StandardNormal((4, 5, 3)), [layer])
    assert flow.sample(3).shape == (3, 3, 4, 5)
    with pytest.raises(ValueError, match="batch axis 0 first"):
        PermuteAxes([1, 0, 2])
    with pytest.raises(ShapeError, match="needs a 4-D input"):
        layer(torch.randn(2, 3))


def test_reshape():
    layer = Reshape((2, 3, 3), (18,))
    x = torch.randn(4, 2, 3, 3, dtype=torch.float64)
    z, ldj = assert_invertible(layer, x, atol=0, rtol=0)
    assert z.shape == (4, 18) and torch.equal(ldj, torch.zeros(4, dtype=torch.float64))
    assert_logdet_matches_autograd(layer, x[:2])
    flow = Flow(StandardNormal(18), [layer])
    assert flow.sample(5).shape == (5, 2, 3, 3)
    with pytest.raises(ValueError, match="different numbers of elements"):
        Reshape((2, 3), (5,))
    with pytest.raises(ShapeError):
        layer(torch.randn(4, 18))


@pytest.mark.parametrize("dim", [1, 2, 3])
def test_permute_along_any_dim(dim):
    x = torch.randn(2, 3, 3, 3, dtype=torch.float64)
    for perm in ([2, 0, 1], "random", "reverse"):
        layer = Permute(perm, dim=dim, size=3, seed=1)
        z, ldj = assert_invertible(layer, x, atol=0, rtol=0)
        assert torch.equal(z, x.index_select(dim, layer.perm))
        assert_logdet_matches_autograd(
            layer,
            x[:, :2, :2, :2].contiguous()
            if dim == 0
            else torch.randn(2, 3, 3, 3, dtype=torch.float64),
        )
    assert torch.equal(Permute("reverse", size=4).perm, torch.tensor([3, 2, 1, 0]))
    assert torch.equal(
        Permute("random", size=6, seed=3).perm, Permute("random", size=6, seed=3).perm
    )
    with pytest.raises(ValueError, match="not a permutation"):
        Permute([0, 0, 1])
    with pytest.raises(ValueError, match="dim must be an integer >= 1"):
        Permute([0, 1], dim=0)
    with pytest.raises(ShapeError, match="3 entries along dim 2"):
        Permute([2, 0, 1], dim=2)(torch.randn(2, 3, 4))


def test_dtype_and_device_moves_work():
    # nn.Module.to() / .double() go through Module._apply; the layers must not shadow it
    for layer in (
        Rotate(90),
        PermuteAxes([0, 2, 3, 1]),
        Reshape((1, 2, 2), (4,)),
        Permute("reverse", size=1),
    ):
        moved = layer.double()
        assert moved is layer
    perm = Permute("random", size=5).to(torch.float64)
    assert perm.perm.dtype == torch.long
