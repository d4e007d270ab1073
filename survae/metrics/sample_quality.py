"""Sample-quality metrics: Fréchet Inception Distance (FID) and Inception Score (IS).

The maths is torchmetrics' (``FrechetInceptionDistance``, ``InceptionScore``); the networks are
given explicitly:

* :func:`inception_feature_extractor` — the TensorFlow Inception-v3 ported by pytorch-fid
  (``pt_inception-2015-12-05-6726825d.pth``), the network behind published FID and IS numbers.
  Its weights are read from a local file only, never downloaded.
* :class:`SmallFeatureExtractor` — a tiny seeded random conv net, for tests and for machines
  without the Inception weights. Same maths, but its numbers are **not comparable** to
  published FID/IS; every result carries ``comparable_to_published`` to say which is which.

Images are uint8 tensors ``[N, C, H, W]`` with values 0–255 and ``C`` = 3 (RGB) or 1
(grey, repeated to RGB). Published FIDs use 50,000 samples; with fewer, FID is biased upwards,
so only compare numbers computed on the same number of images.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Iterable, Iterator, Mapping
from itertools import chain
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from survae.errors import ShapeError, check_ndim

#: file name of pytorch-fid's port of the TensorFlow FID Inception-v3 weights
INCEPTION_WEIGHTS_FILENAME = "pt_inception-2015-12-05-6726825d.pth"
#: where that file is published (pytorch-fid release assets); download it by hand
INCEPTION_WEIGHTS_URL = (
    "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/"
    + INCEPTION_WEIGHTS_FILENAME
)
#: environment variable naming the local weights file
INCEPTION_WEIGHTS_ENV = "SURVAE_INCEPTION_WEIGHTS"
#: scripts/eval_sample.py's option naming the local weights file
INCEPTION_WEIGHTS_FLAG = "--inception-weights"
#: scripts/eval_sample.py's option for the small network when the weights are absent
SMALL_FEATURES_FLAG = "--small-features"


class ImageFeatureExtractor(nn.Module):
    """Maps uint8 images ``[N, C, H, W]`` to features ``[N, num_features]`` (``forward``, used
    by FID) and to class logits ``[N, num_classes]`` (``logits``, used by IS)."""

    num_features: int
    num_classes: int
    #: whether scores computed with this network can be compared with published ones
    comparable_to_published: bool = False

    def embed(self, x: Tensor) -> Tensor:
        """Features of RGB images scaled to ``[0, 1]`` (float, ``[N, 3, H, W]``)."""
        raise NotImplementedError

    def classify(self, features: Tensor) -> Tensor:
        """Class logits from features."""
        raise NotImplementedError

    def preprocess(self, images: Tensor) -> Tensor:
        """uint8 ``[N, 1 or 3, H, W]`` → float RGB in ``[0, 1]``."""
        check_ndim(self, images, 4, "images")
        if images.dtype != torch.uint8:
            raise TypeError(
                f"{type(self).__name__}: expected uint8 images with values 0-255, "
                f"got dtype {images.dtype}"
            )
        channels = images.shape[1]
        if channels not in (1, 3):
            raise ShapeError(
                f"{type(self).__name__}: expected 1 (grey) or 3 (RGB) channels, "
                f"got images of shape {tuple(images.shape)}"
            )
        x = images.to(self._float_dtype()) / 255.0
        return x.expand(-1, 3, -1, -1) if channels == 1 else x

    def _float_dtype(self) -> torch.dtype:
        param = next(self.parameters(), None)
        return param.dtype if param is not None and param.is_floating_point() else torch.float32

    def forward(self, images: Tensor) -> Tensor:
        return self.embed(self.preprocess(images))

    def logits(self, images: Tensor) -> Tensor:
        return self.classify(self.embed(self.preprocess(images)))

    def train(self, mode: bool = True) -> ImageFeatureExtractor:
        """Always stays in evaluation mode (batch-norm statistics are part of the metric)."""
        return super().train(False)


class _LogitsOf(nn.Module):
    """``extractor.logits`` as a module (what torchmetrics' IS calls)."""

    def __init__(self, extractor: ImageFeatureExtractor):
        super().__init__()
        self.extractor = extractor

    def forward(self, images: Tensor) -> Tensor:
        return self.extractor.logits(images)


# --------------------------------------------------------------------------------------------
# Inception-v3 (FID weights)
# --------------------------------------------------------------------------------------------


def _build_fid_inception() -> nn.Module:
    """torchvision's Inception-v3 with the blocks patched as in the TensorFlow FID graph
    (pytorch-fid's ``FIDInception*`` blocks), 1008 classes, no auxiliary head, no weights."""
    import torchvision
    from pytorch_fid import inception as pf

    net = torchvision.models.inception_v3(
        weights=None, aux_logits=False, num_classes=1008, init_weights=False
    )
    net.Mixed_5b = pf.FIDInceptionA(192, pool_features=32)
    net.Mixed_5c = pf.FIDInceptionA(256, pool_features=64)
    net.Mixed_5d = pf.FIDInceptionA(288, pool_features=64)
    net.Mixed_6b = pf.FIDInceptionC(768, channels_7x7=128)
    net.Mixed_6c = pf.FIDInceptionC(768, channels_7x7=160)
    net.Mixed_6d = pf.FIDInceptionC(768, channels_7x7=160)
    net.Mixed_6e = pf.FIDInceptionC(768, channels_7x7=192)
    net.Mixed_7b = pf.FIDInceptionE_1(1280)
    net.Mixed_7c = pf.FIDInceptionE_2(2048)
    return net


class InceptionFeatureExtractor(ImageFeatureExtractor):
    """The FID Inception-v3: 2048 pool features (FID) and 1008 logits (IS).

    Preprocessing follows pytorch-fid: bilinear resize to 299×299, then scaling to ``[-1, 1]``.
    The IS logits are the pool features times the final layer's weights *without* its bias, as
    in the original Inception Score code (torch-fidelity's ``logits_unbiased``).
    Build it with :func:`inception_feature_extractor`.
    """

    num_features = 2048
    num_classes = 1008

    def __init__(self, state_dict: Mapping[str, Tensor] | None = None):
        super().__init__()
        self.net = _build_fid_inception()
        self.comparable_to_published = state_dict is not None
        if state_dict is not None:
            self.net.load_state_dict(state_dict)
        self.requires_grad_(False)
        self.eval()

    def embed(self, x: Tensor) -> Tensor:
        net = self.net
        x = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
        x = 2.0 * x - 1.0
        for name in (
            "Conv2d_1a_3x3",
            "Conv2d_2a_3x3",
            "Conv2d_2b_3x3",
            "maxpool1",
            "Conv2d_3b_1x1",
            "Conv2d_4a_3x3",
            "maxpool2",
            "Mixed_5b",
            "Mixed_5c",
            "Mixed_5d",
            "Mixed_6a",
            "Mixed_6b",
            "Mixed_6c",
            "Mixed_6d",
            "Mixed_6e",
            "Mixed_7a",
            "Mixed_7b",
            "Mixed_7c",
        ):
            x = getattr(net, name)(x)
        return F.adaptive_avg_pool2d(x, 1).flatten(1)

    def classify(self, features: Tensor) -> Tensor:
        return features @ self.net.fc.weight.t()


def inception_weights_candidates(weights_path: str | os.PathLike | None = None) -> list[Path]:
    """Where :func:`inception_feature_extractor` looks, in order: the given path; else the
    ``SURVAE_INCEPTION_WEIGHTS`` environment variable; else torch hub's checkpoint cache (where
    pytorch-fid stores the file after an online run)."""
    if weights_path is not None and str(weights_path) != "":
        return [Path(weights_path).expanduser()]
    env = os.environ.get(INCEPTION_WEIGHTS_ENV)
    if env:
        return [Path(env).expanduser()]
    return [Path(torch.hub.get_dir()) / "checkpoints" / INCEPTION_WEIGHTS_FILENAME]


def resolve_inception_weights(weights_path: str | os.PathLike | None = None) -> Path:
    """The local FID Inception weights file; ``FileNotFoundError`` with instructions if absent."""
    candidates = inception_weights_candidates(weights_path)
    for path in candidates:
        if path.is_file():
            return path
    looked = ", ".join(str(p) for p in candidates)
    source = (
        "the given path"
        if weights_path is not None and str(weights_path) != ""
        else f"${INCEPTION_WEIGHTS_ENV}"
        if os.environ.get(INCEPTION_WEIGHTS_ENV)
        else f"the default location (no path given and ${INCEPTION_WEIGHTS_ENV} unset)"
    )
    raise FileNotFoundError(
        f"Inception weights for FID/IS not found at {looked} ({source}). survae never downloads "
        f"them: fetch {INCEPTION_WEIGHTS_URL} on a machine with network access, copy the file "
        f"to this machine, and pass `{INCEPTION_WEIGHTS_FLAG} /path/to/"
        f"{INCEPTION_WEIGHTS_FILENAME}` (scripts/eval_sample.py) or set the environment "
        f"variable {INCEPTION_WEIGHTS_ENV}. Without it, `{SMALL_FEATURES_FLAG}` computes the "
        f"same metrics with a small random network (scores not comparable to published ones)."
    )


def inception_feature_extractor(
    weights_path: str | os.PathLike | None = None,
    device: torch.device | str | None = None,
) -> InceptionFeatureExtractor:
    """The FID Inception-v3 loaded from a local ``pt_inception-2015-12-05-6726825d.pth``.

    ``weights_path`` (``scripts/eval_sample.py --inception-weights``) or else the environment
    variable ``SURVAE_INCEPTION_WEIGHTS`` names the file; see :func:`resolve_inception_weights`.
    Never touches the network.
    """
    path = resolve_inception_weights(weights_path)
    state_dict = torch.load(path, map_location="cpu", weights_only=True)
    extractor = InceptionFeatureExtractor(state_dict)
    return extractor.to(device) if device is not None else extractor


# --------------------------------------------------------------------------------------------
# Small seeded extractor
# --------------------------------------------------------------------------------------------


class SmallFeatureExtractor(ImageFeatureExtractor):
    """A tiny random conv net with fixed, seeded weights (3 conv layers, global average pool,
    linear classifier head). Any image size works.

    It measures the same statistics as the Inception network, so scores rank models and show
    trends, but they are NOT comparable to published FID/IS (``comparable_to_published``
    False). Its random FID features do track distribution shifts; its untrained classifier
    head makes its Inception Score only a check of the pipeline, not of sample quality.
    The weights depend only on ``seed`` and the sizes, not on the global RNG.
    """

    comparable_to_published = False

    def __init__(
        self, num_features: int = 64, num_classes: int = 10, width: int = 16, seed: int = 0
    ):
        super().__init__()
        self.num_features = num_features
        self.num_classes = num_classes
        self.body = nn.Sequential(
            nn.Conv2d(3, width, 3, stride=2, padding=1),
            nn.LeakyReLU(0.2),
            nn.Conv2d(width, 2 * width, 3, stride=2, padding=1),
            nn.LeakyReLU(0.2),
            nn.Conv2d(2 * width, num_features, 3, padding=1),
            nn.Tanh(),
        )
        self.head = nn.Linear(num_features, num_classes)
        generator = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for module in (*self.body, self.head):
                if isinstance(module, (nn.Conv2d, nn.Linear)):
                    fan_in = module.weight[0].numel()
                    w = torch.randn(module.weight.shape, generator=generator)
                    module.weight.copy_(w * (2.0 / fan_in) ** 0.5)
                    module.bias.copy_(0.1 * torch.randn(module.bias.shape, generator=generator))
        self.requires_grad_(False)
        self.eval()

    def embed(self, x: Tensor) -> Tensor:
        return self.body(2.0 * x - 1.0).mean(dim=(2, 3))

    def classify(self, features: Tensor) -> Tensor:
        return self.head(features)


# --------------------------------------------------------------------------------------------
# Metrics
# --------------------------------------------------------------------------------------------


def _batches(images: Tensor | Iterable[Tensor], batch_size: int) -> Iterator[Tensor]:
    if isinstance(images, Tensor):
        return iter(images.split(batch_size))
    return iter(images)


def _check_batch(batch: Tensor, what: str) -> None:
    if not isinstance(batch, Tensor) or batch.dim() != 4 or batch.dtype != torch.uint8:
        desc = (
            f"shape {tuple(batch.shape)}, dtype {batch.dtype}"
            if isinstance(batch, Tensor)
            else type(batch).__name__
        )
        raise ShapeError(f"{what}: expected uint8 images of shape (batch, C, H, W), got {desc}")


def _device_of(module: nn.Module) -> torch.device:
    param = next(chain(module.parameters(), module.buffers()), None)
    return param.device if param is not None else torch.device("cpu")


def _describe(module: nn.Module) -> tuple[str, bool]:
    name = type(module).__name__
    return name, bool(getattr(module, "comparable_to_published", False))


@torch.no_grad()
def compute_fid(
    real_images: Tensor | Iterable[Tensor],
    fake_images: Tensor | Iterable[Tensor],
    feature_extractor: nn.Module,
    batch_size: int = 100,
) -> dict[str, Any]:
    """Fréchet distance between Gaussians fitted to the features of real and generated images.

    ``FID = ||μ_r - μ_f||² + Tr(Σ_r + Σ_f - 2 (Σ_r Σ_f)^{1/2})`` (Heusel et al., 2017), computed
    by torchmetrics in float64. Images are uint8 ``[N, C, H, W]`` tensors or iterables of such
    batches (a tensor is split into ``batch_size`` chunks). ``feature_extractor`` maps a uint8
    batch to ``[batch, num_features]``: :func:`inception_feature_extractor` for published-scale
    numbers, :class:`SmallFeatureExtractor` otherwise.

    Returns ``{"fid", "num_real", "num_fake", "feature_extractor", "comparable_to_published"}``.
    """
    from torchmetrics.image.fid import FrechetInceptionDistance

    device = _device_of(feature_extractor)
    was_training = feature_extractor.training
    feature_extractor.eval()
    real_iter = _batches(real_images, batch_size)
    first = next(real_iter, None)
    if first is None:
        raise ValueError("compute_fid: no real images given")
    _check_batch(first, "compute_fid real images")
    metric = FrechetInceptionDistance(
        feature=feature_extractor, normalize=False, input_img_size=tuple(first.shape[1:])
    ).to(device)
    counts = {True: 0, False: 0}
    try:
        for real, batches in (
            (True, chain([first], real_iter)),
            (False, _batches(fake_images, batch_size)),
        ):
            for batch in batches:
                _check_batch(batch, f"compute_fid {'real' if real else 'fake'} images")
                metric.update(batch.to(device), real=real)
                counts[real] += batch.shape[0]
        if min(counts.values()) < 2:
            raise ValueError(
                f"compute_fid needs at least 2 real and 2 fake images, got {counts[True]} real "
                f"and {counts[False]} fake"
            )
        fid = float(metric.compute())
    finally:
        feature_extractor.train(was_training)
    name, comparable = _describe(feature_extractor)
    return {
        "fid": fid,
        "num_real": counts[True],
        "num_fake": counts[False],
        "feature_extractor": name,
        "comparable_to_published": comparable,
    }


@torch.no_grad()
def compute_inception_score(
    fake_images: Tensor | Iterable[Tensor],
    classifier: nn.Module,
    splits: int = 10,
    batch_size: int = 100,
) -> dict[str, Any]:
    """Inception Score ``exp(E_x KL(p(y|x) || p(y)))`` (Salimans et al., 2016).

    Computed by torchmetrics on ``splits`` random subsets; the score is the mean over subsets
    and ``inception_score_std`` their standard deviation. It ranges from 1 (every image gets
    the same class distribution) to the number of classes (confident, evenly spread classes).
    ``classifier`` is an :class:`ImageFeatureExtractor` (its ``logits`` are used) or any module
    mapping a uint8 batch to class logits ``[batch, num_classes]``.

    Returns ``{"inception_score", "inception_score_std", "num_images", "splits", "classifier",
    "comparable_to_published"}``.
    """
    from torchmetrics.image.inception import InceptionScore

    module = _LogitsOf(classifier) if isinstance(classifier, ImageFeatureExtractor) else classifier
    device = _device_of(classifier)
    was_training = classifier.training
    classifier.eval()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*will save all extracted features.*")
        metric = InceptionScore(feature=module, splits=splits, normalize=False).to(device)
    count = 0
    try:
        for batch in _batches(fake_images, batch_size):
            _check_batch(batch, "compute_inception_score images")
            metric.update(batch.to(device))
            count += batch.shape[0]
        if count < splits:
            raise ValueError(
                f"compute_inception_score needs at least `splits` = {splits} images, got {count}"
            )
        with warnings.catch_warnings():
            # one split has no spread: the std is reported as NaN without a warning
            warnings.filterwarnings("ignore", message=".*degrees of freedom.*")
            mean, std = metric.compute()
    finally:
        classifier.train(was_training)
    name, comparable = _describe(classifier)
    return {
        "inception_score": float(mean),
        "inception_score_std": float(std) if splits > 1 else math.nan,
        "num_images": count,
        "splits": splits,
        "classifier": name,
        "comparable_to_published": comparable,
    }
