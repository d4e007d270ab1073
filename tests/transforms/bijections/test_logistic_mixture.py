"""Flow++ logistic-mixture CDF coupling: invertibility (also far in the tails), log-determinant,
bisection inverse, gradients through the inverse, masks, context, and bad input."""

import pytest
import torch
from torch import nn

from survae import registry
from survae.errors import ShapeError
from survae.testing import (
    assert_invertible,
    assert_logdet_matches_autograd,
    autograd_logdet,
)
from survae.transforms.bijections.logistic_mixture import (
    LogisticMixtureCoupling,
    mixture_logit_cdf,
    mixture_logit_cdf_inverse,
)

K = 3


def conv_net(in_channels: int, out_channels: int) -> nn.Module:
    """A tiny conv net with a zero-initialised last layer."""
    last = nn.Conv2d(8, out_channels, 3, padding=1)
    nn.init.zeros_(last.weight)
    nn.init.zeros_(last.bias)
    return nn.Sequential(nn.Conv2d(in_channels, 8, 3, padding=1), nn.Tanh(), last)


def _randomize(layer: LogisticMixtureCoupling, std: float = 0.3) -> LogisticMixtureCoupling:
    """Move the zero-initialised last layer away from the identity."""
    last = [m for m in layer.net.modules() if isinstance(m, (nn.Conv2d, nn.Linear))][-1]
    with torch.no_grad():
        last.weight.normal_(0.0, std)
        last.bias.normal_(0.0, std)
    return layer


def image_layer(mask: str = "channel", C: int = 4, context_channels: int = 0, **kw):
    cond = C // 2 if mask == "channel" else C
    out = (3 * K + 2) * (C // 2 if mask == "channel" else C)
    net = conv_net(cond + context_channels, out)
    return LogisticMixtureCoupling(
        C, net, num_components=K, mask=mask, context_channels=context_channels, **kw
    )


def vector_layer(mask: str = "channel", D: int = 4, **kw):
    net = {"name": "mlp", "hidden": [16], "activation_name": "tanh"}
    return LogisticMixtureCoupling(D, net, num_components=K, mask=mask, **kw)


CASES = [
    ("channel", {}),
    ("channel", {"flip": True}),
    ("checkerboard", {}),
    ("checkerboard", {"flip": True}),
]


@pytest.mark.parametrize("mask,kw", CASES)
def test_identity_at_init(mask, kw):
    layer = image_layer(mask, **kw)
    x = torch.randn(2, 4, 4, 4) * 5
    y, ldj = layer(x)
    torch.testing.assert_close(y, x, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ldj, torch.zeros(2), atol=1e-4, rtol=0)


@pytest.mark.parametrize("mask,kw", CASES)
@pytest.mark.parametrize("scale", [1.0, 20.0])
def test_round_trip_images_train_and_eval(mask, kw, scale):
    layer = _randomize(image_layer(mask, **kw))
    x = (torch.rand(3, 4, 4, 4) * 2 - 1) * scale  # |x| up to 20
    for mode in (layer.train, layer.eval):
        mode()
        y, _ = assert_invertible(layer, x, atol=1e-4, rtol=1e-4)
        assert (y - x).abs().max() > 1e-2  # not the identity


@pytest.mark.parametrize("mask", ["channel", "checkerboard"])
def test_round_trip_vectors(mask):
    layer = _randomize(vector_layer(mask))
    x = torch.randn(16, 4) * 10
    for mode in (layer.train, layer.eval):
        mode()
        assert_invertible(layer, x, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("mask,kw", CASES)
def test_ldj_matches_autograd_images(mask, kw):
    layer = _randomize(image_layer(mask, C=2, **kw)).double()
    x = torch.randn(2, 2, 3, 3, dtype=torch.float64) * 3
    assert_logdet_matches_autograd(layer, x)


@pytest.mark.parametrize("mask", ["channel", "checkerboard"])
def test_ldj_matches_autograd_vectors(mask):
    layer = _randomize(vector_layer(mask, D=6)).double()
    x = torch.randn(4, 6, dtype=torch.float64) * 3
    assert_logdet_matches_autograd(layer, x)


@pytest.mark.parametrize("mask", ["channel", "checkerboard"])
def test_gradients_through_bisection_inverse(mask):
    """The inverse's autograd Jacobian (through the bisection) has log-det = inverse ldj, and
    its gradients w.r.t. input, context and parameters match finite differences."""
    layer = _randomize(image_layer(mask, C=2, context_channels=1)).double()
    z = torch.randn(2, 2, 3, 3, dtype=torch.float64) * 2
    ctx = torch.randn(2, 1, 3, 3, dtype=torch.float64)
    _, inv_ldj = layer.inverse_with_ldj(z, ctx)

    class Inverse(nn.Module):
        def forward(self, v, context=None):
            return layer.inverse_with_ldj(v, context)

    torch.testing.assert_close(inv_ldj, autograd_logdet(Inverse(), z, ctx))

    # directional derivative of a scalar of (x, ldj) along random directions in the input,
    # context and all parameters: autograd against central finite differences
    params = [z, ctx, *layer.parameters()]
    dirs = [torch.randn_like(p) for p in params]
    u = torch.randn_like(z)

    def loss() -> torch.Tensor:
        x, ldj = layer.inverse_with_ldj(z, ctx)
        return (x * u).sum() + ldj.sum()

    z.requires_grad_(True)
    ctx.requires_grad_(True)
    grads = torch.autograd.grad(loss(), params)
    analytic = sum((g * d).sum() for g, d in zip(grads, dirs))
    eps = 1e-6
    values = []
    with torch.no_grad():
        for sign in (1.0, -2.0, 1.0):  # +eps, -eps, back to the start
            for p, d in zip(params, dirs):
                p.add_(sign * eps * d)
            values.append(loss())
    numeric = (values[0] - values[1]) / (2 * eps)
    torch.testing.assert_close(analytic, numeric, atol=1e-5, rtol=1e-5)


def test_conditional_coupling_uses_context():
    layer = _randomize(image_layer("channel", context_channels=2)).double()
    x = torch.randn(2, 4, 4, 4, dtype=torch.float64)
    ctx = torch.randn(2, 2, 4, 4, dtype=torch.float64)
    assert_invertible(layer, x, ctx, atol=1e-8, rtol=1e-8)
    assert_logdet_matches_autograd(layer, x, ctx)
    y1, ldj1 = layer(x, ctx)
    y2, ldj2 = layer(x, ctx + 1)
    assert (y1 - y2).abs().max() > 1e-3 and (ldj1 - ldj2).abs().max() > 1e-3
    with pytest.raises(ValueError, match="needs a context"):
        layer(x)
    with pytest.raises(ShapeError, match=r"LogisticMixtureCoupling.*context.*\(2, 2, 4, 4\)"):
        layer(x, torch.randn(2, 2, 3, 3, dtype=torch.float64))


class ContextConvNet(nn.Module):
    """A tiny conv net called as ``net(x, context)``."""

    def __init__(self, in_channels: int, out_channels: int, context_channels: int):
        super().__init__()
        self.inp = nn.Conv2d(in_channels, 8, 3, padding=1)
        self.ctx = nn.Conv2d(context_channels, 8, 1)
        self.out = nn.Conv2d(8, out_channels, 3, padding=1)

    def forward(self, x, context):
        return self.out(torch.tanh(self.inp(x) + self.ctx(context)))


def test_context_passed_to_network():
    net = ContextConvNet(2, (3 * K + 2) * 2, context_channels=3)
    layer = LogisticMixtureCoupling(
        4, net, num_components=K, context_channels=3, context_mode="net"
    ).double()
    x = torch.randn(2, 4, 3, 3, dtype=torch.float64)
    ctx = torch.randn(2, 3, 3, 3, dtype=torch.float64)
    assert_invertible(layer, x, ctx, atol=1e-8, rtol=1e-8)
    assert_logdet_matches_autograd(layer, x, ctx)
    assert (layer(x, ctx)[0] - layer(x, ctx + 1)[0]).abs().max() > 1e-3
    with pytest.raises(ValueError, match="context_mode"):
        LogisticMixtureCoupling(4, net, context_channels=3, context_mode="add")


def test_bisection_inverse_is_accurate():
    B, Kc, n = 4, 5, 50
    g = torch.Generator().manual_seed(1)
    log_w = torch.log_softmax(torch.randn(B, Kc, n, generator=g, dtype=torch.float64) * 2, 1)
    means = torch.randn(B, Kc, n, generator=g, dtype=torch.float64) * 5
    log_s = (torch.randn(B, Kc, n, generator=g, dtype=torch.float64) * 2).clamp(min=-7)
    w = torch.randn(B, n, generator=g, dtype=torch.float64) * 30  # deep into both tails
    x = mixture_logit_cdf_inverse(w, log_w, means, log_s, num_iters=100)
    logit, _ = mixture_logit_cdf(x, log_w, means, log_s)
    torch.testing.assert_close(logit, w, atol=1e-9, rtol=1e-9)
    # a single component has the closed form x = mu + w·e^s
    x1 = mixture_logit_cdf_inverse(w, log_w[:, :1] * 0, means[:, :1], log_s[:, :1])
    torch.testing.assert_close(x1, means[:, 0] + w * log_s[:, 0].exp(), atol=1e-9, rtol=1e-9)


def test_logit_cdf_against_direct_formula():
    f64 = torch.float64
    x = torch.linspace(-4, 4, 9, dtype=f64).view(1, 9)
    w = torch.tensor([0.3, 0.7], dtype=f64).view(1, 2, 1)
    m = torch.tensor([-1.0, 2.0], dtype=f64).view(1, 2, 1)
    s = torch.tensor([1.0, 0.6], dtype=f64).view(1, 2, 1)
    u = (x.unsqueeze(1) - m) / s
    cdf = (w * torch.sigmoid(u)).sum(1)
    pdf = (w * torch.sigmoid(u) * torch.sigmoid(-u) / s).sum(1)
    ones = torch.ones(1, 2, 9, dtype=f64)
    logit, log_deriv = mixture_logit_cdf(x, (w * ones).log(), m * ones, (s * ones).log())
    torch.testing.assert_close(logit, torch.logit(cdf))
    torch.testing.assert_close(log_deriv, torch.log(pdf / (cdf * (1 - cdf))))


def test_extreme_parameters_stay_finite():
    layer = image_layer("channel")
    last = layer.net[-1]
    with torch.no_grad():
        last.bias.view(3 * K + 2, 2)[2 * K : 3 * K] = -100.0  # log-scales clamped at -7
        last.bias.view(3 * K + 2, 2)[:K] = torch.tensor([30.0, -30.0, 0.0]).view(K, 1)
    x = torch.randn(2, 4, 4, 4) * 20
    y, ldj = layer(x)
    assert torch.isfinite(y).all() and torch.isfinite(ldj).all()
    x_rec = layer.inverse(y)
    assert torch.isfinite(x_rec).all()


def test_bad_input():
    layer = image_layer("channel")
    with pytest.raises(
        ShapeError, match=r"LogisticMixtureCoupling.*\(\*, 4, 4, 4\).*\(2, 3, 4, 4\)"
    ):
        layer(torch.randn(2, 3, 4, 4))
    with pytest.raises(ShapeError, match="LogisticMixtureCoupling"):
        layer(torch.randn(2, 4, 4, 4, 1))
    with pytest.raises(ValueError, match="even number of channels.*got 3"):
        LogisticMixtureCoupling(3, conv_net(1, 22), num_components=K)
    with pytest.raises(ValueError, match="mask"):
        LogisticMixtureCoupling(4, conv_net(2, 22), mask="stripes")
    wrong = LogisticMixtureCoupling(4, conv_net(2, 10), num_components=K)
    with pytest.raises(ShapeError, match="network output"):
        wrong(torch.randn(2, 4, 4, 4))
    # odd channel counts work with the checkerboard mask
    odd = _randomize(image_layer("checkerboard", C=3))
    assert_invertible(odd, torch.randn(2, 3, 4, 4), atol=1e-4, rtol=1e-4)


def test_registered_and_built_from_spec():
    assert registry.get("layer", "logistic_mixture_coupling") is LogisticMixtureCoupling
    layer = registry.build(
        "layer",
        "logistic_mixture_coupling",
        num_channels=4,
        net={"name": "mlp", "hidden": [8]},
        num_components=2,
    )
    x = torch.randn(3, 4)
    y, ldj = layer(x)
    assert y.shape == (3, 4) and ldj.shape == (3,)
