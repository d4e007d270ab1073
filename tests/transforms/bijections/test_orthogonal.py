"""Orthogonal channel mixing: Householder reflections and torch's orthogonal parametrization
give orthogonal matrices, log-det exactly 0, and transpose inverses on vectors and images."""

import pytest
import torch

from survae import Flow, registry
from survae.distributions import StandardNormal
from survae.testing import assert_invertible, autograd_logdet
from survae.transforms.bijections.orthogonal import HouseholderMixing, OrthogonalMixing

LAYERS = {
    "householder": lambda c: HouseholderMixing(c, num_reflections=3),
    "orthogonal_matrix_exp": lambda c: OrthogonalMixing(c, "matrix_exp"),
    "orthogonal_cayley": lambda c: OrthogonalMixing(c, "cayley"),
    "orthogonal_householder": lambda c: OrthogonalMixing(c, "householder"),
}


def test_registered():
    assert registry.get("layer", "householder") is HouseholderMixing
    assert registry.get("layer", "orthogonal") is OrthogonalMixing


@pytest.mark.parametrize("kind", LAYERS)
def test_matrix_is_orthogonal_and_the_layer_applies_it(kind):
    layer = LAYERS[kind](5).double()
    W = layer.matrix()
    torch.testing.assert_close(W @ W.T, torch.eye(5, dtype=torch.float64), atol=1e-12, rtol=0)
    assert (W - torch.eye(5, dtype=torch.float64)).abs().max() > 1e-2  # not the identity
    x = torch.randn(4, 5, dtype=torch.float64)
    torch.testing.assert_close(layer(x)[0], x @ W.T)


@pytest.mark.parametrize("kind", LAYERS)
def test_round_trip_and_exact_zero_logdet_on_vectors_and_images(kind):
    layer = LAYERS[kind](3).double()
    x = torch.randn(6, 3, dtype=torch.float64)
    z, ldj = assert_invertible(layer, x, atol=1e-10, rtol=1e-10)
    assert torch.equal(ldj, torch.zeros(6, dtype=torch.float64))
    torch.testing.assert_close(autograd_logdet(layer, x), ldj, atol=1e-10, rtol=0)
    img = torch.randn(2, 3, 4, 4, dtype=torch.float64)
    zi, ldj_i = assert_invertible(layer, img, atol=1e-10, rtol=1e-10)
    W = layer.matrix()
    torch.testing.assert_close(zi, torch.einsum("ij,bjhw->bihw", W, img))
    assert torch.equal(ldj_i, torch.zeros(2, dtype=torch.float64))


@pytest.mark.parametrize("kind", LAYERS)
def test_training_keeps_the_matrix_orthogonal(kind):
    torch.manual_seed(0)
    layer = LAYERS[kind](4)
    flow = Flow(StandardNormal(4), [layer])
    target = torch.randn(4, 4)
    opt = torch.optim.SGD(flow.parameters(), lr=0.1)
    for _ in range(5):
        loss = ((layer(torch.eye(4))[0] - target) ** 2).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    W = layer.matrix()
    torch.testing.assert_close(W @ W.T, torch.eye(4), atol=1e-5, rtol=0)
    assert flow.log_prob(torch.randn(3, 4)).shape == (3,)


def test_bad_settings_are_named():
    with pytest.raises(ValueError, match="num_reflections"):
        HouseholderMixing(3, num_reflections=0)
    with pytest.raises(ValueError, match="orthogonal_map"):
        OrthogonalMixing(3, "qr")
    with pytest.raises(Exception, match="HouseholderMixing"):
        HouseholderMixing(3)(torch.randn(2, 4))
