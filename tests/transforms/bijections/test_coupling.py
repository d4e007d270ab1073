"""Affine and additive couplings: invertibility, log-determinants, masks, context, errors."""

import pytest
import torch
from torch import nn

from survae import registry
from survae.errors import ShapeError
from survae.testing import assert_invertible, assert_logdet_matches_autograd
from survae.transforms.bijections.coupling import AdditiveCoupling, AffineCoupling

MLP_RANDOM = {"name": "mlp", "hidden": [16], "zero_init_output": False}
SCALE_FNS = ["sigmoid", "exp", "softplus", "tanh_exp"]


class TinyConv(nn.Module):
    """conv3x3 → tanh → conv3x3; the last layer optionally zero-initialised."""

    def __init__(self, cin: int, cout: int, zero: bool = False):
        super().__init__()
        self.a = nn.Conv2d(cin, 8, 3, padding=1)
        self.b = nn.Conv2d(8, cout, 3, padding=1)
        if zero:
            nn.init.zeros_(self.b.weight)
            nn.init.zeros_(self.b.bias)

    def forward(self, x):
        return self.b(torch.tanh(self.a(x)))


class TinyConv1d(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.a = nn.Conv1d(cin, 8, 3, padding=1)
        self.b = nn.Conv1d(8, cout, 3, padding=1)

    def forward(self, x):
        return self.b(torch.tanh(self.a(x)))


def _image_coupling(cls, C, mask="channel", ctx=0, zero=False, **kw):
    n_cond = C // 2 if mask == "channel" else C
    n_trans = C - C // 2 if mask == "channel" else C
    P = 2 if cls is AffineCoupling else 1
    return cls(C, TinyConv(n_cond + ctx, P * n_trans, zero), mask=mask, context_channels=ctx, **kw)


def test_registered():
    assert registry.get("layer", "affine_coupling") is AffineCoupling
    assert registry.get("layer", "additive_coupling") is AdditiveCoupling


@pytest.mark.parametrize("scale_fn", SCALE_FNS)
@pytest.mark.parametrize("mask", ["channel", "checkerboard"])
@pytest.mark.parametrize("reverse_mask", [False, True])
def test_affine_vector_invertible_and_logdet(scale_fn, mask, reverse_mask):
    layer = AffineCoupling(
        4, MLP_RANDOM, mask=mask, scale_fn=scale_fn, reverse_mask=reverse_mask
    ).double()
    x = torch.randn(3, 4, dtype=torch.float64)
    for mode in (True, False):
        layer.train(mode)
        z, ldj = assert_invertible(layer, x, atol=1e-9, rtol=1e-9)
        assert z.shape == x.shape
        assert not torch.allclose(z, x)
        assert_logdet_matches_autograd(layer, x)


@pytest.mark.parametrize("cls", [AffineCoupling, AdditiveCoupling])
@pytest.mark.parametrize("mask", ["channel", "checkerboard"])
def test_image_invertible_and_logdet(cls, mask):
    kw = {"scale_fn": "tanh_exp"} if cls is AffineCoupling else {}
    layer = _image_coupling(cls, 4, mask=mask, **kw).double()
    x = torch.randn(2, 4, 4, 4, dtype=torch.float64)
    for mode in (True, False):
        layer.train(mode)
        z, ldj = assert_invertible(layer, x, atol=1e-9, rtol=1e-9)
        assert z.shape == x.shape
        assert_logdet_matches_autograd(layer, x)
    if cls is AdditiveCoupling:
        assert torch.equal(ldj, torch.zeros(2, dtype=torch.float64))


def test_sequence_input():
    layer = AffineCoupling(4, TinyConv1d(2, 4), scale_fn="exp").double()
    x = torch.randn(2, 4, 5, dtype=torch.float64)
    assert_invertible(layer, x, atol=1e-9, rtol=1e-9)
    assert_logdet_matches_autograd(layer, x)
    cb = AffineCoupling(3, TinyConv1d(3, 6), mask="checkerboard", scale_fn="exp").double()
    x = torch.randn(2, 3, 5, dtype=torch.float64)
    assert_invertible(cb, x, atol=1e-9, rtol=1e-9)
    assert_logdet_matches_autograd(cb, x)


def test_odd_channels_with_split_sizes():
    layer = AffineCoupling(5, MLP_RANDOM, split_sizes=(2, 3), scale_fn="exp").double()
    x = torch.randn(3, 5, dtype=torch.float64)
    z, _ = assert_invertible(layer, x, atol=1e-9, rtol=1e-9)
    torch.testing.assert_close(z[:, :2], x[:, :2])
    assert_logdet_matches_autograd(layer, x)
    rev = AffineCoupling(5, MLP_RANDOM, split_sizes=(2, 3), reverse_mask=True).double()
    z, _ = assert_invertible(rev, x, atol=1e-9, rtol=1e-9)
    torch.testing.assert_close(z[:, 2:], x[:, 2:])  # second chunk conditions
    assert not torch.allclose(z[:, :2], x[:, :2])
    assert rev.net[0].in_features == 3 and rev.net[-1].out_features == 4


@pytest.mark.parametrize("scale_fn", ["exp", "tanh_exp"])
def test_identity_at_init_with_zero_init_net(scale_fn):
    vec = AffineCoupling(6, "mlp", scale_fn=scale_fn)  # MLP zero-inits its output layer
    x = torch.randn(5, 6)
    z, ldj = vec(x)
    torch.testing.assert_close(z, x)
    torch.testing.assert_close(ldj, torch.zeros(5))
    img = _image_coupling(AffineCoupling, 4, mask="checkerboard", zero=True, scale_fn=scale_fn)
    x = torch.randn(2, 4, 4, 4)
    z, ldj = img(x)
    torch.testing.assert_close(z, x)
    torch.testing.assert_close(ldj, torch.zeros(2))


def test_sigmoid_scale_at_zero_is_sigmoid_two():
    layer = AffineCoupling(4, "mlp", scale_fn="sigmoid")
    x = torch.randn(3, 4)
    z, ldj = layer(x)
    s = torch.sigmoid(torch.tensor(2.0))
    torch.testing.assert_close(z[:, 2:], x[:, 2:] * s)
    torch.testing.assert_close(ldj, torch.full((3,), 2 * torch.log(s).item()))


def test_channel_mask_keeps_conditioning_half():
    layer = AffineCoupling(4, MLP_RANDOM, scale_fn="exp")
    x = torch.randn(3, 4)
    z, _ = layer(x)
    torch.testing.assert_close(z[:, :2], x[:, :2])
    assert not torch.allclose(z[:, 2:], x[:, 2:])


@pytest.mark.parametrize("reverse_mask", [False, True])
def test_checkerboard_touches_only_unmasked_positions(reverse_mask):
    layer = _image_coupling(
        AffineCoupling, 3, mask="checkerboard", scale_fn="exp", reverse_mask=reverse_mask
    )
    x = torch.randn(2, 3, 4, 4)
    z, _ = layer(x)
    h = torch.arange(4).view(4, 1)
    w = torch.arange(4).view(1, 4)
    cond = ((h + w) % 2 == (1 if reverse_mask else 0)).expand(2, 3, 4, 4)
    assert torch.equal(z[cond], x[cond])
    assert (z[~cond] != x[~cond]).all()
    # z at conditioning positions must not depend on transformed positions' values, and the
    # transformed positions must depend only on conditioning ones (not on themselves via net)
    x2 = x.clone()
    x2[~cond] += 1.0
    z2, _ = layer(x2)
    assert torch.equal(z2[cond], z[cond])
    # for vectors: alternating features
    vec = AffineCoupling(5, MLP_RANDOM, mask="checkerboard", scale_fn="exp")
    v = torch.randn(3, 5)
    zv, _ = vec(v)
    torch.testing.assert_close(zv[:, 0::2], v[:, 0::2])
    assert (zv[:, 1::2] != v[:, 1::2]).all()
    assert vec.net[0].in_features == 5 and vec.net[-1].out_features == 10


@pytest.mark.parametrize("mask", ["channel", "checkerboard"])
def test_conditional_vector_coupling_uses_context(mask):
    layer = AffineCoupling(4, MLP_RANDOM, mask=mask, scale_fn="exp", context_channels=3).double()
    x = torch.randn(3, 4, dtype=torch.float64)
    ctx = torch.randn(3, 3, dtype=torch.float64)
    assert_invertible(layer, x, context=ctx, atol=1e-9, rtol=1e-9)
    assert_logdet_matches_autograd(layer, x, context=ctx)
    z1, ldj1 = layer(x, ctx)
    z2, ldj2 = layer(x, ctx + 1.0)
    assert not torch.allclose(z1, z2)
    assert not torch.allclose(ldj1, ldj2)
    with pytest.raises(ValueError, match="AffineCoupling.*context_channels=3.*context is required"):
        layer(x)
    with pytest.raises(ValueError, match="context is required"):
        layer.inverse(x)


def test_conditional_image_coupling_uses_context():
    layer = _image_coupling(AffineCoupling, 4, ctx=2, scale_fn="exp").double()
    x = torch.randn(2, 4, 4, 4, dtype=torch.float64)
    ctx = torch.randn(2, 2, 4, 4, dtype=torch.float64)
    assert_invertible(layer, x, context=ctx, atol=1e-9, rtol=1e-9)
    assert_logdet_matches_autograd(layer, x, context=ctx)
    z1, _ = layer(x, ctx)
    z2, _ = layer(x, torch.randn_like(ctx))
    assert not torch.allclose(z1, z2)
    with pytest.raises(
        ShapeError, match=r"AffineCoupling.*context.*\(2, 2, 4, 4\).*\(2, 2, 2, 2\)"
    ):
        layer(x, torch.randn(2, 2, 2, 2, dtype=torch.float64))


def test_unconditional_coupling_ignores_context():
    layer = AffineCoupling(4, MLP_RANDOM, scale_fn="exp")
    x = torch.randn(3, 4)
    torch.testing.assert_close(layer(x, torch.randn(3, 7))[0], layer(x)[0])


def test_odd_channels_error_message():
    with pytest.raises(
        ValueError, match="AffineCoupling.*even.*num_channels=3.*split_sizes.*checkerboard"
    ):
        AffineCoupling(3, "mlp")
    with pytest.raises(ValueError, match="AdditiveCoupling.*even"):
        AdditiveCoupling(5, "mlp")
    AffineCoupling(3, "mlp", mask="checkerboard")  # fine


def test_bad_arguments():
    with pytest.raises(ValueError, match="split_sizes.*num_channels=4"):
        AffineCoupling(4, "mlp", split_sizes=(1, 2))
    with pytest.raises(ValueError, match="split_sizes only applies"):
        AffineCoupling(4, "mlp", mask="checkerboard", split_sizes=(2, 2))
    with pytest.raises(ValueError, match="scale_fn.*valid: sigmoid, exp, softplus, tanh_exp"):
        AffineCoupling(4, "mlp", scale_fn="relu")
    with pytest.raises(ValueError, match="mask.*valid: channel, checkerboard"):
        AffineCoupling(4, "mlp", mask="stripes")


def test_wrong_input_shape_names_layer_and_shapes():
    layer = AffineCoupling(4, "mlp")
    with pytest.raises(ShapeError, match=r"AffineCoupling.*\(\*, 4\).*\(3, 5\)"):
        layer(torch.randn(3, 5))
    with pytest.raises(ShapeError, match=r"AffineCoupling.*latent.*\(3, 6\)"):
        layer.inverse(torch.randn(3, 6))
    with pytest.raises(ShapeError, match="AffineCoupling"):
        layer(torch.randn(4))


def test_wrong_network_output_is_reported():
    layer = AffineCoupling(4, nn.Linear(2, 3))
    with pytest.raises(ShapeError, match=r"AffineCoupling.*network output.*\(3, 4\).*\(3, 3\)"):
        layer(torch.randn(3, 4))


def test_net_spec_dict_gets_sizes():
    layer = AffineCoupling(6, {"name": "mlp", "hidden": [8]}, context_channels=2)
    assert layer.net[0].in_features == 5 and layer.net[-1].out_features == 6
    add = AdditiveCoupling(6, {"name": "mlp", "hidden": [8]})
    assert add.net[0].in_features == 3 and add.net[-1].out_features == 3


def test_softplus_log_scale_is_finite_for_large_negative():
    from survae.transforms.bijections.coupling import LOG_SCALE_FNS

    s = torch.tensor([-200.0, -30.0, -20.0, 0.0, 30.0], requires_grad=True)
    out = LOG_SCALE_FNS["softplus"](s)
    torch.testing.assert_close(out, torch.nn.functional.softplus(s.double()).log().float())
    out.sum().backward()
    assert torch.isfinite(s.grad).all()


def test_gradients_flow_to_network():
    layer = AffineCoupling(4, MLP_RANDOM, scale_fn="tanh_exp")
    z, ldj = layer(torch.randn(8, 4))
    (z.square().sum() - ldj.sum()).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in layer.parameters())


def test_with_registered_glow_net():
    if "glow_net" not in registry.available("network"):
        pytest.skip("glow_net not registered")
    layer = AffineCoupling(4, {"name": "glow_net", "hidden_channels": 8}, scale_fn="sigmoid")
    x = torch.randn(2, 4, 4, 4)
    z, ldj = assert_invertible(layer, x)
    assert z.shape == x.shape and ldj.shape == (2,)


def test_affine_coupling_shift_first_is_glows_order():
    """shift_first: z_b = (x_b + t) · s (openai/glow's revnet2d_step); same log-determinant,
    exact inverse, and a different function than x_b · s + t once t ≠ 0."""
    from survae.transforms.bijections.coupling import AffineCoupling

    torch.manual_seed(0)
    net = {"name": "mlp", "hidden": [8]}
    glow_order = AffineCoupling(4, net=net, mask="channel", scale_fn="exp", shift_first=True)
    plain = AffineCoupling(4, net=net, mask="channel", scale_fn="exp")
    plain.load_state_dict(glow_order.state_dict())
    with torch.no_grad():
        for p in glow_order.parameters():
            p.normal_(0, 0.3)
    plain.load_state_dict(glow_order.state_dict())
    x = torch.randn(5, 4)
    z, ldj = glow_order(x)
    h = glow_order.net(x[:, :2])
    shift, log_scale = h[:, :2], h[:, 2:]
    torch.testing.assert_close(z[:, 2:], (x[:, 2:] + shift) * log_scale.exp())
    torch.testing.assert_close(z[:, :2], x[:, :2])
    torch.testing.assert_close(ldj, log_scale.sum(1))
    torch.testing.assert_close(glow_order.inverse(z), x, atol=1e-5, rtol=1e-5)
    z_plain, ldj_plain = plain(x)
    torch.testing.assert_close(ldj_plain, ldj)
    assert not torch.allclose(z_plain, z)
