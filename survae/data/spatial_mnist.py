"""SpatialMNIST (Edwards & Storkey, 2017): each MNIST digit as a set of 50 points in the plane.

Construction, as in the Neural Statistician's data script used by SurVAE: a digit's 784
pixel intensities, normalised, form a categorical distribution over pixels; 50 pixels are
drawn from it -- *without* replacement when the image has at least 50 non-zero pixels,
otherwise with replacement -- and each drawn pixel (row ``r``, column ``c``) becomes the point
``(c + u, 27 - r + v)`` with ``u, v ~ U[0, 1)`` (so the digit stands upright and every
coordinate lies in ``[0, 28)``). Sampling without replacement in draw order is done for all
images at once with the Gumbel-top-k trick (as an exponential race).

Splits (SurVAE / Neural Statistician): training = the first 50,000 MNIST training digits,
validation = the last ``val_size`` = 10,000 training digits, test = the 10,000 MNIST test
digits. Batches are float32 ``[B, 50, 2]``.

The points are generated once from ``ROOT/MNIST/raw/`` (the ``mnist`` data module's files;
``download=True`` fetches them) with seed ``data_seed`` and cached in
``ROOT/spatial_mnist/points_n<num_points>_seed<data_seed>.npz``; later runs read only the
cache.
"""

from __future__ import annotations

import os

import numpy as np
import torch

from survae.data.base import ArrayDataset, FlowDataModule
from survae.data.errors import DatasetCorruptedError
from survae.data.images import MNISTDataModule
from survae.registry import register


def images_to_point_sets(
    images: np.ndarray | torch.Tensor,
    num_points: int = 50,
    generator: torch.Generator | None = None,
    chunk_size: int = 4096,
) -> np.ndarray:
    """Point sets ``(N, num_points, 2)`` float32 sampled from grey images ``(N, H, W)``.

    Pixels are drawn in proportion to their intensity (without replacement when an image has
    at least ``num_points`` non-zero pixels), and jittered uniformly within the pixel;
    ``x`` = column, ``y`` = ``H - 1 - row`` (image "up" is +y).
    """
    images = torch.as_tensor(np.asarray(images))
    if images.dim() != 3:
        raise ValueError(f"images_to_point_sets: expected (N, H, W), got {tuple(images.shape)}")
    N, H, W = images.shape
    out = torch.empty(N, num_points, 2, dtype=torch.float64)
    for start in range(0, N, chunk_size):
        w = images[start : start + chunk_size].reshape(-1, H * W).float()
        n = len(w)
        positive = w > 0
        enough = positive.sum(1) >= num_points
        # All-zero images (never in MNIST) fall back to uniform pixel choice.
        w = torch.where(positive.any(1, keepdim=True), w, torch.ones_like(w))
        if num_points <= H * W:
            # Exponential race (= Gumbel-top-k): the k smallest E / w with E ~ Exp(1) are a
            # weighted draw without replacement, in draw order; zero weights never win.
            race = -torch.log1p(-torch.rand(w.shape, generator=generator)) / w
            idx = torch.topk(race, num_points, dim=1, largest=False).indices
        else:
            idx = torch.zeros(n, num_points, dtype=torch.long)
            enough = torch.zeros_like(enough)
        lacking = (~enough).nonzero().squeeze(1)  # images with too few non-zero pixels
        if len(lacking) > 0:
            idx[lacking] = torch.multinomial(
                w[lacking], num_points, replacement=True, generator=generator
            )
        jitter = torch.rand(n, num_points, 2, generator=generator, dtype=torch.float64)
        rows, cols = idx // W, idx % W
        out[start : start + n, :, 0] = cols + jitter[..., 0]
        out[start : start + n, :, 1] = (H - 1 - rows) + jitter[..., 1]
    # float32 rounding could reach the upper bound exactly; keep the half-open range.
    res = out.float().numpy()
    np.minimum(res[..., 1], np.nextafter(np.float32(H), np.float32(0)), out=res[..., 1])
    np.minimum(res[..., 0], np.nextafter(np.float32(W), np.float32(0)), out=res[..., 0])
    return res


@register("dataset", "spatial_mnist")
class SpatialMNISTDataModule(FlowDataModule):
    """SpatialMNIST point sets: float32 ``[B, num_points, 2]`` in ``[0, 28)^2``.

    Args:
        num_points: points per digit (50 in the papers).
        val_size: last training digits held out for validation (10,000 in SurVAE).
        **kwargs: see :class:`~survae.data.base.FlowDataModule`; ``data_seed`` seeds the
            point sampling (and names the cache file).
    """

    name = "spatial_mnist"
    kind = "points"
    num_bins = None

    def __init__(self, num_points: int = 50, val_size: int = 10_000, **kwargs):
        super().__init__(**kwargs)
        if num_points < 1 or val_size < 1:
            raise ValueError("spatial_mnist: num_points and val_size must be positive")
        self.num_points = int(num_points)
        self.val_size = int(val_size)
        self.shape = (self.num_points, 2)

    @property
    def cache_path(self) -> str:
        return self.path("spatial_mnist", f"points_n{self.num_points}_seed{self.data_seed}.npz")

    def _mnist(self) -> MNISTDataModule:
        return MNISTDataModule(root=self.root, batch_size=1, download=self.download)

    def _download(self) -> None:
        if not os.path.isfile(self.cache_path):
            self._mnist().prepare_data()

    def build_cache(self) -> dict[str, np.ndarray]:
        """Sample the point sets from the MNIST files and write the cache file."""
        mnist = self._mnist()
        splits = {}
        for k, split in enumerate(("train", "test")):
            images = mnist.read_split(split)[:, 0]
            seed = int(np.random.SeedSequence([self.data_seed, k]).generate_state(1)[0])
            gen = torch.Generator().manual_seed(seed)
            splits[split] = images_to_point_sets(images, self.num_points, generator=gen)
        os.makedirs(os.path.dirname(self.cache_path), exist_ok=True)
        tmp = self.cache_path + ".tmp.npz"
        np.savez(tmp, **splits)
        os.replace(tmp, self.cache_path)
        return splits

    def _read_cache(self) -> dict[str, np.ndarray] | None:
        if not os.path.isfile(self.cache_path):
            return None
        with np.load(self.cache_path, allow_pickle=False) as f:
            splits = {s: f[s] for s in ("train", "test")}
        for s, x in splits.items():
            if x.shape[1:] != self.shape or x.dtype != np.float32:
                raise DatasetCorruptedError(
                    f"{self.cache_path}: split {s!r} has {x.dtype} {x.shape}, expected float32 "
                    f"(N, {self.num_points}, 2); delete the file to rebuild it"
                )
        return splits

    def _prepare(self) -> None:
        if not os.path.isfile(self.cache_path) and self._mnist()._files_present():
            self.build_cache()

    def _load(self):
        splits = self._read_cache()
        if splits is None:
            splits = self.build_cache()
        train = torch.from_numpy(splits["train"])
        n = len(train)
        if self.val_size >= n:
            raise ValueError(f"spatial_mnist: val_size {self.val_size} >= {n} training sets")
        return (
            ArrayDataset(train[: n - self.val_size]),
            ArrayDataset(train[n - self.val_size :]),
            ArrayDataset(torch.from_numpy(splits["test"])),
        )
