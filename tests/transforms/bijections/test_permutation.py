"""Reverse and RandomPermutation."""

import pytest
import torch

from survae import registry
from survae.errors import ShapeError
from survae.testing import assert_invertible, assert_logdet_matches_autograd
from survae.transforms.bijections.permutation import RandomPermutation, Reverse

SHAPES = [(3, 5), (2, 5, 3), (2, 5, 3, 3)]


def test_registered():
    assert registry.get("layer", "reverse") is Reverse
    assert registry.get("layer", "random_permutation") is RandomPermutation


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize(
    "make", [lambda: Reverse(), lambda: Reverse(5), lambda: RandomPermutation(5)]
)
def test_invertible_and_logdet(shape, make):
    layer = make()
    x = torch.randn(shape, dtype=torch.float64)
    for mode in (True, False):
        layer.train(mode)
        z, ldj = assert_invertible(layer, x, atol=0, rtol=0)
        assert z.shape == x.shape and torch.equal(ldj, torch.zeros(shape[0], dtype=x.dtype))
    assert_logdet_matches_autograd(layer, x)


def test_reverse_values():
    x = torch.arange(4.0).view(1, 4)
    assert Reverse()(x)[0].tolist() == [[3.0, 2.0, 1.0, 0.0]]
    img = torch.randn(2, 3, 2, 2)
    z, _ = Reverse()(img)
    assert torch.equal(z[:, 0], img[:, 2]) and torch.equal(z[:, 2], img[:, 0])


def test_random_permutation_is_seeded_and_stored():
    a, b, c = (
        RandomPermutation(10, seed=3),
        RandomPermutation(10, seed=3),
        RandomPermutation(10, seed=4),
    )
    assert torch.equal(a.perm, b.perm) and not torch.equal(a.perm, c.perm)
    assert sorted(a.perm.tolist()) == list(range(10))
    assert torch.equal(a.perm[a.inverse_perm], torch.arange(10))
    state = a.state_dict()
    assert {"perm", "inverse_perm"} <= set(state)
    c.load_state_dict(state)
    x = torch.randn(4, 10)
    assert torch.equal(c(x)[0], a(x)[0])
    assert torch.equal(a(x)[0], x[:, a.perm])
    # construction must not consume the global random stream
    torch.manual_seed(0)
    r1 = torch.rand(1)
    torch.manual_seed(0)
    RandomPermutation(10)
    assert torch.equal(torch.rand(1), r1)


def test_errors():
    with pytest.raises(ShapeError, match=r"RandomPermutation.*\(\*, 5\).*\(3, 4\)"):
        RandomPermutation(5)(torch.randn(3, 4))
    with pytest.raises(ShapeError, match=r"Reverse.*latent.*\(\*, 5, 2, 2\).*\(3, 4, 2, 2\)"):
        Reverse(5).inverse(torch.randn(3, 4, 2, 2))
    with pytest.raises(ShapeError, match="Reverse"):
        Reverse()(torch.randn(3))
