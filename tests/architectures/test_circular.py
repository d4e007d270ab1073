"""The circular_flow builder: a flow on the torus whose density integrates to 1 and which
learns angle data across the ±π seam."""

import math

import numpy as np
import pytest
import torch

from survae import registry
from survae.config_check import ConfigError
from survae.data.torus import sample_torus_mixture
from survae.testing import grid_integral


@pytest.mark.parametrize("conditioner", ["coupling", "autoregressive"])
def test_density_integrates_to_one_over_the_torus(conditioner):
    torch.manual_seed(0)
    flow = registry.build("architecture", "circular_flow", data_shape=(2,),
                          conditioner=conditioner, hidden=[16]).double()  # fmt: skip
    for p in flow.parameters():
        torch.nn.init.normal_(p, std=0.1)
    total = grid_integral(flow.log_prob, -math.pi, math.pi, n=300)
    assert math.isclose(total, 1.0, abs_tol=1e-3), total
    flow = flow.float()
    x, log_p = flow.sample_with_log_prob(64)
    assert (x >= -math.pi).all() and (x < math.pi).all()
    torch.testing.assert_close(log_p, flow.log_prob(x), atol=1e-4, rtol=1e-4)


def test_training_on_the_torus_mixture_beats_the_uniform_density():
    torch.manual_seed(0)
    data = torch.from_numpy(sample_torus_mixture(4096, np.random.default_rng(0)))
    flow = registry.build("architecture", "circular_flow", data_shape=(2,), hidden=[32])
    opt = torch.optim.Adam(flow.parameters(), lr=3e-3)
    for _ in range(150):
        batch = data[torch.randint(0, len(data), (256,))]
        loss = -flow.log_prob(batch).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    nll = -flow.log_prob(data).mean().item()
    assert nll < math.log(4 * math.pi**2) - 1.0, nll  # uniform on the torus: log 4π²


def test_bad_settings_are_named():
    with pytest.raises(ConfigError, match="angle vectors"):
        registry.build("architecture", "circular_flow", data_shape=(1, 2, 2))
    with pytest.raises(ConfigError, match="at least 2"):
        registry.build("architecture", "circular_flow", data_shape=(1,))
