"""The torus toy: seeded angle pairs in [-π, π)², with mass across the ±π seam."""

import math

import numpy as np

from survae import registry
from survae.data.torus import sample_torus_mixture


def test_samples_lie_on_the_torus_and_cross_the_seam():
    pts = sample_torus_mixture(20000, np.random.default_rng(0))
    assert pts.shape == (20000, 2) and pts.dtype == np.float32
    assert (pts >= -math.pi).all() and (pts < math.pi).all()
    near_seam = (np.abs(pts) > 3.0).any(axis=1).mean()
    assert near_seam > 0.05
    np.testing.assert_array_equal(pts, sample_torus_mixture(20000, np.random.default_rng(0)))


def test_data_module():
    dm = registry.build("dataset", "torus_mixture", train_size=64, val_size=8, test_size=8,
                        batch_size=16)  # fmt: skip
    assert dm.kind == "toy" and dm.shape == (2,)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch.shape == (16, 2) and (batch.abs() <= math.pi).all()
