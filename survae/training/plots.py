"""Figures of samples: image grids, point-cloud scatter plots, 2-D density maps.

Every figure can carry a title (the callback gives experiment, epoch, metric and temperature);
2-D maps have axes and colour bars; image grids are drawn pixel-exact at an integer scale so
they are readable (at least :data:`MIN_GRID_WIDTH_PX` wide); point clouds have equal axes.
:func:`read_png` decodes a written figure for loggers that take arrays (TensorBoard).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

#: image grids are scaled up (by an integer factor, nearest neighbour) to at least this width
MIN_GRID_WIDTH_PX = 768
#: resolution of the matplotlib figures
DPI = 120


def _figure():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path, dpi: int = DPI) -> Path:
    plt = _figure()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return path


def image_grid(
    samples: torch.Tensor,
    num_bins: int,
    path: Path,
    nrow: int | None = None,
    title: str | None = None,
    min_width_px: int = MIN_GRID_WIDTH_PX,
) -> Path:
    """Save discrete image samples ``[N, C, H, W]`` in ``[0, num_bins)`` as one PNG grid of
    ``nrow`` images per row (default: a square grid; conditional figures: one row per class),
    scaled up by an integer factor to at least ``min_width_px`` pixels, with ``title`` above."""
    from torchvision.utils import make_grid

    images = samples.detach().float().cpu().clamp(0, num_bins - 1) / (num_bins - 1)
    nrow = nrow if nrow is not None else max(1, int(math.sqrt(images.shape[0])))
    grid = make_grid(images, nrow=nrow, padding=2, pad_value=1.0)  # [3, H, W], grey -> RGB
    pixels = (grid.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    scale = max(1, math.ceil(min_width_px / pixels.shape[1]))
    pixels = pixels.repeat(scale, axis=0).repeat(scale, axis=1)
    height, width = pixels.shape[:2]
    title_px = 40 if title else 0
    plt = _figure()
    fig = plt.figure(figsize=(width / DPI, (height + title_px) / DPI), dpi=DPI)
    ax = fig.add_axes((0, 0, 1, height / (height + title_px)))
    ax.imshow(pixels, interpolation="nearest")
    ax.set_axis_off()
    if title:
        fig.suptitle(title, y=1 - 0.25 * title_px / (height + title_px), fontsize=11)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI)  # no bbox_inches: the pixel size is exact
    plt.close(fig)
    return path


def point_clouds(
    samples: torch.Tensor, path: Path, size: float = 28.0, title: str | None = None
) -> Path:
    """Scatter plots of point sets ``[N, points, 2]`` on ``[0, size]²`` with equal axes
    (coordinates as stored: y points up), up to 16 sets."""
    plt = _figure()
    n = min(16, samples.shape[0])
    cols = int(math.ceil(math.sqrt(n)))
    rows = int(math.ceil(n / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(2.2 * cols, 2.2 * rows), squeeze=False)
    for i, ax in enumerate(axes.flat):
        if i >= n:
            ax.set_axis_off()
            continue
        pts = samples[i].detach().cpu()
        ax.scatter(pts[:, 0], pts[:, 1], s=4)
        ax.set_xlim(0, size)
        ax.set_ylim(0, size)
        ax.set_aspect("equal")
        ax.set_xticks([])
        ax.set_yticks([])
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return _save(fig, path)


def _grid_points(bounds: float, resolution: int, device: torch.device):
    axis = torch.linspace(-bounds, bounds, resolution, device=device)
    xx, yy = torch.meshgrid(axis, axis, indexing="xy")
    return xx, torch.stack([xx.reshape(-1), yy.reshape(-1)], 1)


def _map_panel(fig, ax, values, bounds: float, title: str, label: str) -> None:
    """A 2-D map on ``[-bounds, bounds]²`` with axes, equal aspect and a labelled colour bar."""
    image = ax.imshow(
        values, extent=(-bounds, bounds, -bounds, bounds), origin="lower", cmap="viridis"
    )
    ax.set_title(title)
    ax.set_xlabel("$x_1$")
    ax.set_ylabel("$x_2$")
    ax.set_aspect("equal")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label=label)


def _histogram(samples: torch.Tensor, bounds: float, bins: int) -> np.ndarray:
    """Counts of 2-D ``samples`` on a ``bins``² grid over ``[-bounds, bounds]²``, ``[y, x]``."""
    s = samples.detach().cpu().double().numpy()
    counts, _, _ = np.histogram2d(
        s[:, 0], s[:, 1], bins=bins, range=[[-bounds, bounds], [-bounds, bounds]]
    )
    return counts.T


@torch.no_grad()
def density_2d(
    model: torch.nn.Module,
    path: Path,
    bounds: float = 4.0,
    resolution: int = 200,
    samples: torch.Tensor | None = None,
    title: str | None = None,
) -> Path:
    """The model density ``exp(log p(x))`` of a 2-D model on ``[-bounds, bounds]²`` (and a
    histogram of ``samples`` beside it), with axes, colour bars and ``title`` above."""
    plt = _figure()
    device = next(model.parameters()).device
    xx, grid = _grid_points(bounds, resolution, device)
    density = torch.cat([model.log_prob(c).exp() for c in grid.split(10_000)]).reshape(xx.shape)
    ncols = 2 if samples is not None else 1
    fig, axes = plt.subplots(1, ncols, figsize=(5.2 * ncols, 4.4), squeeze=False)
    _map_panel(fig, axes[0, 0], density.cpu().numpy(), bounds, "model density", "p(x)")
    if samples is not None:
        counts = _histogram(samples, bounds, bins=100)
        _map_panel(fig, axes[0, 1], counts, bounds, f"{len(samples):,} samples", "count")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return _save(fig, path)


@torch.no_grad()
def conditional_density_2d(
    model: torch.nn.Module,
    path: Path,
    contexts: torch.Tensor,
    bounds: float = 4.0,
    resolution: int = 150,
    num_samples: int = 2000,
    temperature: float = 1.0,
    title: str | None = None,
) -> Path:
    """Per context (one column each): the map of ``exp(log p(x | c))`` of a conditional
    2-D model on ``[-bounds, bounds]²`` above a histogram of samples drawn given ``c``; axes,
    colour bars and ``title`` as in :func:`density_2d`."""
    plt = _figure()
    device = next(model.parameters()).device
    xx, grid = _grid_points(bounds, resolution, device)
    n = contexts.shape[0]
    fig, axes = plt.subplots(2, n, figsize=(4.2 * n, 7.6), squeeze=False)
    for j, c in enumerate(contexts.to(device)):
        dens = torch.cat(
            [model.log_prob(g, c.expand(g.shape[0], -1)).exp() for g in grid.split(10_000)]
        ).reshape(xx.shape)
        _map_panel(fig, axes[0, j], dens.cpu().numpy(), bounds, f"context {j}", "p(x | c)")
        s = model.sample(num_samples, temperature=temperature, context=c.expand(num_samples, -1))
        counts = _histogram(s, bounds, bins=80)
        _map_panel(fig, axes[1, j], counts, bounds, f"samples | context {j}", "count")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return _save(fig, path)


def read_png(path: str | Path) -> np.ndarray:
    """A PNG as ``uint8`` RGB ``[H, W, 3]``, decoded by matplotlib (no compiled image ops)."""
    import matplotlib.image

    image = matplotlib.image.imread(str(path))  # float in [0, 1] for PNG, [H, W, 3 or 4]
    if image.dtype != np.uint8:
        image = (np.clip(image, 0.0, 1.0) * 255).round().astype(np.uint8)
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    return np.ascontiguousarray(image[:, :, :3])
