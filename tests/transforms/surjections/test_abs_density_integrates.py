"""Integration test: the toy AbsFlow model density (abs surjection → scale 1/4 → logit →
affine couplings → standard normal) integrates to 1 over its support [−4, 4]²."""

import torch

import survae  # noqa: F401
from survae import Flow
from survae.distributions import StandardNormal
from survae.testing import grid_integral
from survae.transforms.bijections.coupling import AffineCoupling
from survae.transforms.bijections.elementwise import Logit, Scale
from survae.transforms.bijections.permutation import Reverse
from survae.transforms.surjections.absolute import AbsSurjection


def _random_coupling() -> AffineCoupling:
    coupling = AffineCoupling(2, {"name": "mlp", "hidden": [16, 16]}, scale_fn="softplus")
    out = coupling.net[-1]  # zero-initialised: randomise it so the coupling is not trivial
    with torch.no_grad():
        out.weight.normal_(std=0.2)
        out.bias.normal_(std=0.2)
        out.bias[1] += 0.55  # softplus(0.55) ≈ 1: scales vary around 1
    return coupling


def _abs_flow() -> Flow:
    abs_layer = AbsSurjection(shape=(2,))
    with torch.no_grad():
        abs_layer.logits.copy_(torch.tensor([0.8, -1.3]))  # asymmetric sign probabilities
    transforms = [abs_layer, Scale(0.25), Logit(1e-6)]
    for i in range(4):
        if i:
            transforms.append(Reverse(2))
        transforms.append(_random_coupling())
    return Flow(StandardNormal(2), transforms).double()


def test_abs_flow_density_integrates_to_one():
    flow = _abs_flow()
    x = torch.tensor([[0.5, -1.0], [-2.0, 3.0]], dtype=torch.float64)
    # the warped density is not a product of its 1-D marginals' folding: check it is not flat
    lp = flow.log_prob(x)
    assert torch.isfinite(lp).all() and (lp[0] - lp[1]).abs() > 0.1
    total = grid_integral(flow.log_prob, -4.0, 4.0, n=400)
    assert abs(total - 1.0) < 0.01, total


def test_abs_flow_without_sign_term_does_not_integrate_to_one():
    """Guard that the check above can fail: dropping the sign probabilities (treating the
    folded density as the density of x) doubles the mass per axis."""
    flow = _abs_flow()
    layer = flow.transforms[0]

    def folded_only(x):
        z, ldj = flow.transform_to_latent(x)
        return flow.base_dist.log_prob(z) + ldj - layer(x)[1]

    total = grid_integral(folded_only, -4.0, 4.0, n=200)
    assert abs(total - 4.0) < 0.05, total
