"""2-D autoregressive flows on a PixelCNN: round trip, log-det vs autograd, triangular
Jacobian, sampling."""

import math

import pytest
import torch

from survae import Flow, registry
from survae.distributions import StandardNormal, StandardUniform
from survae.testing import assert_invertible, assert_logdet_matches_autograd
from survae.transforms import (
    AdditiveAutoregressive2d,
    AffineAutoregressive2d,
    CensoredLogisticMixtureAutoregressive2d,
    CubicSplineAutoregressive2d,
    GaussianMixtureAutoregressive2d,
    LinearSplineAutoregressive2d,
    LogisticMixtureAutoregressive2d,
    QuadraticSplineAutoregressive2d,
    RQSplineAutoregressive2d,
)

NET = {"name": "pixelcnn", "filters": 6, "num_blocks": 1, "output_filters": 8, "kernel_size_in": 3}
LAYERS = {
    "affine_autoregressive_2d": (AffineAutoregressive2d, {}),
    "additive_autoregressive_2d": (AdditiveAutoregressive2d, {}),
    "linear_spline_autoregressive_2d": (LinearSplineAutoregressive2d, {"num_bins": 4}),
    "quadratic_spline_autoregressive_2d": (QuadraticSplineAutoregressive2d, {"num_bins": 4}),
    "cubic_spline_autoregressive_2d": (CubicSplineAutoregressive2d, {"num_bins": 4}),
    "rq_spline_autoregressive_2d": (RQSplineAutoregressive2d, {"num_bins": 4}),
    "gaussian_mixture_autoregressive_2d": (GaussianMixtureAutoregressive2d, {"num_mixtures": 2}),
    "logistic_mixture_autoregressive_2d": (LogisticMixtureAutoregressive2d, {"num_mixtures": 2}),
    "censored_logistic_mixture_autoregressive_2d": (
        CensoredLogisticMixtureAutoregressive2d,
        {"num_mixtures": 2, "num_bins": 16},
    ),
}


def _layer(name, C=2):
    cls, kwargs = LAYERS[name]
    layer = cls(C, NET, **kwargs).double()
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in layer.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * 0.2)
    return layer


def _inputs(name, shape):
    x = torch.rand(shape, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    return x if name.startswith("censored") else 4 * x - 2


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_round_trip_logdet_and_triangular_jacobian(name):
    assert registry.get("layer", name) is LAYERS[name][0]
    layer = _layer(name)
    x = _inputs(name, (2, 2, 3, 3))
    z, ldj = assert_invertible(layer, x, atol=1e-7, rtol=1e-7)
    assert z.shape == x.shape and ldj.shape == (2,)
    assert_logdet_matches_autograd(layer, x)
    J = torch.autograd.functional.jacobian(lambda v: layer(v)[0], x[:1]).reshape(18, 18)
    c, h, w = torch.meshgrid(torch.arange(2), torch.arange(3), torch.arange(3), indexing="ij")
    order = ((h * 3 + w) * 2 + c).reshape(-1)
    later = order.view(-1, 1) < order.view(1, -1)  # output i must not see input j after it
    assert torch.all(J[later] == 0)


def test_raster_wh_needs_fewer_passes_for_a_pixelwise_independent_net():
    layer = AffineAutoregressive2d(1, NET, order="raster_wh").double()
    x = torch.randn(2, 1, 3, 4, dtype=torch.float64)
    assert_invertible(layer, x, atol=1e-8, rtol=1e-8)  # one channel: H·W passes suffice


def test_flows_sample_with_the_right_shapes():
    flow = Flow(StandardNormal((2, 3, 3)), [_layer("affine_autoregressive_2d").float()])
    x, log_p = flow.sample_with_log_prob(3)
    assert x.shape == (3, 2, 3, 3)
    torch.testing.assert_close(log_p, flow.log_prob(x), atol=1e-4, rtol=1e-4)
    flow = Flow(StandardUniform((2, 3, 3)), [_layer("gaussian_mixture_autoregressive_2d").float()])
    assert flow.sample(2).shape == (2, 2, 3, 3)
    x = torch.randn(2, 2, 3, 3)
    assert torch.isfinite(flow.log_prob(x)).all()


def test_bad_arguments():
    with pytest.raises(ValueError, match="order must be one of"):
        AffineAutoregressive2d(1, NET, order="zigzag")
    with pytest.raises(ValueError, match="num_bins must be >= 2"):
        QuadraticSplineAutoregressive2d(1, NET, num_bins=1)
    assert math.isfinite(
        _layer("additive_autoregressive_2d")(torch.zeros(1, 2, 2, 2).double())[1].item()
    )


@pytest.mark.parametrize("name", ["affine_autoregressive_2d", "cubic_spline_autoregressive_2d"])
def test_conditional_layers_take_a_context(name):
    cls, kwargs = LAYERS[name]
    layer = cls(2, NET, context_channels=3, **kwargs).double()
    g = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for p in layer.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * 0.2)
    x = _inputs(name, (2, 2, 3, 3))
    c = torch.randn(2, 3, 3, 3, dtype=torch.float64)
    z, _ = assert_invertible(layer, x, c, atol=1e-7, rtol=1e-7)
    assert_logdet_matches_autograd(layer, x, c)
    assert not torch.allclose(z, layer(x, torch.zeros_like(c))[0])  # the context matters
    with pytest.raises(ValueError, match="needs a context"):
        layer(x)
