"""Unnormalised target densities: their stated log-normalisers match a grid integral."""

import math

import pytest
import torch

from survae import registry
from survae.distributions.targets import DoubleWell, GaussianMixtureTarget, RingEnergy
from survae.testing import grid_integral

KNOWN = [
    ("ring", {}),
    ("gaussian_mixture", {}),
    ("double_well", {}),
    ("double_well", {"a": 1.0, "b": 2.0, "c": 0.5}),
]


@pytest.mark.parametrize("name,kwargs", KNOWN)
def test_log_normalizer_matches_the_grid_integral(name, kwargs):
    target = registry.build("target", name, **kwargs)
    total = grid_integral(lambda x: target(x), -8.0, 8.0, n=800)
    assert math.isclose(math.log(total), target.log_normalizer, abs_tol=1e-4)


def test_registered_targets_and_shapes():
    assert registry.get("target", "ring") is RingEnergy
    assert registry.get("target", "gaussian_mixture") is GaussianMixtureTarget
    assert registry.get("target", "double_well") is DoubleWell
    moons = registry.build("target", "two_moons_energy")
    assert moons.log_normalizer is None
    x = torch.randn(7, 2) * 3
    assert moons(x).shape == (7,) and torch.isfinite(moons(x)).all()
    # two moons: mass near the crescents at x1 = ±2, little at the origin
    assert moons(torch.tensor([[2.0, 0.0]])) > moons(torch.tensor([[0.0, 0.0]])) + 10


def test_higher_dimensional_double_well_normaliser():
    well = DoubleWell(dim=5)
    low = DoubleWell(dim=1)
    assert math.isclose(well.log_normalizer - low.log_normalizer, 2 * math.log(2 * math.pi))
    assert well(torch.zeros(3, 5)).shape == (3,)
    with pytest.raises(Exception, match="DoubleWell"):
        well(torch.zeros(3, 4))


def test_bad_settings_are_named():
    with pytest.raises(ValueError, match="ring"):
        RingEnergy(width=0.0)
    with pytest.raises(ValueError, match="gaussian_mixture"):
        GaussianMixtureTarget(std=-1.0)
