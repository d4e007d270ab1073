"""Units of the likelihood metrics and the importance-weighted bound."""

import math

import pytest
import torch

import survae  # noqa: F401  (installs the torchvision shim before anything else)
from survae.distributions.simple import StandardNormal
from survae.flows import Flow
from survae.metrics import (
    DATA_KINDS,
    bits_per_dim,
    importance_weighted_log_prob,
    metric_for,
    nats_per_dim,
    negative_log_likelihood,
    per_point_log_likelihood,
)
from survae.transforms.base import Bijection

# ------------------------------------------------------------------------------ units


def test_uniform_8bit_image_is_8_bits_per_dim():
    # A model giving every 8-bit image of C·H·W sub-pixels probability 256^-D has 8 bpd.
    num_dims = 3 * 4 * 5
    log_prob = torch.full((7,), -num_dims * math.log(256.0), dtype=torch.float64)
    torch.testing.assert_close(bits_per_dim(log_prob, num_dims), torch.full_like(log_prob, 8.0))
    torch.testing.assert_close(
        nats_per_dim(log_prob, num_dims), torch.full_like(log_prob, math.log(256.0))
    )


def test_bits_per_dim_formula_and_order():
    log_prob = torch.tensor([-100.0, -200.0])
    bpd = bits_per_dim(log_prob, 10)
    torch.testing.assert_close(bpd, -log_prob / (10 * math.log(2.0)))
    assert bpd[0] < bpd[1]  # more likely → fewer bits
    torch.testing.assert_close(bpd, nats_per_dim(log_prob, 10) / math.log(2.0))


def test_per_point_log_likelihood_and_nll():
    log_prob = torch.tensor([-265.0, -276.5])  # two sets of 50 points
    torch.testing.assert_close(per_point_log_likelihood(log_prob, 50), torch.tensor([-5.3, -5.53]))
    torch.testing.assert_close(negative_log_likelihood(log_prob), -log_prob)


@pytest.mark.parametrize("bad", [0, -3, 2.5, True])
def test_counts_must_be_positive_ints(bad):
    with pytest.raises(ValueError, match="positive int"):
        bits_per_dim(torch.zeros(2), bad)
    with pytest.raises(ValueError, match="positive int"):
        per_point_log_likelihood(torch.zeros(2), bad)


def test_metric_for_data_kinds():
    assert set(DATA_KINDS) == {"image", "points", "tabular", "toy", "target"}
    target = metric_for("target")  # gets log w = log p~ - log q; reports log q - log p~
    assert (target.name, target.higher_is_better, target.unit) == (
        "reverse_kl", False, "nats per sample"
    )  # fmt: skip
    torch.testing.assert_close(target(torch.tensor([0.5, -1.0]), 2), torch.tensor([-0.5, 1.0]))
    image = metric_for("image")
    name, fn, higher = image
    assert (name, higher, image.unit) == ("bpd", False, "bits per dimension")
    assert fn is bits_per_dim
    points = metric_for("points")
    assert (points.name, points.higher_is_better) == ("ppll", True)
    for kind in ("tabular", "toy"):
        m = metric_for(kind)
        assert (m.name, m.higher_is_better, m.unit) == ("nll", False, "nats per example")
    log_prob = torch.tensor([-300.0])
    torch.testing.assert_close(image(log_prob, 30), bits_per_dim(log_prob, 30))
    torch.testing.assert_close(points(log_prob, 50), torch.tensor([-6.0]))
    torch.testing.assert_close(metric_for("toy")(log_prob, 2), torch.tensor([300.0]))


def test_metric_for_unknown_kind_lists_known_ones():
    with pytest.raises(ValueError, match="'audio'.*image, points, tabular, toy"):
        metric_for("audio")


# ------------------------------------------------------------- importance weighting


class _Scripted:
    """A 'stochastic' log_prob whose successive calls return pre-drawn values."""

    def __init__(self, values: torch.Tensor):  # values [k, batch]
        self.values = values
        self.used = 0
        self.call_sizes = []

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        batch = self.values.shape[1]
        assert x.shape[0] % batch == 0
        n = x.shape[0] // batch
        # x is repeated sample-major: row s*batch + b is example b
        torch.testing.assert_close(
            x.reshape(n, batch, *x.shape[1:]), x[:batch].expand(n, batch, *x.shape[1:])
        )
        self.call_sizes.append(n)
        out = self.values[self.used : self.used + n].reshape(-1)
        self.used += n
        return out


@pytest.mark.parametrize("chunk_size", [None, 1, 3, 7, 50])
def test_importance_weighted_formula_with_chunks(chunk_size):
    k, batch = 7, 4
    values = torch.randn(k, batch, dtype=torch.float64) * 3
    fn = _Scripted(values)
    x = torch.arange(batch * 2, dtype=torch.float64).reshape(batch, 2)
    out = importance_weighted_log_prob(fn, x, num_samples=k, chunk_size=chunk_size)
    expected = torch.log(torch.exp(values).mean(0))
    torch.testing.assert_close(out, expected)
    assert fn.used == k
    expected_sizes = {None: [7], 1: [1] * 7, 3: [3, 3, 1], 7: [7], 50: [7]}[chunk_size]
    assert fn.call_sizes == expected_sizes


def test_one_sample_is_the_plain_bound():
    values = torch.randn(1, 5)
    out = importance_weighted_log_prob(_Scripted(values), torch.zeros(5, 3), num_samples=1)
    torch.testing.assert_close(out, values[0])


class _Scale(Bijection):
    def forward(self, x, context=None):
        return 2 * x, torch.full((x.shape[0],), x.shape[1] * math.log(2.0), dtype=x.dtype)

    def inverse_with_ldj(self, z, context=None):
        return z / 2, torch.full((z.shape[0],), -z.shape[1] * math.log(2.0), dtype=z.dtype)


@pytest.mark.parametrize("as_method", [False, True])
def test_exact_models_return_log_prob_with_one_call(as_method):
    flow = Flow(StandardNormal(3), [_Scale()])
    assert flow.exact
    calls = []

    def spy(x):
        calls.append(x.shape[0])
        return flow.log_prob(x)

    x = torch.randn(6, 3)
    fn = flow.log_prob if as_method else flow
    out = importance_weighted_log_prob(fn, x, num_samples=100)
    torch.testing.assert_close(out, flow.log_prob(x))
    out = importance_weighted_log_prob(spy, x, num_samples=100, exact=True)
    assert calls == [6]


class _LinearGaussianANF:
    """Augmented flow built by hand: x ∈ R^d is augmented with e ~ q(e) = N(0, I) (ANF),
    then z = A [x; e] ~ N(0, I). Everything is Gaussian, so the exact marginal
    p(x) = N(0, Σ_xx) with Σ = (AᵀA)⁻¹ and the gap of the one-sample bound,
    KL(q(e) || p(e | x)), are known in closed form."""

    def __init__(self, d: int, generator: torch.Generator):
        self.d = d
        a = torch.randn(2 * d, 2 * d, generator=generator, dtype=torch.float64)
        self.A = torch.eye(2 * d, dtype=torch.float64) + 0.4 * a
        self.logdet = torch.linalg.slogdet(self.A)[1]
        self.cov = torch.linalg.inv(self.A.T @ self.A)

    def bound(self, x: torch.Tensor) -> torch.Tensor:
        e = torch.randn_like(x)
        z = torch.cat([x, e], dim=1) @ self.A.T
        log_joint = _std_normal(z) + self.logdet
        return log_joint - _std_normal(e)

    def exact(self, x: torch.Tensor) -> torch.Tensor:
        d = self.d
        marginal = torch.distributions.MultivariateNormal(
            torch.zeros(d, dtype=x.dtype), self.cov[:d, :d]
        )
        return marginal.log_prob(x)

    def expected_bound(self, x: torch.Tensor) -> torch.Tensor:
        """E_q[ℓ] = log p(x) - KL(N(0, I) || p(e | x))."""
        d = self.d
        sxx, sxe, see = self.cov[:d, :d], self.cov[:d, d:], self.cov[d:, d:]
        gain = sxe.T @ torch.linalg.inv(sxx)
        post_mean = x @ gain.T
        post_cov = see - gain @ sxe
        prec = torch.linalg.inv(post_cov)
        kl = 0.5 * (
            torch.trace(prec)
            + ((post_mean @ prec) * post_mean).sum(1)
            - d
            + torch.linalg.slogdet(post_cov)[1]
        )
        return self.exact(x) - kl


def _std_normal(z: torch.Tensor) -> torch.Tensor:
    return -0.5 * (z**2 + math.log(2 * math.pi)).sum(1)


def test_importance_weighting_converges_to_exact_marginal():
    gen = torch.Generator().manual_seed(3)
    model = _LinearGaussianANF(2, gen)
    x = torch.randn(16, 2, generator=gen, dtype=torch.float64)
    exact = model.exact(x)

    def mean_estimate(k: int, repeats: int) -> torch.Tensor:
        xs = x.repeat(repeats, 1)  # independent estimates for the same 16 points
        est = importance_weighted_log_prob(model.bound, xs, num_samples=k, chunk_size=100)
        return est.reshape(repeats, -1).mean(0)

    # k = 1 is the ordinary bound: its mean matches log p(x) - KL and lies below log p(x).
    expected_one = model.expected_bound(x)
    gap = exact - expected_one
    assert (gap > 0.3).all()
    one = mean_estimate(1, repeats=1000)  # per-point standard error ≈ 0.05
    torch.testing.assert_close(one, expected_one, atol=0.25, rtol=0)
    assert (one < exact).all()

    # The bound tightens monotonically in k and reaches log p(x).
    errors = [(exact - mean_estimate(k, repeats=40)).mean().item() for k in (1, 10, 100, 1000)]
    assert errors[0] > 10 * errors[1] > 0, errors  # k = 10 is tighter but still biased
    assert abs(errors[2]) < 0.02 and abs(errors[3]) < 0.01, errors  # within Monte Carlo noise
