"""survae.nn.conv: the few-channel rewrites compute F.conv2d's function, gradients and second
derivatives, are chosen where they apply and only there, and Conv2d is a drop-in nn.Conv2d."""

from unittest import mock

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from survae.nn import conv as conv_mod
from survae.nn.conv import Conv2d, conv2d_same
from survae.nn.flowpp import FlowPPNet
from survae.nn.glow import GlowNet
from survae.nn.resnet import ResNet

# (in, out, kernel): few outputs, few inputs, both, neither, a 5×5 kernel, a 1×1 kernel
CASES = [(5, 4, 3), (2, 8, 3), (1, 2, 3), (8, 8, 3), (3, 1, 5), (3, 5, 1)]


def _path(cin: int, out: int, k: int) -> str:
    if k == 1:
        return "direct"
    if out * k * k <= conv_mod.FEW_OUTPUTS:
        return "few_outputs"
    if cin * k * k <= conv_mod.FEW_INPUTS:
        return "few_inputs"
    return "direct"


@pytest.mark.parametrize("cin,out,k", CASES)
@pytest.mark.parametrize("bias", [True, False])
def test_same_function_and_gradients_as_conv2d(cin, out, k, bias):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, cin, 5, 7, generator=g, dtype=torch.float64, requires_grad=True)
    w = torch.randn(out, cin, k, k, generator=g, dtype=torch.float64, requires_grad=True)
    b = torch.randn(out, generator=g, dtype=torch.float64, requires_grad=True) if bias else None
    inputs = (x, w) if b is None else (x, w, b)
    y = conv2d_same(x, w, b)
    ref = F.conv2d(x, w, b, padding=k // 2)
    assert y.shape == ref.shape
    torch.testing.assert_close(y, ref, rtol=1e-12, atol=1e-12)
    grads = torch.autograd.grad(y.sin().sum(), inputs)
    ref_grads = torch.autograd.grad(ref.sin().sum(), inputs)
    for got, want in zip(grads, ref_grads):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    small = (x[:1, :, :3, :4].detach().requires_grad_(), *inputs[1:])
    assert torch.autograd.gradcheck(lambda *t: conv2d_same(*t), small)
    assert torch.autograd.gradgradcheck(lambda *t: conv2d_same(*t), small)


def test_float32_close_to_conv2d():
    x = torch.randn(8, 64, 14, 14, requires_grad=True)
    w = torch.randn(4, 64, 3, 3, requires_grad=True)
    y, ref = conv2d_same(x, w), F.conv2d(x, w, padding=1)
    torch.testing.assert_close(y, ref, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("cin,out,k", CASES)
def test_rewrite_chosen_by_channel_counts(cin, out, k):
    x, w = torch.randn(2, cin, 4, 4), torch.randn(out, cin, k, k)
    spies = {
        "few_outputs": mock.patch.object(
            conv_mod._FewOutputConv2d, "apply", wraps=conv_mod._FewOutputConv2d.apply
        ),
        "few_inputs": mock.patch.object(
            conv_mod._FewInputConv2d, "apply", wraps=conv_mod._FewInputConv2d.apply
        ),
    }
    with spies["few_outputs"] as few_out, spies["few_inputs"] as few_in:
        conv2d_same(x, w)
    used = {"few_outputs": few_out.called, "few_inputs": few_in.called}
    expected = _path(cin, out, k)
    assert used == {name: name == expected for name in used}


def test_channels_last_input_and_autocast_use_the_library_convolution():
    x, w = torch.randn(2, 16, 4, 4), torch.randn(2, 16, 3, 3)
    few_outputs = conv_mod._FewOutputConv2d
    with mock.patch.object(few_outputs, "apply", wraps=few_outputs.apply) as spy:
        conv2d_same(x.contiguous(memory_format=torch.channels_last), w)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            conv2d_same(x, w)
        assert not spy.called
        conv2d_same(x, w)
        assert spy.called


def test_conv2d_is_a_drop_in_nn_conv2d():
    torch.manual_seed(0)
    plain = nn.Conv2d(16, 2, 3, padding=1)
    torch.manual_seed(0)
    ours = Conv2d(16, 2, 3, padding=1)
    assert ours.state_dict().keys() == plain.state_dict().keys()
    for key, value in plain.state_dict().items():
        assert torch.equal(ours.state_dict()[key], value)  # same initialisation
    x = torch.randn(3, 16, 6, 6)
    torch.testing.assert_close(ours(x), plain(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "kwargs", [{"stride": 2, "padding": 1}, {"padding": 0}, {"padding": 1, "dilation": 2}]
)
def test_other_configurations_are_nn_conv2d(kwargs):
    ours = Conv2d(8, 2, 3, **kwargs)
    plain = nn.Conv2d(8, 2, 3, **kwargs)
    plain.load_state_dict(ours.state_dict())
    x = torch.randn(2, 8, 9, 9)
    with mock.patch.object(conv_mod, "conv2d_same") as spy:
        y = ours(x)
    assert not spy.called
    assert torch.equal(y, plain(x))


@pytest.mark.parametrize(
    "build",
    [
        lambda: GlowNet(2, 4, hidden_channels=16),
        lambda: ResNet(2, 4, hidden_channels=16, num_blocks=1),
        lambda: FlowPPNet(3, 6, hidden_channels=16, num_blocks=1, image_size=(4, 4)),
    ],
    ids=["glow_net", "resnet", "flowpp_net"],
)
def test_networks_compute_what_plain_convolutions_compute(build):
    """The coupling networks give the same output and gradients with every survae Conv2d
    computed as nn.Conv2d (their state dicts load into each other unchanged)."""
    torch.manual_seed(0)
    net = build().double()
    for p in net.parameters():  # leave the zero-initialised output
        with torch.no_grad():
            p.add_(0.1 * torch.randn_like(p))
    x = torch.randn(2, net.in_channels, 4, 4, dtype=torch.float64)
    net.eval()
    y = net(x)
    grads = torch.autograd.grad(y.square().sum(), list(net.parameters()))
    with mock.patch.object(conv_mod, "_rewritable", return_value=False):
        ref = net(x)
        ref_grads = torch.autograd.grad(ref.square().sum(), list(net.parameters()))
    torch.testing.assert_close(y, ref, rtol=1e-10, atol=1e-12)
    for got, want in zip(grads, ref_grads):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)
