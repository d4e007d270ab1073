"""The ``naf`` architecture: NAF-DSF and UMNN flows on vectors, autoregressive or coupling."""

import math

import pytest
import torch

from survae import registry
from survae.config_check import ConfigError
from survae.testing import grid_integral
from survae.transforms.bijections.dsf import DSFAutoregressive, DSFCoupling
from survae.transforms.bijections.permutation import Reverse
from survae.transforms.bijections.umnn import UMNNAutoregressive, UMNNCoupling

SMALL = {"num_steps": 2, "hidden": [8], "num_units": 4, "embedding": 2, "integrand_hidden": [8]}


@pytest.mark.parametrize(
    "transform,conditioner,cls",
    [
        ("dsf", "autoregressive", DSFAutoregressive),
        ("dsf", "coupling", DSFCoupling),
        ("umnn", "autoregressive", UMNNAutoregressive),
        ("umnn", "coupling", UMNNCoupling),
    ],
)
def test_naf_builds_the_named_layers_and_a_normalised_density(transform, conditioner, cls):
    flow = registry.build(
        "architecture", "naf", data_shape=(2,), transform=transform, conditioner=conditioner,
        **SMALL,
    )  # fmt: skip
    kinds = [type(t) for t in flow.transforms]
    assert kinds.count(cls) == 2
    assert (Reverse in kinds) == (conditioner == "autoregressive")
    torch.manual_seed(0)
    with torch.no_grad():
        for p in flow.parameters():
            p.add_(torch.randn_like(p) * 0.2)
    flow = flow.double()
    total = grid_integral(flow.log_prob, -30.0, 30.0, n=500)
    assert math.isclose(total, 1.0, abs_tol=3e-3), total


def test_naf_rejects_bad_settings_by_name():
    with pytest.raises(ConfigError, match="transform"):
        registry.build("architecture", "naf", data_shape=(3,), transform="affine")
    with pytest.raises(ConfigError, match="conditioner"):
        registry.build("architecture", "naf", data_shape=(3,), conditioner="dag")
    with pytest.raises(ConfigError, match="continuous vectors"):
        registry.build("architecture", "naf", data_shape=(1, 4, 4), num_bins=256)
