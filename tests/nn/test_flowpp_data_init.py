"""The official Flow++ data-dependent initialisation of the coupling networks' convolutions
(flows/flows.py conv2d/dense; flows_imagenet's weight-normalised versions)."""

import pytest
import torch

from survae.nn.flowpp import DataInitConv2d, FlowPPNet, WeightNormConv2d, conv2d
from survae.nn.flowpp_context import FlowPPContextNet


def _batch() -> torch.Tensor:
    torch.manual_seed(0)
    return torch.randn(8, 3, 6, 6, dtype=torch.float64) * 3 + 1


@pytest.mark.parametrize("cls", [DataInitConv2d, WeightNormConv2d])
@pytest.mark.parametrize("init_scale", [1.0, 0.1])
def test_first_training_batch_gets_the_official_mean_and_std(cls, init_scale):
    x = _batch()
    conv = cls(3, 5, 3, init_scale, padding=1).double()
    assert conv.bias.abs().max() == 0  # official: b starts at 0, W (or V) ~ N(0, 0.05²)
    assert 0.03 < conv.weight.std() < 0.07
    if cls is WeightNormConv2d:
        assert torch.equal(conv.weight_g, torch.ones(5, dtype=torch.float64))  # official g = 1
        W0 = conv.weight / conv.weight.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
    else:
        W0 = conv.weight.clone()
    y0 = torch.nn.functional.conv2d(x, W0, conv.bias, padding=1)
    m, v = y0.mean((0, 2, 3)), y0.var((0, 2, 3), unbiased=False)
    s = init_scale * torch.rsqrt(v + 1e-8)
    y = conv(x)  # training mode: initialises from this batch, then computes with it
    torch.testing.assert_close(y, (y0 - m.view(1, -1, 1, 1)) * s.view(1, -1, 1, 1))
    torch.testing.assert_close(y.mean((0, 2, 3)), torch.zeros(5, dtype=torch.float64))
    torch.testing.assert_close(y.std((0, 2, 3), unbiased=False), torch.full_like(m, init_scale))
    torch.testing.assert_close(conv.bias, -m * s)
    if cls is WeightNormConv2d:
        torch.testing.assert_close(conv.weight_g, s)  # the gains: g = init_scale / std
    # done once: a second, differently scaled batch keeps the parameters
    assert conv(2 * x).std((0, 2, 3), unbiased=False).min() > 1.5 * init_scale


def test_no_init_in_eval_mode_and_none_after_loading():
    x = _batch()
    trained = DataInitConv2d(3, 4, 3, 1.0, padding=1).double()
    trained(x)
    with torch.no_grad():
        trained.weight.mul_(3)  # "trained" further
    fresh = DataInitConv2d(3, 4, 3, 1.0, padding=1).double()
    assert set(fresh.state_dict()) == {"weight", "bias"}  # no extra state-dict entries
    fresh.load_state_dict(trained.state_dict())
    torch.testing.assert_close(fresh(x), trained(x))  # training mode, not re-initialised
    plain = DataInitConv2d(3, 4, 3, 1.0, padding=1).double().eval()
    before = plain.weight.clone()
    plain(x)
    assert torch.equal(plain.weight, before)


def test_without_init_scale_the_layers_are_as_before():
    torch.manual_seed(1)
    a = conv2d(3, 4, 3)
    torch.manual_seed(1)
    b = conv2d(3, 4, 3, init_scale=None)
    assert type(a) is type(b) and torch.equal(a.weight, b.weight)
    assert not isinstance(a, DataInitConv2d)
    torch.manual_seed(1)
    wn = conv2d(3, 4, 3, weight_norm=True)
    torch.testing.assert_close(wn.weight_g, wn.weight.flatten(1).norm(dim=1))
    torch.testing.assert_close(wn.weight, a.weight)


def test_flowpp_net_with_data_init_has_the_official_scales_and_a_nonzero_output():
    net = FlowPPNet(3, 6, hidden_channels=8, num_blocks=1, dropout=0.0, image_size=(6, 6),
                    data_init=True).double()  # fmt: skip
    scales = {
        name: m.init_scale for name, m in net.named_modules() if isinstance(m, DataInitConv2d)
    }
    assert scales == {"inp": 1.0, "blocks.0.conv.conv1": 1.0, "blocks.0.conv.conv2": 0.1,
                      "blocks.0.attn.qkv": 1.0, "blocks.0.attn.proj": 0.1, "out": 0.1}  # fmt: skip
    x = _batch()
    y = net(x)
    # official proj_out (init_scale 0.1): the coupling does not start at the identity
    torch.testing.assert_close(y.mean((0, 2, 3)), torch.zeros(6, dtype=torch.float64))
    torch.testing.assert_close(
        y.std((0, 2, 3), unbiased=False), torch.full((6,), 0.1, dtype=torch.float64)
    )
    plain = FlowPPNet(3, 6, hidden_channels=8, num_blocks=1, dropout=0.0, image_size=(6, 6))
    assert plain(x.float()).abs().max() == 0  # survae's: zero output convolution


def test_context_net_with_data_init():
    net = FlowPPContextNet(3, 8, num_blocks=2, data_init=True).double()
    scales = sorted(m.init_scale for m in net.modules() if isinstance(m, DataInitConv2d))
    assert scales == [0.1, 0.1, 1.0, 1.0, 1.0]  # official shallow_processor: proj, 2 × (c1, c2)
    h = net(_batch())
    assert h.shape == (8, 8, 6, 3)
