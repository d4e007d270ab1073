"""FID and Inception Score wrappers, feature extractors and offline weight handling."""

import math
import socket
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import scipy.linalg
import torch
from torch import nn

import survae  # noqa: F401  (installs the torchvision shim before torchmetrics is imported)
from survae.errors import ShapeError
from survae.metrics import (
    INCEPTION_WEIGHTS_ENV,
    INCEPTION_WEIGHTS_FILENAME,
    INCEPTION_WEIGHTS_URL,
    InceptionFeatureExtractor,
    SmallFeatureExtractor,
    compute_fid,
    compute_inception_score,
    inception_feature_extractor,
)


@pytest.fixture(autouse=True)
def _no_network(monkeypatch):
    """Any attempt to reach the network (or to download weights) fails the test."""

    def refuse(*args, **kwargs):
        raise AssertionError("network access attempted in a metrics test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(urllib.request, "urlopen", refuse)
    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", refuse)
    monkeypatch.delenv(INCEPTION_WEIGHTS_ENV, raising=False)


def _images(n: int, shift: float = 0.0, size: int = 12, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, size, size, generator=gen) * 120 + 40 + shift
    return x.clamp(0, 255).round().to(torch.uint8)


# ------------------------------------------------------------------------------- FID


class _PixelFeatures(nn.Module):
    """Features = a few raw pixel values, so FID can be checked against numpy/scipy."""

    num_features = 5

    def forward(self, images):
        return images.flatten(1)[:, :5].to(torch.float32)


def _reference_fid(a: np.ndarray, b: np.ndarray) -> float:
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root = scipy.linalg.sqrtm(cov_a @ cov_b).real
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a + cov_b - 2 * root))


def test_fid_matches_reference_formula_and_ignores_batching():
    real, fake = _images(300), _images(200, shift=15, seed=1)
    ref = _reference_fid(
        real.flatten(1)[:, :5].double().numpy(), fake.flatten(1)[:, :5].double().numpy()
    )
    result = compute_fid(real, fake, _PixelFeatures(), batch_size=64)
    assert result["fid"] == pytest.approx(ref, rel=1e-4)
    assert (result["num_real"], result["num_fake"]) == (300, 200)
    assert result["comparable_to_published"] is False
    as_batches = compute_fid(list(real.split(77)), iter(fake.split(33)), _PixelFeatures())
    assert as_batches["fid"] == pytest.approx(ref, rel=1e-4)


def test_fid_of_a_set_with_itself_is_zero():
    x = _images(200)
    result = compute_fid(x, x, SmallFeatureExtractor(), batch_size=50)
    assert abs(result["fid"]) < 1e-6
    assert result["feature_extractor"] == "SmallFeatureExtractor"
    assert result["comparable_to_published"] is False


def test_fid_grows_with_distribution_shift():
    extractor = SmallFeatureExtractor()
    real = _images(300)
    fids = [
        compute_fid(real, _images(300, shift=s, seed=1), extractor, batch_size=150)["fid"]
        for s in (0, 10, 25, 50, 90)
    ]
    assert all(a < b for a, b in zip(fids, fids[1:])), fids
    # two samples of the same distribution are much closer than shifted ones
    assert fids[0] < 0.2 * fids[2]


def test_small_extractor_is_seeded_and_handles_grey_images():
    torch.manual_seed(123)
    a = SmallFeatureExtractor(num_features=8, num_classes=4, seed=7)
    torch.manual_seed(456)
    b = SmallFeatureExtractor(num_features=8, num_classes=4, seed=7)
    c = SmallFeatureExtractor(num_features=8, num_classes=4, seed=8)
    x = _images(6)
    assert a(x).shape == (6, 8) and a.logits(x).shape == (6, 4)
    torch.testing.assert_close(a(x), b(x), rtol=0, atol=0)
    assert not torch.allclose(a(x), c(x))
    grey = x[:, :1]
    torch.testing.assert_close(a(grey), a(grey.expand(-1, 3, -1, -1)))
    a.train()
    assert not a.training  # batch statistics never change the metric


def test_extractor_rejects_bad_images():
    extractor = SmallFeatureExtractor()
    with pytest.raises(TypeError, match="uint8"):
        extractor(torch.rand(2, 3, 8, 8))
    with pytest.raises(ShapeError, match=r"SmallFeatureExtractor.*\(2, 3, 8\)"):
        extractor(torch.zeros(2, 3, 8, dtype=torch.uint8))
    with pytest.raises(ShapeError, match="1 \\(grey\\) or 3 \\(RGB\\)"):
        extractor(torch.zeros(2, 2, 8, 8, dtype=torch.uint8))


def test_compute_fid_input_errors():
    extractor = SmallFeatureExtractor()
    with pytest.raises(ShapeError, match="uint8"):
        compute_fid(torch.rand(4, 3, 8, 8), _images(4), extractor)
    with pytest.raises(ShapeError, match="fake"):
        compute_fid(_images(4), _images(4).float(), extractor)
    with pytest.raises(ValueError, match="at least 2"):
        compute_fid(_images(4), _images(1), extractor)


# -------------------------------------------------------------------------------- IS


class _LabelClassifier(nn.Module):
    """Reads the class index written in pixel (0, 0, 0) and outputs confident logits."""

    def __init__(self, num_classes: int, confidence: float = 30.0):
        super().__init__()
        self.num_classes = num_classes
        self.confidence = confidence

    def forward(self, images):
        labels = images[:, 0, 0, 0].long()
        return self.confidence * nn.functional.one_hot(labels, self.num_classes).float()


def _labelled_images(labels: torch.Tensor) -> torch.Tensor:
    images = torch.zeros(len(labels), 3, 4, 4, dtype=torch.uint8)
    images[:, 0, 0, 0] = labels.to(torch.uint8)
    return images


def test_inception_score_of_a_single_class_is_one():
    images = _labelled_images(torch.full((200,), 3))
    result = compute_inception_score(images, _LabelClassifier(10), splits=10, batch_size=64)
    assert result["inception_score"] == pytest.approx(1.0, abs=1e-4)
    assert result["num_images"] == 200
    assert result["comparable_to_published"] is False


def test_inception_score_of_uniform_confident_classes_is_the_number_of_classes():
    num_classes = 10
    labels = torch.arange(num_classes).repeat(50)
    classifier = _LabelClassifier(num_classes)
    one_split = compute_inception_score(_labelled_images(labels), classifier, splits=1)
    assert one_split["inception_score"] == pytest.approx(num_classes, rel=1e-4)
    # random splits of 100 images are nearly balanced
    ten = compute_inception_score(_labelled_images(labels), classifier, splits=10, batch_size=128)
    assert 0.85 * num_classes < ten["inception_score"] <= num_classes + 1e-4
    assert ten["inception_score_std"] > 0
    # half the classes → half the score
    half = compute_inception_score(_labelled_images(labels % 5), classifier, splits=1)
    assert half["inception_score"] == pytest.approx(5.0, rel=1e-4)


class _FixedLogits(nn.Module):
    def __init__(self, logits: torch.Tensor):
        super().__init__()
        self.logits = logits

    def forward(self, images):
        return self.logits[images[:, 0, 0, 0].long()]


def test_inception_score_matches_reference_formula():
    logits = torch.randn(200, 6) * 2
    images = _labelled_images(torch.arange(200))
    p = torch.softmax(logits.double(), 1).numpy()
    marginal = p.mean(0)
    ref = math.exp((p * (np.log(p) - np.log(marginal))).sum(1).mean())
    result = compute_inception_score(images, _FixedLogits(logits), splits=1, batch_size=70)
    assert result["inception_score"] == pytest.approx(ref, rel=1e-4)


def test_inception_score_uses_extractor_logits():
    extractor = SmallFeatureExtractor(num_classes=7)
    result = compute_inception_score(_images(40), extractor, splits=2)
    assert 1.0 <= result["inception_score"] <= 7.0
    assert result["classifier"] == "SmallFeatureExtractor"
    with pytest.raises(ValueError, match="splits"):
        compute_inception_score(_images(5), extractor, splits=10)


# ----------------------------------------------------------------- Inception weights


def test_missing_weights_error_names_path_and_how_to_fix(tmp_path):
    missing = tmp_path / "nowhere" / INCEPTION_WEIGHTS_FILENAME
    with pytest.raises(FileNotFoundError) as info:
        inception_feature_extractor(missing)
    message = str(info.value)
    assert str(missing) in message
    assert INCEPTION_WEIGHTS_URL in message
    assert INCEPTION_WEIGHTS_ENV in message
    # the hints name options that exist (survae-eval-sample), not config keys or classes
    assert "--inception-weights /path/to/" in message and "`--small-features`" in message
    assert "metrics.inception_weights" not in message and "SmallFeatureExtractor" not in message
    script = (Path(__file__).resolve().parents[2] / "survae/app/eval_sample.py").read_text()
    assert '"--inception-weights"' in script and '"--small-features"' in script


def test_missing_weights_from_env_and_default_location(tmp_path, monkeypatch):
    env_path = tmp_path / "env.pth"
    monkeypatch.setenv(INCEPTION_WEIGHTS_ENV, str(env_path))
    with pytest.raises(FileNotFoundError, match=str(env_path)):
        inception_feature_extractor()
    monkeypatch.delenv(INCEPTION_WEIGHTS_ENV)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "hub"))
    with pytest.raises(FileNotFoundError, match=INCEPTION_WEIGHTS_ENV + " unset"):
        inception_feature_extractor()


def test_inception_loads_local_weights_without_network(tmp_path, monkeypatch):
    # A stand-in weights file with the real file's layout (random values).
    reference = InceptionFeatureExtractor()
    assert reference.comparable_to_published is False
    path = tmp_path / INCEPTION_WEIGHTS_FILENAME
    torch.save(reference.net.state_dict(), path)

    monkeypatch.setenv(INCEPTION_WEIGHTS_ENV, str(path))
    loaded = inception_feature_extractor()
    assert loaded.comparable_to_published is True
    assert loaded.num_features == 2048 and not loaded.training
    for name, value in reference.net.state_dict().items():
        torch.testing.assert_close(loaded.net.state_dict()[name], value, rtol=0, atol=0)

    # One forward pass (≈2 s on CPU: the input is resized to 299×299).
    images = _images(1, size=20)
    features = loaded(images)
    assert features.shape == (1, 2048) and torch.isfinite(features).all()
    # IS logits omit the final layer's bias, as the original Inception Score code does
    monkeypatch.setattr(loaded, "embed", lambda x: features)
    logits = loaded.logits(images)
    assert logits.shape == (1, 1008)
    torch.testing.assert_close(logits, loaded.net.fc(features) - loaded.net.fc.bias)
