"""The residual_flow builder: the official image layout (dequantization, logit, scales of
convolutional blocks with ActNorm, squeezes, fully connected blocks at the end) and vectors."""

import math

import pytest
import torch

from survae import registry
from survae.architectures.autoregressive import Flatten
from survae.config_check import ConfigError
from survae.testing import grid_integral
from survae.transforms.bijections.actnorm import ActNorm
from survae.transforms.bijections.residual import ConvResidualBlock, ResidualBlock
from survae.transforms.bijections.squeeze import Squeeze2d

TINY = {"num_blocks": [2, 1], "hidden": 8, "fc_blocks": 1, "fc_hidden": 8}


def test_image_layout_follows_the_official_model():
    flow = registry.build("architecture", "residual_flow", data_shape=(1, 4, 4), num_bins=256,
                          **TINY)  # fmt: skip
    kinds = [type(t).__name__ for t in flow.transforms]
    assert kinds == [
        "UniformDequantization", "Logit", "ActNorm",
        "ConvResidualBlock", "ActNorm", "ConvResidualBlock", "ActNorm", "Squeeze2d",
        "ConvResidualBlock", "ActNorm", "Flatten", "ResidualBlock", "ActNorm",
    ]  # fmt: skip
    convs = [t for t in flow.transforms if isinstance(t, ConvResidualBlock)]
    assert not isinstance(convs[0].net[0], type(convs[1].net[0]))  # no pre-activation first
    assert convs[2].image_size == (2, 2) and convs[2].num_channels == 4
    assert isinstance(flow.transforms[7], Squeeze2d) and isinstance(flow.transforms[10], Flatten)
    assert isinstance(flow.transforms[-1], ActNorm)
    assert not flow.exact  # the roulette estimate is not an exact log-likelihood


def test_image_model_trains_a_step_and_samples():
    torch.manual_seed(0)
    flow = registry.build("architecture", "residual_flow", data_shape=(3, 4, 4), num_bins=256,
                          **TINY)  # fmt: skip
    x = torch.randint(0, 256, (4, 3, 4, 4))
    loss = -flow.log_prob(x).mean()
    assert math.isfinite(loss.item())
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in flow.parameters() if p.grad is not None)
    flow.eval()
    samples = flow.sample(3)
    assert samples.shape == (3, 3, 4, 4)
    lp = flow.log_prob(x)
    assert lp.shape == (4,) and torch.isfinite(lp).all()


def test_vector_model_density_integrates_to_one():
    torch.manual_seed(0)
    flow = registry.build("architecture", "residual_flow", data_shape=(2,), num_blocks=[3],
                          vector_hidden=[16], eval_logdet="exact").double()  # fmt: skip
    assert sum(isinstance(t, ResidualBlock) for t in flow.transforms) == 3
    flow.train()
    flow.log_prob(torch.randn(256, 2, dtype=torch.float64))  # ActNorm initialisation
    flow.eval()
    assert flow.exact
    total = grid_integral(flow.log_prob, -10.0, 10.0, n=250)
    assert math.isclose(total, 1.0, abs_tol=5e-3), total


def test_i_resnet_settings_reach_every_block():
    flow = registry.build("architecture", "residual_flow", data_shape=(2,), num_blocks=[2],
                          vector_hidden=[8], logdet="series", n_terms=7,
                          neumann_grad=False)  # fmt: skip
    blocks = [t for t in flow.transforms if isinstance(t, ResidualBlock)]
    assert len(blocks) == 2
    assert all(b.logdet == "series" and b.n_terms == 7 and not b.neumann_grad for b in blocks)


def test_bad_shapes_are_named():
    with pytest.raises(ConfigError, match="divisible by 4"):
        registry.build("architecture", "residual_flow", data_shape=(1, 6, 6), num_bins=256,
                       num_blocks=[1, 1, 1])  # fmt: skip
    with pytest.raises(ValueError, match="num_bins"):
        registry.build("architecture", "residual_flow", data_shape=(1, 4, 4))
    with pytest.raises(ConfigError, match=r"\(D,\) or \(C, H, W\)"):
        registry.build("architecture", "residual_flow", data_shape=(2, 3), num_bins=None)
