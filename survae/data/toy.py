"""2-D toy densities, sampled on the fly from a seeded generator.

The four sets of the SurVAE paper's AbsFlow experiment follow the official SurVAE definitions
(``checkerboard``, ``corners``, ``eight_gaussians``, ``four_circles``); ``two_moons``,
``two_spirals``, ``pinwheel`` and ``rings`` follow the FFJORD / NSF toy sets; ``gaussian``,
``crescent``, ``crescent_cubed``, ``sinewave``, ``abs``, ``sign`` and ``diamond`` are the
official SurVAE library's other plane sets (from NSF's ``plane.py``; its image-based
``face_einstein`` needs an image file and is not included). Each sampler draws ``n`` points
with a :class:`numpy.random.Generator` in a few vectorised operations.

**Support.** The AbsFlow model divides by 4 and applies a logit, so every point must lie
strictly inside ``(-4, 4)^2``. Points with a coordinate outside
``[-TOY_LIMIT, TOY_LIMIT]`` (``TOY_LIMIT = 4 - 1e-3``) are rejected and redrawn, so each set is
its nominal density truncated to that square (for most sets nothing or a handful of points in
a million are affected; checkerboard and corners reach the border and lose a 1e-3 strip).
The official plane sets (``UNBOUNDED``) have unbounded Gaussian parts and are not truncated.

Splits: train, validation and test are independent samples (sizes ``train_size``,
``val_size``, ``test_size``; the official SurVAE toy scripts draw 128,000 training and 128,000
test points, the defaults here) from streams seeded with
``(data_seed, split)``, so e.g. changing ``train_size`` leaves the test set unchanged.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from survae.data.base import ArrayDataset, FlowDataModule
from survae.registry import register

TOY_LIMIT = 4.0 - 1e-3

Sampler = Callable[[int, np.random.Generator], np.ndarray]


def _checkerboard(n: int, rng: np.random.Generator) -> np.ndarray:
    # 8 of the 16 unit cells of [-2, 2)^2 in a checker pattern, scaled by 2 to [-4, 4)^2.
    x1 = rng.uniform(-2.0, 2.0, n)
    x2 = rng.uniform(0.0, 1.0, n) - 2.0 * rng.integers(0, 2, n) + np.floor(x1) % 2
    return 2.0 * np.stack([x1, x2], axis=1)


def _corners(n: int, rng: np.random.Generator) -> np.ndarray:
    # An L-shape in each quadrant: |x| in [1, 2], |y| in [1, 4]  or  |x| in [1, 4], |y| in [1, 2]
    # (gap 1, bar width 1, length 3), each half of the mass, quadrants by random signs.
    short = 1.0 + rng.uniform(0.0, 1.0, n)
    long = 1.0 + 3.0 * rng.uniform(0.0, 1.0, n)
    vertical = rng.integers(0, 2, n).astype(bool)
    pts = np.where(vertical[:, None], np.stack([short, long], 1), np.stack([long, short], 1))
    signs = 2.0 * rng.integers(0, 2, (n, 2)) - 1.0
    return pts * signs


def _eight_gaussians(n: int, rng: np.random.Generator) -> np.ndarray:
    # Centres on a circle of radius 4 at angles pi/8 + k pi/4, std 0.5, all divided by 1.414.
    angles = np.pi / 8 + np.pi / 4 * rng.integers(0, 8, n)
    centres = 4.0 * np.stack([np.cos(angles), np.sin(angles)], 1)
    return (centres + 0.5 * rng.standard_normal((n, 2))) / 1.414


def _four_circles(n: int, rng: np.random.Generator) -> np.ndarray:
    # Circles of radius 2 centred at (+-1, +-1), Gaussian noise std 0.1.
    u = rng.uniform(0.0, 1.0, n)
    circle = 2.0 * np.stack([np.cos(2 * np.pi * u), np.sin(2 * np.pi * u)], 1)
    centres = 2.0 * rng.integers(0, 2, (n, 2)) - 1.0
    return circle + 0.1 * rng.standard_normal((n, 2)) - centres


def _two_moons(n: int, rng: np.random.Generator) -> np.ndarray:
    # scikit-learn's two moons (noise 0.1) mapped by x -> 2x + (-1, -0.2), as in FFJORD.
    t = rng.uniform(0.0, np.pi, n)
    inner = rng.integers(0, 2, n).astype(bool)
    outer_pts = np.stack([np.cos(t), np.sin(t)], 1)
    inner_pts = np.stack([1.0 - np.cos(t), 0.5 - np.sin(t)], 1)
    pts = np.where(inner[:, None], inner_pts, outer_pts) + 0.1 * rng.standard_normal((n, 2))
    return 2.0 * pts + np.array([-1.0, -0.2])


def _two_spirals(n: int, rng: np.random.Generator) -> np.ndarray:
    # Two interleaved Archimedean spirals of 1.5 turns (FFJORD's "2spirals").
    r = np.sqrt(rng.uniform(0.0, 1.0, n)) * 3 * np.pi
    x = -np.cos(r) * r + 0.5 * rng.uniform(0.0, 1.0, n)
    y = np.sin(r) * r + 0.5 * rng.uniform(0.0, 1.0, n)
    sign = 2.0 * rng.integers(0, 2, n) - 1.0
    pts = sign[:, None] * np.stack([x, y], 1) / 3.0
    return pts + 0.1 * rng.standard_normal((n, 2))


def _pinwheel(n: int, rng: np.random.Generator) -> np.ndarray:
    # Five arms: radial N(1, 0.3^2), tangential N(0, 0.1^2), rotated by the arm angle plus
    # 0.25 * exp(radial), scaled by 2 (FFJORD's "pinwheel").
    arm = rng.integers(0, 5, n)
    feats = rng.standard_normal((n, 2)) * np.array([0.3, 0.1]) + np.array([1.0, 0.0])
    angle = 2 * np.pi * arm / 5 + 0.25 * np.exp(feats[:, 0])
    c, s = np.cos(angle), np.sin(angle)
    x = feats[:, 0] * c + feats[:, 1] * s
    y = -feats[:, 0] * s + feats[:, 1] * c
    return 2.0 * np.stack([x, y], 1)


def _rings(n: int, rng: np.random.Generator) -> np.ndarray:
    # Four concentric rings of radii 3, 2.25, 1.5, 0.75 with equal mass, noise std 0.08.
    radius = 0.75 * rng.integers(1, 5, n)
    t = rng.uniform(0.0, 2 * np.pi, n)
    pts = radius[:, None] * np.stack([np.cos(t), np.sin(t)], 1)
    return pts + 0.08 * rng.standard_normal((n, 2))


def _gaussian(n: int, rng: np.random.Generator) -> np.ndarray:
    # N(0, diag(1, 0.25))
    return rng.standard_normal((n, 2)) * np.array([1.0, 0.5])


def _conditional(
    n: int, rng: np.random.Generator, mean: Callable[[np.ndarray], np.ndarray], log_var: float
) -> np.ndarray:
    """``(x1, x2)`` with ``x1 ~ N(0, 1)`` and ``x2 | x1 ~ N(mean(x1), exp(log_var))``."""
    x1 = rng.standard_normal(n)
    x2 = mean(x1) + np.exp(0.5 * log_var) * rng.standard_normal(n)
    return np.stack([x1, x2], 1)


def _crescent(n: int, rng: np.random.Generator) -> np.ndarray:
    # x2 | x1 ~ N(x1² / 2 − 1, e⁻²), returned as (x2, x1)
    return _conditional(n, rng, lambda x: 0.5 * x**2 - 1.0, -2.0)[:, ::-1]


def _crescent_cubed(n: int, rng: np.random.Generator) -> np.ndarray:
    # x2 | x1 ~ N(0.2 x1³, 1), returned as (x2, x1)
    return _conditional(n, rng, lambda x: 0.2 * x**3, 0.0)[:, ::-1]


def _sinewave(n: int, rng: np.random.Generator) -> np.ndarray:
    # x2 | x1 ~ N(sin 5x1, e⁻²)
    return _conditional(n, rng, lambda x: np.sin(5.0 * x), -2.0)


def _abs(n: int, rng: np.random.Generator) -> np.ndarray:
    # x2 | x1 ~ N(|x1| − 1, e⁻³)
    return _conditional(n, rng, lambda x: np.abs(x) - 1.0, -3.0)


def _sign(n: int, rng: np.random.Generator) -> np.ndarray:
    # x2 | x1 ~ N(sign(x1) + x1, e⁻³)
    return _conditional(n, rng, lambda x: np.sign(x) + x, -3.0)


def _diamond(n: int, rng: np.random.Generator) -> np.ndarray:
    # A 20 × 20 grid of Gaussians (std 0.04) on [-2.5, 2.5]², jittered by up to 1e-3, then
    # rotated by 45 degrees.
    ticks = np.linspace(-2.5, 2.5, 20)
    means = np.stack(np.meshgrid(ticks, ticks, indexing="ij"), -1).reshape(-1, 2)
    means = means + 1e-3 * rng.uniform(0.0, 1.0, means.shape)
    pts = means[rng.integers(0, len(means), n)] + 0.04 * rng.standard_normal((n, 2))
    rotation = np.array([[1.0, -1.0], [1.0, 1.0]]) / np.sqrt(2.0)
    return pts @ rotation


SAMPLERS: dict[str, Sampler] = {
    "checkerboard": _checkerboard,
    "corners": _corners,
    "eight_gaussians": _eight_gaussians,
    "four_circles": _four_circles,
    "two_moons": _two_moons,
    "two_spirals": _two_spirals,
    "pinwheel": _pinwheel,
    "rings": _rings,
    "gaussian": _gaussian,
    "crescent": _crescent,
    "crescent_cubed": _crescent_cubed,
    "sinewave": _sinewave,
    "abs": _abs,
    "sign": _sign,
    "diamond": _diamond,
}

#: the official plane sets: drawn as defined, not truncated to the AbsFlow square
UNBOUNDED = frozenset({"gaussian", "crescent", "crescent_cubed", "sinewave", "abs", "sign"})


def sample_toy(name: str, n: int, rng: np.random.Generator | int = 0) -> np.ndarray:
    """``n`` points of the toy set ``name`` as float32 ``(n, 2)``, all inside
    ``[-TOY_LIMIT, TOY_LIMIT]^2`` (points outside are rejected and redrawn) unless the set is
    one of ``UNBOUNDED``."""
    if name not in SAMPLERS:
        raise KeyError(f"unknown toy data set {name!r}; choose from {sorted(SAMPLERS)}")
    rng = np.random.default_rng(rng) if not isinstance(rng, np.random.Generator) else rng
    if name in UNBOUNDED:
        return np.ascontiguousarray(SAMPLERS[name](n, rng), dtype=np.float32)
    sampler, parts, missing = SAMPLERS[name], [], n
    while missing > 0:
        # Draw a little more than needed so one round almost always suffices.
        pts = sampler(missing + missing // 64 + 16, rng)
        pts = pts[np.all(np.abs(pts) <= TOY_LIMIT, axis=1)][:missing]
        parts.append(pts)
        missing -= len(pts)
    return np.concatenate(parts, 0).astype(np.float32) if parts else np.zeros((0, 2), np.float32)


class ToyDataModule(FlowDataModule):
    """2-D toy density: independent seeded samples for train, validation and test.

    Batches are float32 ``[B, 2]``, inside ``(-4, 4)^2`` except for the ``UNBOUNDED`` sets.
    ``download`` and
    ``check_integrity`` have no effect (nothing is read from disk).
    """

    kind = "toy"
    shape = (2,)
    num_bins = None

    def __init__(
        self,
        train_size: int = 128_000,
        val_size: int = 10_000,
        test_size: int = 128_000,
        batch_size: int = 128,
        **kwargs,
    ):
        super().__init__(batch_size=batch_size, **kwargs)
        if min(train_size, val_size, test_size) < 1:
            raise ValueError(f"{self.name}: split sizes must be positive")
        self.sizes = (int(train_size), int(val_size), int(test_size))

    def _load(self):
        return tuple(
            ArrayDataset(
                torch.from_numpy(
                    sample_toy(self.name, size, np.random.default_rng([self.data_seed, k]))
                )
            )
            for k, size in enumerate(self.sizes)
        )


def _make_toy_module(toy_name: str) -> type[ToyDataModule]:
    cls = type(
        "".join(p.capitalize() for p in toy_name.split("_")) + "DataModule",
        (ToyDataModule,),
        {
            "name": toy_name,
            "__doc__": f"2-D toy data set ``{toy_name}`` (see :mod:`survae.data.toy`).",
            "__module__": __name__,
        },
    )
    return register("dataset", toy_name)(cls)


CheckerboardDataModule = _make_toy_module("checkerboard")
CornersDataModule = _make_toy_module("corners")
EightGaussiansDataModule = _make_toy_module("eight_gaussians")
FourCirclesDataModule = _make_toy_module("four_circles")
TwoMoonsDataModule = _make_toy_module("two_moons")
TwoSpiralsDataModule = _make_toy_module("two_spirals")
PinwheelDataModule = _make_toy_module("pinwheel")
RingsDataModule = _make_toy_module("rings")
GaussianDataModule = _make_toy_module("gaussian")
CrescentDataModule = _make_toy_module("crescent")
CrescentCubedDataModule = _make_toy_module("crescent_cubed")
SinewaveDataModule = _make_toy_module("sinewave")
AbsDataModule = _make_toy_module("abs")
SignDataModule = _make_toy_module("sign")
DiamondDataModule = _make_toy_module("diamond")
