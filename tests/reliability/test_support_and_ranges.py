"""Inputs a model is not defined for: ``log_prob`` is −inf outside the support (density 0, as in
``torch.distributions``) and NaN only for a bug; dequantization refuses data that is not
integer-valued in ``[0, num_bins)`` instead of returning a meaningless number."""

from __future__ import annotations

import math

import pytest
import torch

import survae.architectures  # noqa: F401  (registers the builders)
from survae import Flow
from survae.distributions import StandardHalfNormal, StandardNormal, StandardUniform
from survae.errors import DataRangeError
from survae.models import build_model
from survae.transforms.base import Bijection
from survae.transforms.bijections.elementwise import Logit
from survae.transforms.surjections.dequantization import (
    UniformDequantization,
    VariationalDequantization,
)

NAN = float("nan")


# --- log_prob outside the support -----------------------------------------------------------
@pytest.mark.parametrize("architecture", ["abs_flow_2d", "abs_unif_2d"])
def test_bounded_2d_model_is_minus_inf_outside_finite_inside_nan_for_nan(architecture):
    """AbsFlow (Logit after |x|/4) and the checkerboard AbsFlow (uniform base) live on
    (-4, 4)²: x = (5, 0) used to give NaN; density 0 is −inf."""
    model = build_model({"architecture": architecture}, (2,)).double().eval()
    outside = torch.tensor([[5.0, 0.0], [0.0, -7.0], [-4.5, 4.5], [0.0, 4.2]], dtype=torch.float64)
    inside = torch.tensor([[0.5, 0.5], [3.9, -3.9], [-1.0, 2.0]], dtype=torch.float64)
    with torch.no_grad():
        lp_out = model.log_prob(outside)
        lp_in = model.log_prob(inside)
        lp_nan = model.log_prob(torch.tensor([[NAN, 0.0], [0.5, 0.5]], dtype=torch.float64))
    assert torch.equal(lp_out, torch.full((4,), -math.inf, dtype=torch.float64))
    assert torch.isfinite(lp_in).all()
    assert math.isnan(lp_nan[0]) and torch.isfinite(lp_nan[1])  # NaN in, NaN out
    mixed = torch.cat([outside[:2], inside])  # out-of-support rows do not disturb the others
    with torch.no_grad():
        assert torch.allclose(model.log_prob(mixed)[2:], lp_in)


def test_logit_outside_its_domain():
    logit = Logit(eps=0.0).double()
    x = torch.tensor([[0.25, 0.5], [1.5, 0.5], [-0.1, 0.5], [1.0, 0.5], [NAN, 0.5]]).double()
    z, ldj = logit(x)
    assert torch.isfinite(ldj[0]) and torch.allclose(z[0], torch.logit(x[0]))
    assert torch.equal(ldj[1:4], torch.full((3,), -math.inf, dtype=torch.float64))
    assert torch.isfinite(z[:4]).all()  # later layers stay finite for density-0 rows
    assert math.isnan(ldj[4]) and math.isnan(z[4, 0])


def test_bounded_bases_match_torch_distributions_and_keep_nan():
    x = torch.tensor([[0.3], [1.2], [-0.5], [0.0], [NAN]], dtype=torch.float64)
    uniform = torch.distributions.Uniform(0.0, 1.0, validate_args=False)
    expected = uniform.log_prob(x[:4, 0].clamp(max=1.0 - 1e-12)).masked_fill(
        x[:4, 0] >= 1, -math.inf
    )
    got = StandardUniform((1,)).log_prob(x)
    assert torch.equal(got[:4], expected.to(got.dtype)) and math.isnan(got[4])
    half = torch.distributions.HalfNormal(1.0, validate_args=False)
    got = StandardHalfNormal((1,)).log_prob(x)
    assert torch.allclose(got[:4], half.log_prob(x[:4, 0]))
    assert got[2] == -math.inf and math.isnan(got[4])


class _Buggy(Bijection):
    """Returns NaN for every point: a bug, which must not turn into −inf."""

    def forward(self, x, context=None):
        return x * NAN, x.new_zeros(x.shape[0])

    def inverse(self, z, context=None):
        return z


@pytest.mark.parametrize("base", [StandardUniform((2,)), StandardNormal((2,))])
def test_a_real_nan_stays_nan(base):
    flow = Flow(base, [_Buggy()])
    assert torch.isnan(flow.log_prob(torch.full((3, 2), 0.5))).all()


# --- dequantization input -------------------------------------------------------------------
def _variational(num_bins: int) -> VariationalDequantization:
    class Encoder:
        def sample_with_log_prob(self, num_samples, context):
            return torch.zeros_like(context), context.new_zeros(num_samples)

    return VariationalDequantization(Encoder(), num_bins=num_bins)


@pytest.mark.parametrize("layer", ["uniform", "variational"])
@pytest.mark.parametrize(
    "x,observed",
    [
        (torch.rand(8, 3), "non-integer values in [0"),  # images scaled to [0, 1]
        (torch.tensor([[0.0, 256.0]]), "values in [0, 256]"),
        (torch.tensor([[-1, 5]]), "values in [-1, 5]"),
        (torch.tensor([[NAN, 1.0]]), "values in [nan"),
    ],
)
def test_dequantization_refuses_non_discrete_input(layer, x, observed):
    deq = UniformDequantization(256) if layer == "uniform" else _variational(256)
    with pytest.raises(DataRangeError) as err:
        deq(x)
    message = str(err.value)
    assert "\n" not in message and observed in message
    assert type(deq).__name__ in message and "[0, 255]" in message


def test_dequantization_accepts_discrete_input_and_can_be_switched_off():
    deq = UniformDequantization(17)
    for x in (torch.randint(0, 17, (4, 5), dtype=torch.uint8), torch.tensor([[0.0, 16.0]])):
        z, ldj = deq(x)
        assert ((z >= 0) & (z < 1)).all()
        assert torch.allclose(ldj, torch.full_like(ldj, -x.shape[1] * math.log(17)))
    with pytest.raises(DataRangeError, match=r"values in \[0, 17\]"):
        deq(torch.tensor([[0, 17]], dtype=torch.uint8))  # uint8 above num_bins - 1
    quiet = UniformDequantization(256, check_input=False)
    z, _ = quiet(torch.rand(2, 3))  # explicitly unchecked: the old behaviour
    assert z.shape == (2, 3)


def test_image_model_refuses_scaled_images():
    """The issue's case: float data in [0, 1] fed to an 8-bit image model."""
    model = build_model(
        {"architecture": "realnvp", "num_scales": 1, "hidden_channels": 4, "num_blocks": 1},
        (1, 4, 4),
        num_bins=256,
    )
    with pytest.raises(DataRangeError, match="UniformDequantization"):
        model.log_prob(torch.rand(2, 1, 4, 4))
    assert torch.isfinite(
        model.log_prob(torch.randint(0, 256, (2, 1, 4, 4), dtype=torch.uint8))
    ).all()
