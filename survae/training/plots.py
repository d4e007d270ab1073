"""Figures of samples: image grids, point-cloud scatter plots, 2-D density heat maps."""

from __future__ import annotations

import math
from pathlib import Path

import torch


def image_grid(samples: torch.Tensor, num_bins: int, path: Path, nrow: int | None = None) -> Path:
    """Save discrete image samples ``[N, C, H, W]`` in ``[0, num_bins)`` as one PNG grid of
    ``nrow`` images per row (default: a square grid; conditional figures: one row per class)."""
    from torchvision.utils import save_image

    images = samples.float().clamp(0, num_bins - 1) / (num_bins - 1)
    nrow = nrow if nrow is not None else max(1, int(math.sqrt(images.shape[0])))
    save_image(images, str(path), nrow=nrow)
    return path


def _figure():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def point_clouds(samples: torch.Tensor, path: Path, size: float = 28.0) -> Path:
    """Scatter plots of point sets ``[N, points, 2]`` (coordinates as stored: y points up)."""
    plt = _figure()
    n = min(16, samples.shape[0])
    cols = int(math.ceil(math.sqrt(n)))
    rows = int(math.ceil(n / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(2 * cols, 2 * rows), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.set_axis_off()
        if i < n:
            pts = samples[i].cpu()
            ax.scatter(pts[:, 0], pts[:, 1], s=4)
            ax.set_xlim(0, size)
            ax.set_ylim(0, size)
            ax.set_aspect("equal")
    fig.savefig(path, dpi=80, bbox_inches="tight")
    plt.close(fig)
    return path


@torch.no_grad()
def density_2d(
    model: torch.nn.Module,
    path: Path,
    bounds: float = 4.0,
    resolution: int = 200,
    samples: torch.Tensor | None = None,
) -> Path:
    """Heat map of ``exp(log p)`` of a 2-D model on ``[-bounds, bounds]²`` (plus samples)."""
    plt = _figure()
    device = next(model.parameters()).device
    axis = torch.linspace(-bounds, bounds, resolution, device=device)
    xx, yy = torch.meshgrid(axis, axis, indexing="xy")
    grid = torch.stack([xx.reshape(-1), yy.reshape(-1)], 1)
    density = torch.cat([model.log_prob(c).exp() for c in grid.split(10_000)]).reshape(xx.shape)
    ncols = 2 if samples is not None else 1
    fig, axes = plt.subplots(1, ncols, figsize=(4 * ncols, 4), squeeze=False)
    axes[0, 0].imshow(density.cpu(), extent=(-bounds, bounds, -bounds, bounds), origin="lower")
    axes[0, 0].set_title("density")
    if samples is not None:
        s = samples.cpu()
        axes[0, 1].hist2d(
            s[:, 0].numpy(), s[:, 1].numpy(), bins=100, range=[[-bounds, bounds], [-bounds, bounds]]
        )
        axes[0, 1].set_title("samples")
    for ax in axes.flat:
        ax.set_axis_off()
    fig.savefig(path, dpi=80, bbox_inches="tight")
    plt.close(fig)
    return path


@torch.no_grad()
def conditional_density_2d(
    model: torch.nn.Module,
    path: Path,
    contexts: torch.Tensor,
    bounds: float = 4.0,
    resolution: int = 150,
    num_samples: int = 2000,
    temperature: float = 1.0,
) -> Path:
    """Per context (one column each): the heat map of ``exp(log p(x | c))`` of a conditional
    2-D model on ``[-bounds, bounds]²`` above a histogram of samples drawn given ``c``."""
    plt = _figure()
    device = next(model.parameters()).device
    axis = torch.linspace(-bounds, bounds, resolution, device=device)
    xx, yy = torch.meshgrid(axis, axis, indexing="xy")
    grid = torch.stack([xx.reshape(-1), yy.reshape(-1)], 1)
    n = contexts.shape[0]
    fig, axes = plt.subplots(2, n, figsize=(3 * n, 6), squeeze=False)
    for j, c in enumerate(contexts.to(device)):
        dens = torch.cat(
            [model.log_prob(g, c.expand(g.shape[0], -1)).exp() for g in grid.split(10_000)]
        ).reshape(xx.shape)
        axes[0, j].imshow(dens.cpu(), extent=(-bounds, bounds, -bounds, bounds), origin="lower")
        axes[0, j].set_title(f"context {j}")
        s = model.sample(num_samples, temperature=temperature, context=c.expand(num_samples, -1))
        s = s.cpu()
        rng = [[-bounds, bounds], [-bounds, bounds]]
        axes[1, j].hist2d(s[:, 0].numpy(), s[:, 1].numpy(), bins=80, range=rng)
    for ax in axes.flat:
        ax.set_axis_off()
    fig.savefig(path, dpi=80, bbox_inches="tight")
    plt.close(fig)
    return path
