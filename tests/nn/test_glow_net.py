"""GlowNet, ZeroConv2d and the network-internal ActNorm2d."""

import pytest
import torch

from survae.errors import ShapeError
from survae.nn.build import build_network
from survae.nn.glow import ActNorm2d, GlowNet, ZeroConv2d
from survae.registry import get


def _assert_all_grads(net: torch.nn.Module) -> None:
    for name, p in net.named_parameters():
        assert p.grad is not None, f"{name} got no gradient"
        assert p.grad.abs().sum() > 0, f"{name} has an all-zero gradient"


def test_registered_and_built_by_name():
    assert get("network", "glow_net") is GlowNet
    net = build_network({"name": "glow_net", "hidden_channels": 8}, 3, 6)
    assert isinstance(net, GlowNet) and net.conv1.out_channels == 8


@pytest.mark.parametrize("actnorm", [True, False])
def test_shape_and_zero_output_at_init(actnorm):
    net = GlowNet(3, 6, hidden_channels=16, actnorm=actnorm)
    x = torch.randn(4, 3, 5, 7)
    for mode in (net.train, net.eval):
        mode()
        y = net(x)
        assert y.shape == (4, 6, 5, 7)
        assert torch.equal(y, torch.zeros_like(y))


@pytest.mark.parametrize("actnorm", [True, False])
def test_gradients_reach_all_parameters(actnorm):
    net = GlowNet(2, 4, hidden_channels=8, actnorm=actnorm)
    with torch.no_grad():
        net.out.conv.weight.normal_(std=0.1)
        net.out.logs.normal_(std=0.1)
    x = torch.randn(3, 2, 4, 4)
    loss = (net(x) - torch.randn(3, 4, 4, 4)).square().sum()
    loss.backward()
    _assert_all_grads(net)


def test_hidden_convs_have_no_bias_with_actnorm():
    assert GlowNet(2, 4, 8, actnorm=True).conv1.bias is None
    assert GlowNet(2, 4, 8, actnorm=False).conv1.bias is not None


def test_zero_conv_scale_factor():
    zc = ZeroConv2d(3, 2, kernel_size=3, logscale_factor=3.0)
    x = torch.randn(2, 3, 4, 4)
    assert torch.equal(zc(x), torch.zeros(2, 2, 4, 4))
    with torch.no_grad():
        zc.conv.weight.normal_()
        zc.conv.bias.normal_()
        zc.logs.copy_(torch.tensor([0.1, -0.2]))
    expected = zc.conv(x) * torch.exp(3 * torch.tensor([0.1, -0.2])).view(1, 2, 1, 1)
    torch.testing.assert_close(zc(x), expected)


def test_actnorm_data_dependent_init():
    an = ActNorm2d(3)
    x = torch.randn(16, 3, 4, 4) * torch.tensor([2.0, 0.5, 3.0]).view(1, 3, 1, 1) + 1.5
    y = an(x)  # training mode: initialises from this batch
    torch.testing.assert_close(y.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-5, rtol=0)
    torch.testing.assert_close(
        y.std(dim=(0, 2, 3), unbiased=False), torch.ones(3), atol=1e-4, rtol=0
    )
    # parameters are kept afterwards: a differently scaled batch is not re-normalised
    y2 = an(x * 2)
    assert y2.std(dim=(0, 2, 3), unbiased=False).min() > 1.5


def test_actnorm_no_init_in_eval_and_state_dict_roundtrip():
    an = ActNorm2d(2).eval()
    x = torch.randn(8, 2, 3, 3) * 4 + 2
    torch.testing.assert_close(an(x), x)  # eval: identity, not initialised
    an.train()
    an(x)
    fresh = ActNorm2d(2)
    fresh.load_state_dict(an.state_dict())
    x2 = torch.randn(8, 2, 3, 3) * 10
    torch.testing.assert_close(fresh(x2), an(x2))  # loaded params used, no re-initialisation


def test_wrong_channels_raise_shape_error():
    net = GlowNet(3, 6, hidden_channels=8)
    with pytest.raises(ShapeError, match=r"GlowNet.*\(\*, 3, \*, \*\).*\(2, 4, 5, 5\)"):
        net(torch.randn(2, 4, 5, 5))
    with pytest.raises(ShapeError, match="GlowNet"):
        net(torch.randn(2, 3, 5))


# --------------------------------------------------------------------------- folded actnorm
def _reference_zero_conv(zc: ZeroConv2d, x: torch.Tensor) -> torch.Tensor:
    """ZeroConv2d as defined: conv, border term, then the output scale (no folding)."""
    h = zc.conv(x)
    if zc.edge is not None:
        h = h + zc.edge(x)
    return h * (zc.logscale_factor * zc.logs).exp().view(1, -1, 1, 1)


def _reference_glow_net(net: GlowNet, x: torch.Tensor) -> torch.Tensor:
    """GlowNet as defined: each ActNorm2d applied to the convolution's output."""
    h = net.conv1(x)
    if net.conv1_edge is not None:
        h = h + net.conv1_edge(x)
    h = torch.relu(net.norm1(h))
    h = torch.relu(net.norm2(net.conv2(h)))
    return _reference_zero_conv(net.out, h)


def _randomised(net: torch.nn.Module) -> torch.nn.Module:
    """Every parameter moved off its (often zero) initial value, so a wrong fold shows."""
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn_like(p) * 0.2)
    return net


@pytest.mark.parametrize("edge_bias", [False, True])
@pytest.mark.parametrize("actnorm", [True, False])
def test_folded_actnorm_is_the_same_function_with_the_same_gradients(actnorm, edge_bias):
    net = GlowNet(3, 6, hidden_channels=8, actnorm=actnorm, edge_bias=edge_bias).double()
    x = torch.randn(4, 3, 5, 6, dtype=torch.double)
    net.train()
    net(x)  # data-dependent initialisation (unfolded path)
    _randomised(net)
    target = torch.randn(4, 6, 5, 6, dtype=torch.double)
    grads = []
    for fn in (net, lambda v: _reference_glow_net(net, v)):
        net.zero_grad()
        y = fn(x)
        (y - target).square().sum().backward()
        grads.append({n: p.grad.clone() for n, p in net.named_parameters()})
        grads[-1]["__out__"] = y.detach()
    assert grads[0].keys() == grads[1].keys()
    for name in grads[0]:
        torch.testing.assert_close(grads[0][name], grads[1][name], rtol=1e-10, atol=1e-12)


def test_folding_waits_for_the_data_dependent_initialisation():
    net = GlowNet(2, 4, hidden_channels=8)
    assert not net._foldable()
    x = torch.randn(16, 2, 4, 4) * 3 + 1
    assert not net.norm1._is_initialized
    net.eval()
    assert net._foldable()  # evaluation never initialises: folding is exact
    net.train()
    net(x)
    assert net._foldable() and net.norm1._is_initialized
    h = net.norm1(net.conv1(x))
    torch.testing.assert_close(h.mean(dim=(0, 2, 3)), torch.zeros(8), atol=1e-5, rtol=0)


def test_folding_keeps_parameters_and_state_dict_keys():
    net = GlowNet(3, 6, hidden_channels=8, edge_bias=True)
    assert sorted(net.state_dict()) == [
        "conv1.weight",
        "conv1_edge.weight",
        "conv2.weight",
        "norm1.bias",
        "norm1.initialized",
        "norm1.logs",
        "norm2.bias",
        "norm2.initialized",
        "norm2.logs",
        "out.conv.bias",
        "out.conv.weight",
        "out.edge.weight",
        "out.logs",
    ]
    assert sum(p.numel() for p in net.parameters()) == 3 * 9 * 8 + 9 * 8 + 8 * 8 + 4 * 8 + (
        8 * 9 * 6 + 6 + 9 * 6 + 6
    )


def test_glow_log_prob_unchanged_by_folding(monkeypatch):
    """A whole (small) Glow: log p with folded ActNorms equals log p with the layers as
    defined, after the data-dependent initialisation and a parameter perturbation."""
    from survae.models import build_model

    torch.manual_seed(0)
    spec = {"architecture": "glow", "num_levels": 2, "num_steps": 2, "hidden_channels": 8}
    model = build_model(spec, (3, 8, 8), num_bins=256).double().train()
    x = torch.randint(0, 256, (4, 3, 8, 8))
    torch.manual_seed(1)
    model.log_prob(x)  # initialisation
    _randomised(model)
    model.eval()
    torch.manual_seed(2)
    folded = model.log_prob(x)
    monkeypatch.setattr(GlowNet, "forward", _reference_glow_net)
    monkeypatch.setattr(ZeroConv2d, "forward", _reference_zero_conv)
    torch.manual_seed(2)
    reference = model.log_prob(x)
    assert torch.isfinite(reference).all()
    torch.testing.assert_close(folded, reference, rtol=1e-10, atol=1e-8)


def test_actnorm_logscale_factor_keeps_the_network_function_and_folds():
    """glow_net with openai/glow's actnorm logscale_factor 3: after the data-dependent start
    the function equals the factor-1 network's, folded (training) and unfolded alike."""
    from survae.nn.glow import GlowNet

    torch.manual_seed(0)
    a = GlowNet(4, 8, hidden_channels=16, zero_init_output=False)
    b = GlowNet(4, 8, hidden_channels=16, zero_init_output=False, actnorm_logscale_factor=3.0)
    b.load_state_dict(a.state_dict())
    x = torch.randn(8, 4, 6, 6)
    a.train(), b.train()
    torch.testing.assert_close(b(x), a(x))  # data-dependent start, then the folded path
    torch.testing.assert_close(b.norm1.logs * 3.0, a.norm1.logs)
    torch.testing.assert_close(b(x), a(x), atol=1e-5, rtol=1e-5)
    a.eval(), b.eval()
    torch.testing.assert_close(b(x), a(x), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("init", ["openai", "survae"])
def test_actnorm_init_scale_is_the_formula_on_a_known_batch(init):
    # channel 1 has std 1e-6, where the two formulas differ by a factor of about √2
    x = torch.tensor([[1.0, 2.0, 0.0], [3.0, 6.0, 2e-6]], dtype=torch.float64)
    x = x.view(2, 3, 1, 1).repeat(1, 1, 2, 2)
    an = ActNorm2d(3, logscale_factor=3.0, init=init).double()
    an(x)
    mean = torch.tensor([2.0, 4.0, 1e-6], dtype=torch.float64)
    std = torch.tensor([1.0, 2.0, 1e-6], dtype=torch.float64)
    if init == "openai":  # openai/glow tfops.actnorm_scale: log(1 / (sqrt(var) + 1e-6)) / 3
        scale = 1 / (std + 1e-6)
    else:
        scale = 1 / torch.sqrt(std**2 + 1e-6)
    torch.testing.assert_close(an.bias, -mean)
    torch.testing.assert_close(an.logs, torch.log(scale) / 3)
    torch.testing.assert_close(an.scale(), scale)


def test_actnorm_init_unknown_raises():
    with pytest.raises(ValueError, match="init"):
        ActNorm2d(3, init="other")


def test_glow_builder_passes_the_actnorm_init_to_every_network_actnorm():
    from survae.architectures.glow import glow

    def inits(**kw):
        flow = glow((1, 8, 8), num_levels=1, num_steps=2, hidden_channels=4, **kw)
        return {m.init for m in flow.modules() if isinstance(m, ActNorm2d)}

    assert inits() == {"openai"}  # the official default
    assert inits(actnorm_init="survae") == {"survae"}
