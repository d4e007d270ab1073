"""Class-conditional Glow's top prior: openai/glow's ``--ycond`` embedding and survae's."""

import math
from pathlib import Path

import pytest
import torch
import yaml

from survae.architectures.conditional import ConditionalGlowTopPrior, conditional_glow

SHAPE = (4, 2, 2)
CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def _randomized(prior: ConditionalGlowTopPrior) -> ConditionalGlowTopPrior:
    torch.manual_seed(0)
    with torch.no_grad():
        for p in prior.parameters():
            p.normal_(std=0.3)
    return prior.double()


def test_openai_ycond_is_linear_zeros_with_its_output_scale():
    prior = _randomized(ConditionalGlowTopPrior(SHAPE, 3, ycond="openai"))
    c = torch.eye(3, dtype=torch.float64)[[0, 2, 1, 2]]
    mean, log_std = prior.mean_and_log_std(c)
    assert mean.shape == log_std.shape == (4, *SHAPE)
    # openai/glow model.prior: h += (y W + b) · exp(3 logs), mean = h[:C], log-std = h[C:]
    W, b, logs = prior.context_map.weight, prior.context_map.bias, prior.context_logs
    h = (c @ W.T + b) * torch.exp(3 * logs)
    top_mean, top_log_std = prior.top.mean_and_log_std()
    torch.testing.assert_close(mean, top_mean + h[:, :4, None, None])
    torch.testing.assert_close(log_std, top_log_std + h[:, 4:, None, None])
    x = torch.randn(4, *SHAPE, dtype=torch.float64)
    u = (x - mean) / log_std.exp()
    expected = (-0.5 * (u**2 + math.log(2 * math.pi)) - log_std).flatten(1).sum(1)
    torch.testing.assert_close(prior.log_prob(x, c), expected)


def test_linear_ycond_is_survaes_map_without_a_scale():
    prior = _randomized(ConditionalGlowTopPrior(SHAPE, 3, ycond="linear"))
    assert prior.context_logs is None
    c = torch.eye(3, dtype=torch.float64)
    mean, log_std = prior.mean_and_log_std(c)
    h = prior.context_map(c)
    top_mean, top_log_std = prior.top.mean_and_log_std()
    torch.testing.assert_close(mean, top_mean + h[:, :4, None, None])
    torch.testing.assert_close(log_std, top_log_std + h[:, 4:, None, None])


def test_openai_ycond_starts_at_zero_and_learns_its_scale():
    prior = ConditionalGlowTopPrior(SHAPE, 3, ycond="openai")
    c = torch.eye(3)
    h = prior.class_shift(c)
    assert h.shape == (3, 8) and h.abs().max() == 0
    with torch.no_grad():
        prior.context_map.bias.fill_(0.5)
    x = torch.randn(3, *SHAPE)
    prior.log_prob(x, c).sum().backward()
    assert prior.context_logs.grad.abs().max() > 0
    n = sum(p.numel() for p in prior.parameters())
    n_linear = sum(p.numel() for p in ConditionalGlowTopPrior(SHAPE, 3).parameters())
    assert n - n_linear == 8  # one logs per output: official W [3, 8], b [8], logs [8]


def test_builder_default_is_survaes_and_the_config_picks_openai():
    def tiny(**kw):
        return conditional_glow((1, 8, 8), 17, 10, num_levels=1, num_steps=1,
                                hidden_channels=4, **kw)  # fmt: skip

    assert (
        tiny().base_dist.ycond == "linear"
    )  # checkpoints saved before the option load as they were
    assert tiny(ycond="openai").base_dist.ycond == "openai"
    config = yaml.safe_load((CONFIGS / "model" / "conditional_glow.yaml").read_text())
    assert config["ycond"] == "openai"  # the paper's model: openai/glow's --ycond


def test_unknown_ycond_raises():
    with pytest.raises(ValueError, match="ycond"):
        ConditionalGlowTopPrior(SHAPE, 3, ycond="other")
