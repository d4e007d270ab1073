"""Sample figures: readable image grids, 2-D maps with axes and colour bars, equal-axis point
clouds, titles from the callback, and figures reaching TensorBoard (decoded without torchvision's
compiled image ops; a failure is a warning, not silence)."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from survae.training import callbacks, plots


@pytest.fixture
def captured(monkeypatch):
    """The matplotlib figures plots._save writes (kept open for inspection)."""
    figures = []

    def save(fig, path, dpi=plots.DPI):
        figures.append(fig)
        fig.savefig(path, dpi=dpi)
        return path

    monkeypatch.setattr(plots, "_save", save)
    yield figures
    plt = plots._figure()
    for fig in figures:
        plt.close(fig)


class StandardNormal2d(torch.nn.Module):
    """A 2-D density with a known value: the standard normal."""

    def __init__(self):
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(()))  # gives the module a device

    def log_prob(self, x: torch.Tensor, context=None) -> torch.Tensor:
        return -0.5 * (x**2).sum(1) - math.log(2 * math.pi) + 0 * self.anchor

    def sample(self, n: int, temperature: float = 1.0, context=None) -> torch.Tensor:
        return temperature * torch.randn(n, 2)


def test_image_grid_is_pixel_exact_and_readable(tmp_path):
    num_bins = 17
    # 64 grey 28x28 images, image i filled with level i % 17
    samples = torch.arange(64).remainder(num_bins).view(64, 1, 1, 1).expand(64, 1, 28, 28)
    path = plots.image_grid(samples, num_bins, tmp_path / "grid.png", title="x — T = 0.7")
    image = plots.read_png(path)
    grid_width = 8 * (28 + 2) + 2  # torchvision's grid: 2-pixel padding
    scale = math.ceil(plots.MIN_GRID_WIDTH_PX / grid_width)
    assert image.shape[1] == grid_width * scale >= plots.MIN_GRID_WIDTH_PX
    title_px = image.shape[0] - grid_width * scale
    assert title_px > 0, "the title sits above the grid"
    for i in (0, 5, 16, 63):
        row, col = divmod(i, 8)
        y = title_px + (2 + row * 30 + 14) * scale  # centre of image i
        x = (2 + col * 30 + 14) * scale
        expected = round((i % num_bins) * 255 / (num_bins - 1))
        assert np.abs(image[y, x].astype(int) - expected).max() <= 1, (i, image[y, x])


def test_density_map_has_axes_colour_bars_title_and_the_density(tmp_path, captured):
    model = StandardNormal2d()
    path = plots.density_2d(
        model, tmp_path / "d.png", samples=model.sample(500), title="four_circles — epoch 3"
    )
    assert path.is_file()
    (fig,) = captured
    panels = [ax for ax in fig.axes if ax.images and ax.get_label() != "<colorbar>"]
    colour_bars = [ax for ax in fig.axes if ax.get_label() == "<colorbar>"]
    assert len(panels) == 2 and len(colour_bars) == 2
    assert fig._suptitle.get_text() == "four_circles — epoch 3"
    for ax in panels:
        assert ax.get_xlabel() == "$x_1$" and ax.get_ylabel() == "$x_2$"
        assert ax.axison and len(ax.get_xticks()) > 0
    density = panels[0].images[0].get_array()
    assert float(density.max()) == pytest.approx(1 / (2 * math.pi), rel=1e-2)
    counts = panels[1].images[0].get_array()
    assert float(counts.sum()) == pytest.approx(500, abs=5)  # samples beyond ±4 are dropped


def test_point_clouds_have_equal_axes_a_scale_and_every_point_inside(tmp_path, captured):
    samples = torch.rand(5, 50, 2) * 28
    samples[0, 0] = torch.tensor([-3.0, 30.5])  # a sample outside the data's square
    plots.point_clouds(samples, tmp_path / "p.png", title="spatial_mnist — epoch 0")
    (fig,) = captured
    used = [ax for ax in fig.axes if ax.collections]
    assert len(used) == 5
    for ax in used:
        assert ax.get_aspect() == 1.0
        (x0, x1), (y0, y1) = ax.get_xlim(), ax.get_ylim()
        assert x0 < -3.0 and y1 > 30.5 and x1 > 28.0 and y0 < 0.0  # nothing cut off
        assert list(ax.get_xticks()) == list(ax.get_yticks()) == [0.0, 14.0, 28.0]  # the scale
        assert not ax.collections[0].get_clip_on()
        assert ax.patches and ax.patches[0].get_width() == 28.0  # the data square drawn
    bottom_left = used[3] if len(used) > 3 else used[0]  # 3x2 layout: panel 3 is bottom left
    assert [t.get_text() for t in bottom_left.get_xticklabels()] == ["0", "14", "28"]
    assert fig._suptitle.get_text() == "spatial_mnist — epoch 0"


def test_class_conditional_grid_names_each_row_and_stays_pixel_exact(tmp_path):
    num_bins = 17
    labels = ["T-shirt/top", "Trouser", "Pullover"]
    # three rows (classes) of four 28x28 images, row r filled with level 4 r
    samples = torch.arange(3).mul(4).repeat_interleave(4).view(12, 1, 1, 1).expand(12, 1, 28, 28)
    path = plots.image_grid(samples, num_bins, tmp_path / "g.png", nrow=4, row_labels=labels)
    image = plots.read_png(path)
    grid_width = 4 * (28 + 2) + 2
    scale = math.ceil(plots.MIN_GRID_WIDTH_PX / grid_width)
    label_px = image.shape[1] - grid_width * scale
    assert label_px == 16 + plots.LABEL_CHAR_PX * len("T-shirt/top")
    for row in range(3):
        y = (2 + row * 30 + 14) * scale
        x = label_px + (2 + 14) * scale
        expected = round(4 * row * 255 / (num_bins - 1))
        assert np.abs(image[y, x].astype(int) - expected).max() <= 1, row
        # the label is drawn left of its row: dark pixels in the margin at the row's height
        margin = image[y - 4 * scale : y + 4 * scale, : label_px - 4]
        assert margin.min() < 128, f"no label beside row {row}"


def test_conditional_2d_panels_are_titled_by_their_angle(tmp_path, captured):
    from survae.data.conditional_toy import RotatedMoonsDataModule

    dm = RotatedMoonsDataModule(conditional=True)
    labels = dm.sample_context_labels()
    assert labels == ["θ = 0°", "θ = 90°", "θ = 180°", "θ = 270°"]
    plots.conditional_density_2d(
        StandardNormal2d(), tmp_path / "c.png", dm.sample_contexts(), resolution=20,
        num_samples=50, labels=labels,
    )  # fmt: skip
    (fig,) = captured
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert titles[:4] == labels and titles[4:8] == [f"samples | {t}" for t in labels]


def test_tabular_samples_against_the_data(tmp_path, captured):
    data, samples = torch.randn(300, 6), torch.randn(200, 6) * 1.5
    plots.tabular_samples(samples, data, tmp_path / "t.png", title="maf_power — epoch 2")
    (fig,) = captured
    histograms = [ax for ax in fig.axes if ax.patches]
    scatters = [ax for ax in fig.axes if ax.collections]
    assert [ax.get_title() for ax in histograms] == [f"x{k}" for k in range(6)]
    assert [(ax.get_xlabel(), ax.get_ylabel()) for ax in scatters] == [
        ("x0", "x1"), ("x2", "x3"), ("x4", "x5")
    ]  # fmt: skip
    legend = [t.get_text() for t in histograms[0].get_legend().get_texts()]
    assert legend == ["data", "samples"]
    assert fig._suptitle.get_text() == (
        "maf_power — epoch 2\n200 samples vs 300 data points (every dimension)"
    )
    plots.tabular_samples(torch.randn(50, 63), torch.randn(50, 63), tmp_path / "b.png")
    assert "first 8 of 63 dimensions" in captured[1]._suptitle.get_text()


def test_read_png_decodes_rgb_rgba_and_grey(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (5, 7, 3), dtype=np.uint8)
    for mode, array in (("RGB", rgb), ("RGBA", np.dstack([rgb, np.full((5, 7), 9, np.uint8)]))):
        Image.fromarray(array, mode).save(tmp_path / f"{mode}.png")
        np.testing.assert_array_equal(plots.read_png(tmp_path / f"{mode}.png"), rgb)
    grey = rgb[:, :, 0]
    Image.fromarray(grey, "L").save(tmp_path / "L.png")
    np.testing.assert_array_equal(plots.read_png(tmp_path / "L.png"), np.dstack([grey] * 3))


def _fake_run(metrics: dict, epoch: int = 3, loggers=()):
    trainer = SimpleNamespace(
        current_epoch=epoch, callback_metrics=metrics, loggers=list(loggers), global_step=7
    )
    module = SimpleNamespace(
        kind="toy",
        metric=SimpleNamespace(name="nll"),
        hparams=SimpleNamespace(data_info={"name": "four_circles", "kind": "toy"}),
        eval_model=StandardNormal2d(),
    )
    module.sample = module.eval_model.sample
    return trainer, module


def test_callback_titles_name_experiment_epoch_metric_and_temperature(tmp_path, captured):
    trainer, module = _fake_run({"val/nll": torch.tensor(1.23456)})
    cb = callbacks.SampleFigures(str(tmp_path), title="abs_flow_four_circles", temperature=0.8)
    title = cb.figure_title(trainer, module)
    assert title == "abs_flow_four_circles — epoch 3 — val/nll = 1.235"
    assert cb.figure_title(trainer, module, "test") == "abs_flow_four_circles — tested model"
    cb.make_figure(module, tmp_path / "f.png", title)
    assert captured[0]._suptitle.get_text() == title + " — T = 0.8"
    default = callbacks.SampleFigures(str(tmp_path))
    assert default.figure_title(*_fake_run({})) == "four_circles — epoch 3"


def test_figures_reach_tensorboard_as_images(tmp_path):
    from pytorch_lightning.loggers import TensorBoardLogger
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    logger = TensorBoardLogger(save_dir=str(tmp_path), name="tb", version="")
    path = plots.image_grid(torch.zeros(4, 3, 8, 8), 256, tmp_path / "g.png", title="t")
    trainer = SimpleNamespace(loggers=[logger])
    callbacks.log_figure(trainer, path, step=5)
    logger.experiment.flush()
    events = EventAccumulator(str(tmp_path / "tb"))
    events.Reload()
    (image,) = events.Images("samples")
    height, width = plots.read_png(path).shape[:2]
    assert (image.step, image.width, image.height) == (5, width, height)


def test_a_failing_logger_is_reported_not_swallowed(tmp_path):
    def broken(*args, **kwargs):
        raise RuntimeError("decoder missing")

    logger = SimpleNamespace(experiment=SimpleNamespace(add_image=broken))
    path = plots.image_grid(torch.zeros(1, 1, 4, 4), 2, tmp_path / "g.png")
    with pytest.warns(UserWarning, match=r"could not log .*g\.png.*RuntimeError: decoder missing"):
        callbacks.log_figure(SimpleNamespace(loggers=[logger]), path, step=0)


def test_a_tabular_run_writes_its_figure(tmp_path, capsys):
    """The training pipeline (as ``run.py experiment=maf_power`` runs it) on stand-in files:
    every epoch and the tested model get a figure of samples against validation data."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    from conftest import compose_config

    from survae.data.fake import write_fake_dataset
    from survae.training import train

    write_fake_dataset("power", tmp_path / "data", num=200)
    cfg = compose_config(
        ["experiment=maf_power", f"data.root={tmp_path}/data", "trainer.max_steps=2",
         "logger=none", "callbacks.rich_progress_bar=false", "trainer.enable_progress_bar=false"],
        tmp_path / "run",
    )  # fmt: skip
    train(cfg)
    figures = sorted(p.name for p in (tmp_path / "run" / "samples").glob("*.png"))
    assert "samples_test.png" in figures and "samples_epoch0000.png" in figures
    assert "no figure" not in capsys.readouterr().out
    height, width = plots.read_png(tmp_path / "run" / "samples" / "samples_test.png").shape[:2]
    assert width > 1000 and height > 400


def test_a_tabular_figure_without_data_says_why_once(tmp_path, capsys):
    module = SimpleNamespace(kind="tabular", hparams=SimpleNamespace(data_info={}))
    cb = callbacks.SampleFigures(str(tmp_path))
    assert cb.make_figure(module, tmp_path / "t.png") is None
    assert cb.make_figure(module, tmp_path / "t.png") is None
    out = capsys.readouterr().out
    assert out.count("no figure for this tabular run") == 1


def test_conditional_runs_record_what_each_context_means():
    """The labels reach the figures through data_info (stored in checkpoints): class names of
    labelled sets, the angles of rotated moons; older records get ``class k``/``context j``."""
    from survae import registry
    from survae.training.pipeline import data_info

    fashion = registry.get("dataset", "fashion_mnist")(root="none", conditional=True)
    assert data_info(fashion)["sample_context_labels"][:2] == ["T-shirt/top", "Trouser"]
    moons = registry.get("dataset", "rotated_moons")(conditional=True)
    assert data_info(moons)["sample_context_labels"][1] == "θ = 90°"
    classes = registry.get("dataset", "gaussian_classes")(conditional=True)
    assert data_info(classes)["sample_context_labels"][0] == "class 0 (modes 0, 1)"
    assert "sample_context_labels" not in data_info(registry.get("dataset", "corners")())
    assert callbacks._context_labels(torch.eye(3)) == ["class 0", "class 1", "class 2"]
    assert callbacks._context_labels(torch.tensor([[1.0, 0.5]])) == ["context 0"]
