"""Squeeze2d / Unsqueeze2d: ordering, invertibility, ldj, error messages."""

import pytest
import torch

from survae import registry
from survae.errors import ShapeError
from survae.testing import assert_invertible, assert_logdet_matches_autograd
from survae.transforms.bijections.squeeze import Squeeze2d, Unsqueeze2d


def test_registered():
    assert registry.get("layer", "squeeze") is Squeeze2d
    assert registry.get("layer", "unsqueeze") is Unsqueeze2d


@pytest.mark.parametrize("factor", [2, 3])
def test_ordering(factor):
    B, C, H, W = 2, 3, 2 * factor, 3 * factor
    x = torch.randn(B, C, H, W)
    z, ldj = Squeeze2d(factor)(x)
    assert z.shape == (B, C * factor**2, H // factor, W // factor)
    assert torch.equal(ldj, torch.zeros(B))
    # output channel c·f² + i·f + j at (h, w) is input channel c at (h·f + i, w·f + j)
    for c in range(C):
        for i in range(factor):
            for j in range(factor):
                assert torch.equal(
                    z[:, c * factor**2 + i * factor + j], x[:, c, i::factor, j::factor]
                )


def test_squeeze_2x2_example():
    x = torch.arange(16.0).view(1, 1, 4, 4)
    z, _ = Squeeze2d()(x)
    assert z[0, :, 0, 0].tolist() == [0.0, 1.0, 4.0, 5.0]
    assert z[0, :, 1, 1].tolist() == [10.0, 11.0, 14.0, 15.0]


@pytest.mark.parametrize("factor", [2, 3])
def test_invertible_and_logdet(factor):
    for layer, shape in [
        (Squeeze2d(factor), (2, 2, 2 * factor, factor)),
        (Unsqueeze2d(factor), (2, 2 * factor**2, 2, 1)),
    ]:
        x = torch.randn(shape, dtype=torch.float64)
        for mode in (True, False):
            layer.train(mode)
            assert_invertible(layer, x, atol=0, rtol=0)
        assert_logdet_matches_autograd(layer, x)


def test_unsqueeze_inverts_squeeze():
    x = torch.randn(2, 3, 4, 6)
    z, _ = Squeeze2d()(x)
    y, ldj = Unsqueeze2d()(z)
    assert torch.equal(y, x) and torch.equal(ldj, torch.zeros(2))
    assert torch.equal(Unsqueeze2d().inverse(x), z)


def test_errors():
    with pytest.raises(
        ShapeError, match=r"Squeeze2d: H and W must be divisible by the factor 2.*\(2, 3, 5, 4\)"
    ):
        Squeeze2d()(torch.randn(2, 3, 5, 4))
    with pytest.raises(
        ShapeError, match=r"Squeeze2d: H and W must be divisible by the factor 3.*\(1, 1, 6, 4\)"
    ):
        Squeeze2d(3)(torch.randn(1, 1, 6, 4))
    with pytest.raises(
        ShapeError,
        match=r"Unsqueeze2d: the channel count must be divisible by factor² = 4.*\(2, 6, 2, 2\)",
    ):
        Unsqueeze2d()(torch.randn(2, 6, 2, 2))
    with pytest.raises(ShapeError, match="Squeeze2d.*factor² = 4.*latent"):
        Squeeze2d().inverse(torch.randn(2, 6, 2, 2))
    with pytest.raises(ShapeError, match="Unsqueeze2d: H and W.*latent"):
        Unsqueeze2d().inverse(torch.randn(2, 4, 3, 2))
    with pytest.raises(ShapeError, match=r"Squeeze2d.*\(batch, C, H, W\).*\(2, 4\)"):
        Squeeze2d()(torch.randn(2, 4))
    with pytest.raises(ValueError, match="factor must be a positive int"):
        Squeeze2d(0)
