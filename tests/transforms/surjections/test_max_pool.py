"""MaxPoolSurjection2d: contribution against a brute-force per-window computation, right
inverse, normalisation, errors."""

import math

import pytest
import torch
import torch.nn.functional as F

import survae  # noqa: F401
from survae import Flow
from survae.distributions import StandardNormal
from survae.errors import ShapeError
from survae.transforms.surjections.max_pool import MaxPoolSurjection2d


def _brute_force(x, k, log_scales):
    """Per-window loop: Σ_{j ≠ argmax} log HalfNormal(max − x_j; σ_c) − log k²."""
    B, C, H, W = x.shape
    out = torch.zeros(B, dtype=x.dtype)
    for b in range(B):
        for c in range(C):
            sigma = math.exp(log_scales[c])
            for i in range(0, H, k):
                for j in range(0, W, k):
                    win = x[b, c, i : i + k, j : j + k].reshape(-1).tolist()
                    m = max(win)
                    a = win.index(m)
                    total = -math.log(k * k)
                    for t, v in enumerate(win):
                        if t == a:
                            continue
                        d = (m - v) / sigma
                        total += math.log(2) - 0.5 * math.log(2 * math.pi) - math.log(sigma)
                        total -= 0.5 * d * d
                    out[b] += total
    return out


@pytest.mark.parametrize("k", [2, 3])
def test_contribution_matches_brute_force_fixed_scale(k):
    layer = MaxPoolSurjection2d(kernel_size=k).double()
    x = torch.randn(2, 3, 2 * k, 3 * k, dtype=torch.float64)
    z, ldj = layer(x)
    assert z.shape == (2, 3, 2, 3)
    torch.testing.assert_close(z, F.max_pool2d(x, k))
    torch.testing.assert_close(ldj, _brute_force(x, k, [0.0] * 3))
    assert layer.exact


def test_contribution_matches_brute_force_learned_scale():
    layer = MaxPoolSurjection2d(2, channels=2, learn_scale=True).double()
    with torch.no_grad():
        layer.log_scale.copy_(torch.tensor([0.4, -0.6]))
    x = torch.randn(3, 2, 4, 2, dtype=torch.float64)
    z, ldj = layer(x)
    torch.testing.assert_close(ldj, _brute_force(x, 2, [0.4, -0.6]))
    ldj.sum().backward()
    assert layer.log_scale.grad is not None and layer.log_scale.grad.abs().sum() > 0


def test_inverse_is_a_right_inverse():
    layer = MaxPoolSurjection2d(2, channels=3, learn_scale=True)
    z = torch.randn(4, 3, 5, 6)
    with torch.no_grad():
        x = layer.inverse(z)
    assert x.shape == (4, 3, 10, 12)
    torch.testing.assert_close(F.max_pool2d(x, 2), z)
    torch.testing.assert_close(layer(x)[0], z)
    # the maximum's position is uniform over the window
    z = torch.zeros(20000, 1, 1, 1)
    x = layer.inverse(z[:, :1].expand(20000, 3, 1, 1).contiguous())
    pos = x[:, 0].reshape(20000, 4).argmax(1)
    freq = torch.bincount(pos, minlength=4).float() / 20000
    torch.testing.assert_close(freq, torch.full((4,), 0.25), atol=0.015, rtol=0)


def test_density_is_normalised_importance_sampling():
    """∫ p(x) dx = 1 for the 4-D model x (1×2×2) → max → N(0, 1), estimated as
    E_q[p(x)/q(x)] with a wide Gaussian proposal q."""
    flow = Flow(StandardNormal((1, 1, 1)), [MaxPoolSurjection2d(2)]).double()
    n, s = 200_000, 2.0
    x = torch.randn(n, 1, 2, 2, dtype=torch.float64) * s
    log_q = (-0.5 * (x / s) ** 2 - math.log(s) - 0.5 * math.log(2 * math.pi)).sum((1, 2, 3))
    with torch.no_grad():
        w = (flow.log_prob(x) - log_q).exp()
    estimate = w.mean().item()
    stderr = w.std().item() / math.sqrt(n)
    assert stderr < 0.01
    assert abs(estimate - 1.0) < 0.04  # ≈ 4 standard errors; a wrong constant is off by 2×


def test_shape_errors():
    layer = MaxPoolSurjection2d(2)
    with pytest.raises(ShapeError, match=r"multiple of 2.*\(1, 3, 5, 4\)"):
        layer(torch.randn(1, 3, 5, 4))
    with pytest.raises(ShapeError, match=r"multiple of 2.*\(1, 3, 4, 3\)"):
        layer(torch.randn(1, 3, 4, 3))
    with pytest.raises(ShapeError, match="MaxPoolSurjection2d"):
        layer(torch.randn(2, 4, 4))
    with pytest.raises(ShapeError, match=r"\(\*, 3, \*, \*\).*\(1, 2, 4, 4\)"):
        MaxPoolSurjection2d(2, channels=3)(torch.randn(1, 2, 4, 4))
    with pytest.raises(ValueError, match="channels"):
        MaxPoolSurjection2d(2, learn_scale=True)
