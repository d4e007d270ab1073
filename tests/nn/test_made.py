"""MADE: strict autoregressive masking, context, initialisation, registry."""

import pytest
import torch

import survae  # noqa: F401  (registers)
from survae.errors import ShapeError
from survae.nn.build import build_network
from survae.nn.made import MADE


def _jacobian(made: MADE, x: torch.Tensor, context=None) -> torch.Tensor:
    """d out / d x for one example, as ``[D, P, D]`` (output dim, parameter, input dim)."""
    D, P = made.in_channels, made.params_per_dim

    def f(v):
        return made(v.unsqueeze(0), context).view(D, P)

    return torch.autograd.functional.jacobian(f, x)


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"reverse_order": True},
        {"random_order": True, "seed": 3},
        {"random_order": True, "seed": 7, "residual": True, "hidden": (24, 24, 24)},
        {"context_features": 3, "hidden": (20,)},
    ],
)
def test_made_is_strictly_autoregressive(kwargs):
    D, P = 6, 3
    kwargs = {"hidden": (32, 32), **kwargs}
    made = MADE(D, D * P, activation_name="tanh", zero_init_output=False, **kwargs).double()
    ctx = torch.randn(1, 3, dtype=torch.float64) if kwargs.get("context_features") else None
    J = _jacobian(made, torch.randn(D, dtype=torch.float64), ctx)
    order = made.order
    allowed = order[None, :] < order[:, None]  # [out dim i, in dim j]: order[j] < order[i]
    forbidden = ~allowed
    assert (J.permute(0, 2, 1)[forbidden] == 0).all(), "output depends on a later input"
    # every allowed connection is actually used (tanh keeps all paths alive)
    assert (J.permute(0, 2, 1)[allowed].abs() > 0).all()
    assert allowed.any()


def test_made_orders():
    assert MADE(5, 5, hidden=(8,)).order.tolist() == [1, 2, 3, 4, 5]
    assert MADE(5, 5, hidden=(8,), reverse_order=True).order.tolist() == [5, 4, 3, 2, 1]
    a = MADE(8, 8, hidden=(8,), random_order=True, seed=1).order
    b = MADE(8, 8, hidden=(8,), random_order=True, seed=1).order
    c = MADE(8, 8, hidden=(8,), random_order=True, seed=2).order
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert sorted(a.tolist()) == list(range(1, 9))


def test_made_zero_init_output_and_shapes():
    made = MADE(4, 8, hidden=(16, 16))
    x = torch.randn(5, 4)
    out = made(x)
    assert out.shape == (5, 8)
    assert torch.equal(out, torch.zeros_like(out))
    assert made(torch.randn(2, 3, 4)).shape == (2, 3, 8)  # leading dims are kept


def test_made_context_reaches_every_output():
    D = 3
    made = MADE(D, 2 * D, hidden=(16,), context_features=2, zero_init_output=False)
    x = torch.randn(4, D)
    c1, c2 = torch.randn(4, 2), torch.randn(4, 2)
    diff = (made(x, c1) - made(x, c2)).view(4, D, 2).abs()
    # including the first dimension in the order, which sees no input at all
    assert (diff > 0).all()
    with pytest.raises(ValueError, match="context"):
        made(x)
    with pytest.raises(ShapeError, match="MADE"):
        made(x, torch.randn(4, 5))


def test_made_single_feature_is_constant_in_input():
    made = MADE(1, 2, hidden=(4,), zero_init_output=False)
    x = torch.randn(6, 1)
    out = made(x)
    torch.testing.assert_close(out, out[:1].expand(6, 2))


def test_made_bad_sizes():
    with pytest.raises(ValueError, match="multiple"):
        MADE(3, 4)
    with pytest.raises(ValueError, match="equal hidden"):
        MADE(3, 6, hidden=(8, 16), residual=True)
    made = MADE(3, 6, hidden=(8,))
    with pytest.raises(ShapeError, match=r"MADE.*3.*\(5, 4\)"):
        made(torch.randn(5, 4))


def test_made_is_registered():
    net = build_network({"name": "made", "hidden": [8]}, 4, 12)
    assert isinstance(net, MADE) and net(torch.randn(2, 4)).shape == (2, 12)


def test_masked_weight_cache_follows_every_weight_change():
    """Without autograd the masked weight is built once and reused; an optimiser step,
    load_state_dict or a dtype change rebuilds it. With autograd it is rebuilt per call."""
    from survae.nn.made import MaskedLinear

    layer = MaskedLinear(torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 1.0]]))
    x = torch.randn(5, 3)

    def expected():
        return x @ (layer.weight * layer.mask).T + layer.bias

    with torch.no_grad():
        first = layer.masked_weight()
        assert layer.masked_weight() is first  # reused
        torch.testing.assert_close(layer(x), expected())
    opt = torch.optim.SGD(layer.parameters(), lr=0.5)
    loss = layer(x).square().sum()
    loss.backward()
    assert torch.all(layer.weight.grad[layer.mask == 0] == 0)  # masked entries get no gradient
    opt.step()
    with torch.no_grad():
        assert layer.masked_weight() is not first
        torch.testing.assert_close(layer(x), expected())
        other = MaskedLinear(layer.mask.clone())
        layer.load_state_dict(other.state_dict())
        torch.testing.assert_close(layer(x), expected())
    layer.double()
    with torch.no_grad():
        assert layer.masked_weight().dtype == torch.float64
    assert sorted(layer.state_dict()) == ["bias", "mask", "weight"]


def test_made_sampling_inverse_unchanged_by_the_cache():
    """An autoregressive inverse under no_grad (D network calls) gives the same result with the
    cache as with the masked weights rebuilt on every call."""
    from survae.nn.made import MaskedLinear

    torch.manual_seed(0)
    D = 5
    made = MADE(D, 2 * D, hidden=(16, 16), zero_init_output=False)
    z = torch.randn(4, D)

    def invert():
        x = torch.zeros_like(z)
        with torch.no_grad():
            for _ in range(D):
                shift, log_scale = made(x).view(4, D, 2).unbind(-1)
                x = z * log_scale.exp() + shift
        return x

    cached = invert()
    original = MaskedLinear.masked_weight
    try:
        MaskedLinear.masked_weight = lambda self: self.weight * self.mask
        rebuilt = invert()
    finally:
        MaskedLinear.masked_weight = original
    torch.testing.assert_close(cached, rebuilt, rtol=0, atol=0)
