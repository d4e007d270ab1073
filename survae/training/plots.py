"""Figures of samples: image grids, point-cloud scatter plots, 2-D density maps, and
marginal and pairwise histograms of tabular samples against the data.

Every figure can carry a title (the callback gives experiment, epoch, metric and temperature);
2-D maps have axes and colour bars; image grids are drawn pixel-exact at an integer scale so
they are readable (at least :data:`MIN_GRID_WIDTH_PX` wide), class-conditional grids with the
class of each row beside it; conditional 2-D panels are titled by their context (a class, an
angle); point clouds have equal axes with a scale, and limits that hold every point.
:func:`read_png` decodes a written figure for loggers that take arrays (TensorBoard).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

#: image grids are scaled up (by an integer factor, nearest neighbour) to at least this width
MIN_GRID_WIDTH_PX = 768
#: resolution of the matplotlib figures
DPI = 120
#: width of one character of a row label of an image grid, in pixels (11 pt at DPI)
LABEL_CHAR_PX = 8


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
    row_labels: Sequence[str] | None = None,
) -> Path:
    """Save discrete image samples ``[N, C, H, W]`` in ``[0, num_bins)`` as one PNG grid of
    ``nrow`` images per row (default: a square grid; conditional figures: one row per class),
    scaled up by an integer factor to at least ``min_width_px`` pixels, with ``title`` above
    and ``row_labels`` (one per row: the class) left of the rows; the grid's pixels stay
    exact."""
    from torchvision.utils import make_grid

    images = samples.detach().float().cpu().clamp(0, num_bins - 1) / (num_bins - 1)
    nrow = nrow if nrow is not None else max(1, int(math.sqrt(images.shape[0])))
    grid = make_grid(images, nrow=nrow, padding=2, pad_value=1.0)  # [3, H, W], grey -> RGB
    pixels = (grid.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    scale = max(1, math.ceil(min_width_px / pixels.shape[1]))
    pixels = pixels.repeat(scale, axis=0).repeat(scale, axis=1)
    height, width = pixels.shape[:2]
    title_px = 40 if title else 0
    labels = [str(t) for t in row_labels] if row_labels else []
    label_px = 16 + LABEL_CHAR_PX * max(len(t) for t in labels) if labels else 0
    total_w, total_h = width + label_px, height + title_px
    plt = _figure()
    fig = plt.figure(figsize=(total_w / DPI, total_h / DPI), dpi=DPI)
    ax = fig.add_axes((label_px / total_w, 0, width / total_w, height / total_h))
    ax.imshow(pixels, interpolation="nearest")
    ax.set_axis_off()
    rows = math.ceil(images.shape[0] / nrow)
    for i, label in enumerate(labels[:rows]):
        centre = (2 + i * (images.shape[2] + 2) + images.shape[2] / 2) * scale  # from the top
        fig.text((label_px - 8) / total_w, (height - centre) / total_h, label, ha="right",
                 va="center", fontsize=11)  # fmt: skip
    if title:
        fig.suptitle(title, y=1 - 0.25 * title_px / (height + title_px), fontsize=11)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI)  # no bbox_inches: the pixel size is exact
    plt.close(fig)
    return path


def point_clouds(
    samples: torch.Tensor,
    path: Path,
    size: float = 28.0,
    title: str | None = None,
    labels: Sequence[str] | None = None,
) -> Path:
    """Scatter plots of point sets ``[N, points, 2]`` with equal axes (coordinates as stored:
    y points up), up to 16 sets: the data's square ``[0, size]²`` drawn in grey, ticks at 0,
    size/2 and size on the outer panels as the scale, limits that hold every point (samples
    outside the square are shown, not cut off); ``labels`` title the panels."""
    from matplotlib.patches import Rectangle

    plt = _figure()
    n = min(16, samples.shape[0])
    cols = int(math.ceil(math.sqrt(n)))
    rows = int(math.ceil(n / cols))
    pts_all = samples[:n].detach().cpu().float()
    finite = pts_all[torch.isfinite(pts_all)]
    low = min(0.0, float(finite.min())) if finite.numel() else 0.0
    high = max(size, float(finite.max())) if finite.numel() else size
    pad = 0.04 * (high - low)
    fig, axes = plt.subplots(
        rows, cols, figsize=(2.3 * cols + 0.4, 2.3 * rows + 0.3), squeeze=False,
        sharex=True, sharey=True,
    )  # fmt: skip
    for i, ax in enumerate(axes.flat):
        if i >= n:
            ax.set_axis_off()
            continue
        pts = pts_all[i]
        ax.add_patch(Rectangle((0, 0), size, size, fill=False, edgecolor="0.75", lw=0.8))
        ax.scatter(pts[:, 0], pts[:, 1], s=4, clip_on=False)
        ax.set_xlim(low - pad, high + pad)
        ax.set_ylim(low - pad, high + pad)
        ax.set_aspect("equal")
        ticks = [0.0, size / 2, size]
        ax.set_xticks(ticks, [f"{t:g}" for t in ticks], fontsize=7)
        ax.set_yticks(ticks, [f"{t:g}" for t in ticks], fontsize=7)
        ax.tick_params(length=2, pad=1)
        if labels is not None and i < len(labels):
            ax.set_title(str(labels[i]), fontsize=8)
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
    labels: Sequence[str] | None = None,
) -> Path:
    """Per context (one column each): the map of ``exp(log p(x | c))`` of a conditional
    2-D model on ``[-bounds, bounds]²`` above a histogram of samples drawn given ``c``; axes,
    colour bars and ``title`` as in :func:`density_2d`; the columns are titled by ``labels``
    (what each context means: a class, an angle), else ``context j``."""
    plt = _figure()
    device = next(model.parameters()).device
    xx, grid = _grid_points(bounds, resolution, device)
    n = contexts.shape[0]
    fig, axes = plt.subplots(2, n, figsize=(4.2 * n, 7.6), squeeze=False)
    for j, c in enumerate(contexts.to(device)):
        label = str(labels[j]) if labels is not None and j < len(labels) else f"context {j}"
        dens = torch.cat(
            [model.log_prob(g, c.expand(g.shape[0], -1)).exp() for g in grid.split(10_000)]
        ).reshape(xx.shape)
        _map_panel(fig, axes[0, j], dens.cpu().numpy(), bounds, label, "p(x | c)")
        s = model.sample(num_samples, temperature=temperature, context=c.expand(num_samples, -1))
        counts = _histogram(s, bounds, bins=80)
        _map_panel(fig, axes[1, j], counts, bounds, f"samples | {label}", "count")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return _save(fig, path)


def tabular_samples(
    samples: torch.Tensor,
    data: torch.Tensor,
    path: Path,
    title: str | None = None,
    max_dims: int = 8,
    max_pairs: int = 4,
) -> Path:
    """Samples ``[N, D]`` of a tabular model against data ``[M, D]``: the marginal histogram
    of each of the first ``max_dims`` dimensions (data filled, samples outlined, on the data's
    1st–99th percentile range), and below them scatter plots of the first ``max_pairs``
    pairs of dimensions (``x0``–``x1``, ``x2``–``x3``, ...), data in grey, samples in colour."""
    plt = _figure()
    s = samples.detach().cpu().double().reshape(samples.shape[0], -1).numpy()
    d = data.detach().cpu().double().reshape(data.shape[0], -1).numpy()
    dims = min(max_dims, d.shape[1])
    pairs = [(k, k + 1) for k in range(0, min(2 * max_pairs, d.shape[1]) - 1, 2)]
    cols = max(dims, len(pairs), 1)
    nrows = 2 if pairs else 1
    fig, axes = plt.subplots(nrows, cols, figsize=(2.1 * cols, 2.2 * nrows), squeeze=False)
    low, high = np.nanpercentile(d, 1, axis=0), np.nanpercentile(d, 99, axis=0)
    high = np.where(high > low, high, low + 1.0)  # a constant column: a unit range
    pad = 0.1 * (high - low)
    low, high = low - pad, high + pad
    for k in range(cols):
        ax = axes[0, k]
        if k >= dims:
            ax.set_axis_off()
            continue
        bins = np.linspace(low[k], high[k], 41)
        ax.hist(d[:, k], bins=bins, density=True, color="0.75", label="data")
        ax.hist(s[:, k], bins=bins, density=True, histtype="step", lw=1.2, label="samples")
        ax.set_title(f"x{k}", fontsize=9)
        ax.tick_params(labelsize=7)
        ax.set_yticks([])
    axes[0, 0].legend(fontsize=7)
    for j in range(cols if pairs else 0):
        ax = axes[1, j]
        if j >= len(pairs):
            ax.set_axis_off()
            continue
        a, b = pairs[j]
        ax.scatter(d[:, a], d[:, b], s=2, color="0.6", alpha=0.5, label="data")
        ax.scatter(s[:, a], s[:, b], s=2, alpha=0.5, label="samples")
        ax.set_xlim(low[a], high[a])
        ax.set_ylim(low[b], high[b])
        ax.set_xlabel(f"x{a}", fontsize=8)
        ax.set_ylabel(f"x{b}", fontsize=8)
        ax.tick_params(labelsize=7)
    shown = f"first {dims} of {d.shape[1]} dimensions" if dims < d.shape[1] else "every dimension"
    caption = f"{len(s):,} samples vs {len(d):,} data points ({shown})"
    fig.suptitle(f"{title}\n{caption}" if title else caption, fontsize=10)
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
