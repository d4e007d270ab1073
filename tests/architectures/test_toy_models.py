"""The SurVAE toy models as the official code builds them: the checkerboard AbsFlow (sign
classifier + uniform base), AbsFlow with fair signs, the baseline, their initialisation, the
fixed per-feature affine layer and the experiment configs."""

import math
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from survae.architectures.toy import FeatureAffine, abs_flow_2d, abs_unif_2d, plain_flow_2d
from survae.distributions import StandardUniform
from survae.errors import ShapeError
from survae.flows import Flow
from survae.models import build_model
from survae.registry import get
from survae.testing import assert_invertible, assert_logdet_matches_autograd, grid_integral
from survae.transforms.bijections.coupling import AffineCoupling
from survae.transforms.surjections.abs_conditional import ConditionalAbsSurjection
from survae.transforms.surjections.absolute import AbsSurjection

CONFIG_DIR = str(Path(__file__).resolve().parents[2] / "configs")


def _experiment(name: str) -> dict:
    """The model, data and trainer groups of an experiment config (unresolved, no run)."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("train", overrides=[f"experiment={name}", "logger=none"])
    GlobalHydra.instance().clear()
    return {k: OmegaConf.to_container(cfg[k]) for k in ("model", "data", "trainer")}


def _checkerboard_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model({"architecture": "abs_unif_2d", "hidden": [32, 16]}, (2,)).double()


# ------------------------------------------------------------------ checkerboard AbsFlow
def test_abs_unif_layers_and_registry():
    assert get("architecture", "abs_unif_2d") is abs_unif_2d
    flow = build_model({"architecture": "abs_unif_2d"}, (2,))
    layer, affine = flow.transforms
    assert isinstance(layer, ConditionalAbsSurjection) and layer.elements == (0,)
    assert isinstance(flow.base_dist, StandardUniform)
    assert affine.shift.tolist() == [0.0, 4.0] and affine.scale.tolist() == [0.25, 0.125]
    assert flow.exact
    # the classifier MLP [200, 100] is the only learned part: 2·200+200 + 200·100+100 + 100+1
    assert sum(p.numel() for p in flow.parameters()) == 600 + 20_100 + 101


def test_abs_unif_log_prob_is_sign_probability_minus_log_32():
    flow = _checkerboard_model()
    layer = flow.transforms[0]
    x = torch.rand(64, 2, dtype=torch.float64) * 8 - 4
    z = torch.stack([x[:, 0].abs(), x[:, 1]], 1)
    logit = layer.net(z)[:, 0]
    p_sign = torch.where(x[:, 0] >= 0, torch.sigmoid(logit), torch.sigmoid(-logit))
    torch.testing.assert_close(flow.log_prob(x), p_sign.log() - math.log(32.0))
    assert not torch.allclose(p_sign, p_sign[0].expand_as(p_sign))  # a function of the point


def test_checkerboard_density_integrates_to_one_on_its_support():
    flow = _checkerboard_model()
    assert abs(grid_integral(flow.log_prob, -4.0, 4.0, n=200) - 1.0) < 1e-6
    outside = torch.tensor([[4.5, 0.0], [0.0, -4.5]], dtype=torch.float64)
    assert torch.isinf(flow.log_prob(outside)).all()


def test_checkerboard_optimum_is_log_32_when_the_sign_is_learned():
    # A classifier that predicts the checkerboard cell exactly reaches -log 32 = -3.466 nats.
    flow = _checkerboard_model()
    x = torch.tensor([[-3.0, -3.0], [-1.0, -3.0], [1.0, 3.0]], dtype=torch.float64)
    with torch.no_grad():
        out = flow.transforms[0].net[-1]
        out.weight.zero_()
        out.bias.fill_(50.0)  # always positive
    lp = flow.log_prob(x)
    assert lp[2].item() == pytest.approx(-math.log(32.0), abs=1e-9)
    assert lp[0].item() < -40  # negative x0 is now (nearly) impossible


def test_abs_unif_samples_lie_in_the_box():
    flow = _checkerboard_model()
    with torch.no_grad():
        x = flow.sample(500)
    assert x.shape == (500, 2) and x.abs().max() <= 4.0
    assert (x[:, 0] < 0).any() and (x[:, 0] > 0).any()


# ------------------------------------------------------------------ AbsFlow and baseline
def test_abs_flow_uses_fair_fixed_signs_by_default():
    flow = abs_flow_2d()
    layer = flow.transforms[0]
    assert isinstance(layer, AbsSurjection) and not layer.learn_signs
    assert not any(p is layer.logits for p in flow.parameters())
    learned = abs_flow_2d(learn_signs=True).transforms[0]
    assert any(p is learned.logits for p in learned.parameters())


def test_abs_flow_on_the_axis_is_the_official_clamped_logit_formula():
    """At x = (0, 0.5): log p = 2 log(1/2) (signs) + 2 log(1/4) (scale) − Σ log y(1 − y) with
    y = clamp(|x|/4, 1e-6, 1 − 1e-6) (official Logit) + log p of the couplings at logit(y)."""
    torch.manual_seed(0)
    flow = abs_flow_2d(hidden=[16, 8], logit_mode="clamp", logit_eps=1e-6).double()
    x = torch.tensor([[0.0, 0.5], [-0.5, 0.0], [4e-6, -0.5]], dtype=torch.float64)
    y = (x.abs() / 4).clamp(1e-6, 1 - 1e-6)
    tail = Flow(flow.base_dist, list(flow.transforms[3:])).double()
    ref = 2 * math.log(0.5) + 2 * math.log(0.25) - (y * (1 - y)).log().sum(1)
    ref = ref + tail.log_prob(y.log() - (-y).log1p())
    torch.testing.assert_close(flow.log_prob(x), ref)
    torch.testing.assert_close(flow.log_prob(x)[0], flow.log_prob(x[2:])[0])  # 0 ~ 4e-6
    squeeze = abs_flow_2d(hidden=[16, 8], logit_mode="squeeze", logit_eps=1e-9).double()
    squeeze.load_state_dict(flow.state_dict())
    assert (squeeze.log_prob(x[:1]) - flow.log_prob(x[:1])).abs().item() > 1.0


@pytest.mark.parametrize("builder", [abs_flow_2d, plain_flow_2d])
def test_init_official_keeps_pytorch_default_output_layers(builder):
    torch.manual_seed(0)
    couplings = [t for t in builder().transforms if isinstance(t, AffineCoupling)]
    assert len(couplings) == 4
    for c in couplings:
        assert c.net[-1].weight.abs().sum() > 0 and c.net[-1].bias.abs().sum() > 0
        assert isinstance(c.net[1], torch.nn.ReLU)
    for c in (t for t in builder(init="zero_output").transforms if isinstance(t, AffineCoupling)):
        assert c.net[-1].weight.abs().sum() == 0


def test_unknown_init_is_a_clear_error():
    with pytest.raises(ValueError, match="abs_unif_2d: unknown init 'xavier'.*official"):
        abs_unif_2d(init="xavier")
    with pytest.raises(ValueError, match="unknown init 'zeros'.*zero_output"):
        plain_flow_2d(init="zeros")


# ------------------------------------------------------------------ feature_affine layer
def test_feature_affine_registered_invertible_and_logdet():
    assert get("layer", "feature_affine") is FeatureAffine
    layer = FeatureAffine([0.0, 4.0], [0.25, -0.125]).double()
    x = torch.randn(6, 2, dtype=torch.float64)
    z, ldj = assert_invertible(layer, x)
    torch.testing.assert_close(z, (x + torch.tensor([0.0, 4.0], dtype=x.dtype)) *
                               torch.tensor([0.25, -0.125], dtype=x.dtype))  # fmt: skip
    torch.testing.assert_close(ldj, torch.full((6,), math.log(1 / 32), dtype=x.dtype))
    assert_logdet_matches_autograd(layer, x)


def test_feature_affine_errors():
    with pytest.raises(ValueError, match="FeatureAffine: shift and scale need one value"):
        FeatureAffine([0.0], [1.0, 2.0])
    with pytest.raises(ValueError, match="non-zero"):
        FeatureAffine([0.0, 0.0], [1.0, 0.0])
    with pytest.raises(ShapeError, match="FeatureAffine"):
        FeatureAffine([0.0, 0.0], [1.0, 1.0])(torch.randn(3, 3))


# ------------------------------------------------------------------ experiment configs
@pytest.mark.parametrize("data", ["checkerboard", "corners", "eight_gaussians", "four_circles"])
def test_toy_experiment_configs_follow_the_official_scripts(data):
    abs_cfg, base_cfg = _experiment(f"abs_flow_{data}"), _experiment(f"plain_flow_{data}")
    for cfg in (abs_cfg, base_cfg):
        assert cfg["data"]["test_size"] == 128_000 and cfg["data"]["train_size"] == 128_000
        assert cfg["data"]["batch_size"] == 128 and cfg["trainer"]["max_epochs"] == 10
        assert cfg["model"]["init"] == "official"
    if data == "checkerboard":
        assert abs_cfg["model"]["architecture"] == "abs_unif_2d"
        assert base_cfg["model"]["scale_fn"] == "exp"
    else:
        assert abs_cfg["model"]["architecture"] == "abs_flow_2d"
        assert abs_cfg["model"]["learn_signs"] is False
        assert abs_cfg["model"]["scale_fn"] == base_cfg["model"]["scale_fn"] == "softplus"
