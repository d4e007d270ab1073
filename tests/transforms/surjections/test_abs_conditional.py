"""ConditionalAbsSurjection: |x_i| on chosen features, sign from a classifier of the folded point.

Contribution against brute force (both signs, a classifier that really depends on z), the
model density p(x) = p_base(|x0|, x1) · p(s | z) integrating to 1, sign sampling, shapes,
registry and errors.
"""

import math

import pytest
import torch
from torch import nn

import survae  # noqa: F401
from survae import Flow
from survae.distributions import StandardNormal
from survae.errors import ShapeError
from survae.registry import build, get
from survae.testing import grid_integral
from survae.transforms.surjections.abs_conditional import ConditionalAbsSurjection


class _Logit(nn.Module):
    """A known classifier: logit(z) = a · z0 − b · z1 + c (so p(s | z) depends on both)."""

    def __init__(self, a: float = 1.5, b: float = 0.8, c: float = 0.3):
        super().__init__()
        self.a, self.b, self.c = a, b, c

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return (self.a * z[:, 0] - self.b * z[:, 1] + self.c)[:, None]


def _normal_logpdf(x: torch.Tensor) -> torch.Tensor:
    return (-0.5 * x**2 - 0.5 * math.log(2 * math.pi)).sum(1)


def test_registered_and_built_by_name():
    assert get("layer", "conditional_abs") is ConditionalAbsSurjection
    layer = build("layer", "conditional_abs", num_features=3, net={"name": "mlp", "hidden": [8]},
                  elements=[0, 2])  # fmt: skip
    assert layer.elements == (0, 2) and layer.exact
    assert layer.net[-1].out_features == 2


def test_contribution_is_log_p_sign_given_folded_point_brute_force():
    layer = ConditionalAbsSurjection(2, net=_Logit()).double()
    x = torch.tensor([[1.2, -0.4], [-1.2, -0.4], [-0.3, 2.0], [0.3, 2.0]], dtype=torch.float64)
    z, ldj = layer(x)
    assert torch.equal(z[:, 0], x[:, 0].abs()) and torch.equal(z[:, 1], x[:, 1])
    ref = []
    for xi in x.tolist():
        zi = [abs(xi[0]), xi[1]]
        p_pos = 1.0 / (1.0 + math.exp(-(1.5 * zi[0] - 0.8 * zi[1] + 0.3)))
        ref.append(math.log(p_pos if xi[0] >= 0 else 1.0 - p_pos))
    torch.testing.assert_close(ldj, torch.tensor(ref, dtype=torch.float64))
    # the two signs of one folded point share its probability mass: p(+|z) + p(-|z) = 1
    torch.testing.assert_close(ldj[0].exp() + ldj[1].exp(), torch.tensor(1.0, dtype=torch.float64))
    torch.testing.assert_close(ldj[2].exp() + ldj[3].exp(), torch.tensor(1.0, dtype=torch.float64))


def test_input_is_not_modified_in_place():
    layer = ConditionalAbsSurjection(2, net=_Logit())
    x = torch.tensor([[-1.0, 2.0]])
    layer(x)
    assert x[0, 0].item() == -1.0


def test_only_selected_features_are_folded():
    layer = ConditionalAbsSurjection(3, net={"name": "mlp", "hidden": [4]}, elements=(1,))
    x = -torch.rand(5, 3) - 0.1
    z, _ = layer(x)
    assert torch.equal(z[:, 1], x[:, 1].abs())
    assert torch.equal(z[:, [0, 2]], x[:, [0, 2]])


def test_model_density_is_base_times_sign_probability_and_normalised():
    # p(x) = p_base(|x0|, x1) · p(s | z) with a half-normal × normal base on the folded space
    class _HalfNormalNormal(StandardNormal):
        def log_prob(self, z, context=None):
            lp = super().log_prob(z) + math.log(2.0)
            return torch.where(z[:, 0] >= 0, lp, torch.full_like(lp, -math.inf))

    layer = ConditionalAbsSurjection(2, net=_Logit())
    flow = Flow(_HalfNormalNormal(2), [layer]).double()
    x = torch.randn(30, 2, dtype=torch.float64) * 1.5
    z = torch.stack([x[:, 0].abs(), x[:, 1]], 1)
    logit = 1.5 * z[:, 0] - 0.8 * z[:, 1] + 0.3
    log_s = torch.where(x[:, 0] >= 0, torch.sigmoid(logit), torch.sigmoid(-logit)).log()
    ref = math.log(2.0) + _normal_logpdf(z) + log_s
    torch.testing.assert_close(flow.log_prob(x), ref)
    assert abs(grid_integral(flow.log_prob, -7.0, 7.0, n=400) - 1.0) < 1e-3


def test_density_without_sign_term_doubles_the_mass():
    """Guard that the integral check can fail: dropping log p(s | z) gives mass 2."""
    layer = ConditionalAbsSurjection(2, net=_Logit())
    base = StandardNormal(2)

    def folded_only(x):
        z, _ = layer(x)
        return base.log_prob(z) + math.log(2.0)

    assert abs(grid_integral(folded_only, -7.0, 7.0, n=300) - 2.0) < 1e-2


def test_one_dimensional_brute_force_integral():
    # 1-D: p(x) = 2 N(|x|) p(s | |x|), a skewed density that still integrates to one
    class _OneD(nn.Module):
        def forward(self, z):
            return 3.0 * z - 1.0

    layer = ConditionalAbsSurjection(1, net=_OneD()).double()
    x = torch.linspace(-8, 8, 200_001, dtype=torch.float64)[:, None]
    z, ldj = layer(x)
    density = (2.0 * torch.exp(-0.5 * z[:, 0] ** 2) / math.sqrt(2 * math.pi)) * ldj.exp()
    mass = torch.trapezoid(density, x[:, 0]).item()
    assert abs(mass - 1.0) < 1e-4  # the trapezoid rule across the jump at 0 costs ~1e-5
    assert density[x[:, 0] > 0].sum() > 2 * density[x[:, 0] < 0].sum()  # skewed positive


def test_inverse_samples_signs_from_the_classifier():
    torch.manual_seed(0)
    layer = ConditionalAbsSurjection(2, net=_Logit())
    z = torch.tensor([[0.5, 1.0]]).repeat(20000, 1)
    with torch.no_grad():
        x = layer.inverse(z)
    assert x.shape == z.shape
    assert torch.equal(x.abs(), z.abs()) and torch.equal(x[:, 1], z[:, 1])
    p_pos = torch.sigmoid(torch.tensor(1.5 * 0.5 - 0.8 * 1.0 + 0.3))
    assert abs((x[:, 0] > 0).float().mean() - p_pos) < 0.015
    torch.testing.assert_close(layer(x)[0], z)


def test_sampling_shapes_through_a_flow():
    layer = ConditionalAbsSurjection(2, net={"name": "mlp", "hidden": [8, 8]})
    flow = Flow(StandardNormal(2), [layer])
    assert flow.sample(7).shape == (7, 2)


def test_classifier_gets_gradients():
    layer = ConditionalAbsSurjection(2, net={"name": "mlp", "hidden": [8],
                                             "zero_init_output": False})  # fmt: skip
    x = torch.randn(32, 2)
    layer(x)[1].sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in layer.parameters())


def test_errors_name_layer_and_valid_values():
    with pytest.raises(ValueError, match=r"ConditionalAbsSurjection.*out of range.*0\.\.1"):
        ConditionalAbsSurjection(2, net="mlp", elements=(2,))
    with pytest.raises(ValueError, match="distinct"):
        ConditionalAbsSurjection(2, net="mlp", elements=(0, 0))
    layer = ConditionalAbsSurjection(2, net="mlp")
    with pytest.raises(ShapeError, match=r"ConditionalAbsSurjection.*\(4, 3\)"):
        layer(torch.randn(4, 3))
