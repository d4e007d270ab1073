"""SortSurjection and StochasticPermutation on point sets in both layouts."""

import math
from itertools import permutations

import pytest
import torch

import survae  # noqa: F401
from survae import Flow, registry
from survae.distributions import StandardNormal
from survae.errors import ShapeError
from survae.transforms.surjections.permutation import SortSurjection, StochasticPermutation


def _same_multiset_of_points(a, b):
    """Each example of ``a`` [B, N, D] holds the same points as in ``b`` (any order)."""
    for pa, pb in zip(a, b):
        ka = sorted(map(tuple, pa.tolist()))
        kb = sorted(map(tuple, pb.tolist()))
        assert ka == kb


@pytest.mark.parametrize("key_index", [0, 1])
def test_sort_points_last_layout(key_index):
    x = torch.randn(4, 7, 3)
    layer = SortSurjection(point_dim=1, key_index=key_index)
    z, ldj = layer(x)
    assert z.shape == x.shape
    key = z[:, :, key_index]
    assert (key[:, 1:] >= key[:, :-1]).all()
    _same_multiset_of_points(z, x)  # points move as a whole
    torch.testing.assert_close(ldj, torch.full((4,), -math.lgamma(8)))
    assert layer.exact


def test_sort_transposed_layout_and_inverse():
    x = torch.randn(5, 2, 6)  # SurVAE layout [B, D, N]
    layer = SortSurjection(point_dim=2, key_index=0)
    z, ldj = layer(x)
    assert (z[:, 0, 1:] >= z[:, 0, :-1]).all()
    _same_multiset_of_points(z.transpose(1, 2), x.transpose(1, 2))
    torch.testing.assert_close(ldj, torch.full((5,), -math.log(720.0)))
    x_rand = layer.inverse(z)
    _same_multiset_of_points(x_rand.transpose(1, 2), z.transpose(1, 2))
    torch.testing.assert_close(layer(x_rand)[0], z)  # right inverse


def test_sort_flow_with_iid_base_gives_iid_density_up_to_log_n_factorial():
    flow = Flow(StandardNormal((5, 2)), [SortSurjection()])
    x = torch.randn(3, 5, 2)
    iid = (-0.5 * x**2 - 0.5 * math.log(2 * math.pi)).sum((1, 2))
    torch.testing.assert_close(flow.log_prob(x), iid - math.lgamma(6))


def test_sort_inverse_is_uniform_over_orderings():
    z = torch.tensor([[[0.0], [1.0], [2.0]]]).expand(6000, 3, 1)
    x = SortSurjection().inverse(z)[:, :, 0]
    counts = {p: 0 for p in permutations(range(3))}
    for row in x.long().tolist():
        counts[tuple(row)] += 1
    freq = torch.tensor(list(counts.values()), dtype=torch.float32) / 6000
    torch.testing.assert_close(freq, torch.full((6,), 1 / 6), atol=0.02, rtol=0)


def test_sort_errors():
    with pytest.raises(ShapeError, match=r"SortSurjection.*\(4, 5\)"):
        SortSurjection()(torch.randn(4, 5))
    with pytest.raises(ShapeError, match="key_index=3"):
        SortSurjection(key_index=3)(torch.randn(2, 4, 3))
    with pytest.raises(ValueError, match="point_dim"):
        SortSurjection(point_dim=3)


@pytest.mark.parametrize("point_dim", [1, 2])
def test_stochastic_permutation_permutes_points_per_example(point_dim):
    layer = StochasticPermutation(point_dim=point_dim)
    x = torch.randn(64, 10, 2) if point_dim == 1 else torch.randn(64, 2, 10)
    z, ldj = layer(x)
    assert z.shape == x.shape and torch.equal(ldj, torch.zeros(64))
    pts = (lambda t: t) if point_dim == 1 else (lambda t: t.transpose(1, 2))
    _same_multiset_of_points(pts(z), pts(x))
    # different examples get different permutations
    order = pts(z)[:, :, 0].unsqueeze(2) == pts(x)[:, :, 0].unsqueeze(1)  # [B, N, N]
    perms = order.float().argmax(2)
    assert len({tuple(p) for p in perms.tolist()}) > 60
    x_back = layer.inverse(z)
    _same_multiset_of_points(pts(x_back), pts(x))
    assert not layer.exact and layer.stochastic_forward
    assert isinstance(registry.build("layer", "stochastic_permutation"), StochasticPermutation)


def test_stochastic_permutation_is_uniform():
    x = torch.arange(3.0).view(1, 3, 1).expand(6000, 3, 1)
    z, _ = StochasticPermutation()(x)
    counts = {p: 0 for p in permutations(range(3))}
    for row in z[:, :, 0].long().tolist():
        counts[tuple(row)] += 1
    freq = torch.tensor(list(counts.values()), dtype=torch.float32) / 6000
    torch.testing.assert_close(freq, torch.full((6,), 1 / 6), atol=0.02, rtol=0)


def test_stochastic_permutation_errors():
    with pytest.raises(ShapeError, match=r"points along dim 2.*\(3, 4\)"):
        StochasticPermutation(point_dim=2)(torch.randn(3, 4))
