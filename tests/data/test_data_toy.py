"""2-D toy data: support inside (-4, 4)^2, seeding, split sizes and the shapes of the densities."""

import numpy as np
import pytest
import torch

from survae import registry
from survae.data.toy import SAMPLERS, TOY_LIMIT, UNBOUNDED, sample_toy

TOY = sorted(SAMPLERS)


@pytest.mark.parametrize("name", TOY)
def test_toy_module_splits_dtype_and_support(name):
    dm = registry.build(
        "dataset", name, batch_size=64, train_size=5000, val_size=700, test_size=300
    )
    dm.setup()
    sizes = [len(dm.train_set), len(dm.val_set), len(dm.test_set)]
    assert sizes == [5000, 700, 300]
    for ds in (dm.train_set, dm.val_set, dm.test_set):
        x = ds.data
        assert x.dtype == torch.float32 and x.shape[1:] == (2,)
        assert bool(torch.isfinite(x).all())
        if name not in UNBOUNDED:
            assert float(x.abs().max()) <= TOY_LIMIT < 4.0  # strictly inside (-4, 4)
        assert float(x.std()) > 0.3  # not degenerate
    batch = next(iter(dm.train_dataloader()))
    assert batch.shape == (64, 2) and batch.dtype == torch.float32


@pytest.mark.parametrize("name", TOY)
def test_toy_seeding(name):
    a = sample_toy(name, 500, np.random.default_rng(3))
    b = sample_toy(name, 500, np.random.default_rng(3))
    c = sample_toy(name, 500, np.random.default_rng(4))
    assert np.array_equal(a, b) and not np.allclose(a, c)


def test_toy_splits_independent_of_train_size_and_seed():
    small = registry.build("dataset", "corners", train_size=100, val_size=50, test_size=50)
    big = registry.build("dataset", "corners", train_size=400, val_size=50, test_size=50)
    other = registry.build("dataset", "corners", train_size=100, val_size=50, test_size=50,
                           data_seed=1)  # fmt: skip
    for dm in (small, big, other):
        dm.setup()
    assert torch.equal(small.test_set.data, big.test_set.data)
    assert torch.equal(small.val_set.data, big.val_set.data)
    assert not torch.allclose(small.train_set.data[:50], small.test_set.data)
    assert not torch.equal(small.test_set.data, other.test_set.data)


def test_rejection_keeps_points_inside():
    # Eight Gaussians (std 0.354 around radius 2.83) and pinwheel exceed 4 without rejection.
    for name in ("eight_gaussians", "pinwheel"):
        x = sample_toy(name, 200_000, 0)
        assert len(x) == 200_000 and np.abs(x).max() <= TOY_LIMIT


def test_checkerboard_occupies_alternate_cells():
    x = sample_toy("checkerboard", 20_000, 0)
    cell = np.floor(x / 2).astype(int)  # cells of side 2 in [-4, 4)
    assert np.all((cell[:, 0] + cell[:, 1]) % 2 == 0)
    counts = np.unique(cell[:, 0] * 10 + cell[:, 1], return_counts=True)[1]
    assert len(counts) == 8 and counts.min() > 0.8 * counts.max()


def test_corners_l_shapes():
    x = np.abs(sample_toy("corners", 20_000, 0))
    assert x.min() >= 1.0
    assert np.all((x[:, 0] <= 2) | (x[:, 1] <= 2))  # inside the L of each quadrant
    signs, counts = np.unique(np.sign(sample_toy("corners", 20_000, 1)), axis=0, return_counts=True)
    assert len(signs) == 4 and counts.min() > 4000  # all four quadrants, evenly


def test_eight_gaussians_and_rings_radii():
    x = sample_toy("eight_gaussians", 20_000, 0)
    angles = np.arctan2(x[:, 1], x[:, 0])
    k = np.round((angles - np.pi / 8) / (np.pi / 4)) % 8
    centres = 4 / 1.414 * np.stack([np.cos(np.pi / 8 + k * np.pi / 4),
                                    np.sin(np.pi / 8 + k * np.pi / 4)], 1)  # fmt: skip
    resid = x - centres
    assert abs(resid.std() - 0.5 / 1.414) < 0.02
    assert np.bincount(k.astype(int), minlength=8).min() > 2000
    r = np.linalg.norm(sample_toy("rings", 20_000, 0), axis=1)
    nearest = np.round(r / 0.75).clip(1, 4) * 0.75
    assert np.abs(r - nearest).std() < 0.1
    assert np.allclose(np.bincount((nearest / 0.75).astype(int))[1:] / 20_000, 0.25, atol=0.02)


def test_four_circles_radius():
    x = sample_toy("four_circles", 20_000, 0)
    centres = np.array([[a, b] for a in (-1, 1) for b in (-1, 1)], dtype=float)
    dist = np.abs(np.linalg.norm(x[:, None] - centres[None], axis=2) - 2.0).min(1)
    assert np.percentile(dist, 95) < 0.25  # every point near one of the radius-2 circles


def test_unknown_toy_name():
    with pytest.raises(KeyError, match="checkerboard"):
        sample_toy("checkers", 10)


@pytest.mark.parametrize(
    "name,mean,var,swap",
    [
        ("crescent", lambda t: 0.5 * t**2 - 1, np.exp(-2.0), True),
        ("crescent_cubed", lambda t: 0.2 * t**3, 1.0, True),
        ("sinewave", lambda t: np.sin(5 * t), np.exp(-2.0), False),
        ("abs", lambda t: np.abs(t) - 1, np.exp(-3.0), False),
        ("sign", lambda t: np.sign(t) + t, np.exp(-3.0), False),
    ],
)
def test_official_plane_sets_conditional_moments(name, mean, var, swap):
    x = sample_toy(name, 400_000, 0).astype(np.float64)
    if swap:  # stored as (x2, x1)
        x = x[:, ::-1]
    assert abs(x[:, 0].mean()) < 0.01 and abs(x[:, 0].std() - 1) < 0.01  # x1 ~ N(0, 1)
    # narrow bins away from sign's jump at 0: the conditional mean and variance of x2
    for lo in (-1.2, -0.6, 0.3, 0.9):
        sel = x[(x[:, 0] > lo) & (x[:, 0] < lo + 0.02)]
        centre = lo + 0.01
        # five standard errors, plus the mean's change across the 0.02-wide bin
        tol = 5 * np.sqrt(var / len(sel)) + 0.02 * (5 if name == "sinewave" else 1.5)
        assert abs(sel[:, 1].mean() - mean(centre)) < tol
        assert abs(sel[:, 1].var() / var - 1) < 0.25


def test_gaussian_and_diamond():
    x = sample_toy("gaussian", 200_000, 0)
    np.testing.assert_allclose(x.std(0), [1.0, 0.5], rtol=0.01)
    d = sample_toy("diamond", 100_000, 0) @ (np.array([[1.0, 1.0], [-1.0, 1.0]]) / np.sqrt(2))
    # rotated back: 20 × 20 grid points 5/19 apart on [-2.5, 2.5]², std 0.04 around them
    offset = (d + 2.5) / (5 / 19)
    assert np.abs(offset - np.round(offset)).mean() < 0.15
    assert np.abs(d).max() < 2.5 + 0.3
    assert len(np.unique(np.clip(np.round(offset), 0, 19), axis=0)) == 400
    for name in ("gaussian", "crescent", "diamond"):
        assert registry.get("dataset", name).name == name
