"""Callbacks: periodic samples, and the final report of a run."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytorch_lightning as pl
from pytorch_lightning.utilities import rank_zero_only

from survae.training import plots

#: samples and validation rows compared in a tabular figure
TABULAR_POINTS = 1000


class SampleFigures(pl.Callback):
    """Every ``every_n_epochs`` epochs, draws samples and saves/logs a figure suited to the data:
    an image grid, point-cloud scatter plots, a 2-D density map with samples, or for tabular
    data the marginal and pairwise histograms of samples against validation data; after
    testing, one more (``samples_test.png``) with the test metric. Conditional figures label
    each row or panel with its context (the class, the angle: ``data_info``'s
    ``sample_context_labels``).

    Titles name the experiment (``title``, default: the data set), the epoch, the latest
    validation (or test) metric and, for samples, the temperature. Figures go to every logger
    that takes images: W&B (``log_image``) and TensorBoard (``add_image``, the PNG decoded by
    matplotlib); a logger that fails to take one gets a warning, the run goes on.
    """

    def __init__(
        self,
        folder: str,
        every_n_epochs: int = 1,
        num_samples: int = 64,
        temperature: float = 1.0,
        title: str | None = None,
        after_test: bool = True,
    ):
        self.folder = Path(folder)
        self.every_n_epochs = every_n_epochs
        self.num_samples = num_samples
        self.temperature = temperature
        self.title = title
        self.after_test = after_test
        self._data: tuple | None = None  # validation rows of tabular data, read once
        self._said_why_none = False

    @rank_zero_only
    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module) -> None:
        if self.every_n_epochs <= 0 or (trainer.current_epoch + 1) % self.every_n_epochs:
            return
        path = self.folder / f"samples_epoch{trainer.current_epoch:04d}.png"
        self._draw_and_log(trainer, pl_module, path, "val")

    @rank_zero_only
    def on_test_end(self, trainer: pl.Trainer, pl_module) -> None:
        if self.every_n_epochs <= 0 or not self.after_test:
            return
        self._draw_and_log(trainer, pl_module, self.folder / "samples_test.png", "test")

    def _draw_and_log(self, trainer: pl.Trainer, pl_module, path: Path, split: str) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        title = self.figure_title(trainer, pl_module, split)
        data = self.reference_data(trainer) if pl_module.kind == "tabular" else None
        path = self.make_figure(pl_module, path, title, data=data)
        if path is not None:
            log_figure(trainer, path, trainer.global_step)

    def figure_title(self, trainer: pl.Trainer, pl_module, split: str = "val") -> str:
        """``<experiment> — epoch N — val/<metric> = v`` during training, ``<experiment> —
        tested model — test/<metric> = v`` after testing (the metric when it was logged)."""
        name = self.title or str(pl_module.hparams.data_info.get("name", ""))
        parts = [name] if name else []
        parts.append("tested model" if split == "test" else f"epoch {trainer.current_epoch}")
        metric = pl_module.metric.name
        value = trainer.callback_metrics.get(f"{split}/{metric}")
        if value is not None:
            parts.append(f"{split}/{metric} = {float(value):.4g}")
        return " — ".join(parts)

    def reference_data(self, trainer: pl.Trainer) -> tuple | None:
        """Up to :data:`TABULAR_POINTS` validation rows ``(x, context or None)`` of the
        trainer's data module (read once), or None when it has no validation set at hand."""
        if self._data is None:
            val_set = getattr(getattr(trainer, "datamodule", None), "val_set", None)
            take = getattr(val_set, "__getitems__", None)
            if val_set is None or take is None or len(val_set) == 0:
                return None
            batch = take(list(range(min(TABULAR_POINTS, len(val_set)))))
            self._data = tuple(batch) if isinstance(batch, tuple) else (batch, None)
        return self._data

    def make_figure(
        self, pl_module, path: Path, title: str | None = None, data: tuple | None = None
    ) -> Path | None:
        """Draw this data kind's figure to ``path``; tabular data is compared with ``data``
        (``(x, context)`` rows; without it no figure, and the log says why, once)."""
        kind = pl_module.kind
        if kind == "tabular":
            return self.make_tabular_figure(pl_module, path, title, data)
        info = pl_module.hparams.data_info
        if self.temperature != 1.0 or kind == "image":
            title = f"{title} — T = {self.temperature:g}" if title else f"T = {self.temperature:g}"
        if info.get("sample_contexts"):
            return self.make_conditional_figure(pl_module, path, info, title)
        if kind == "image":
            samples = pl_module.sample(self.num_samples, temperature=self.temperature)
            return plots.image_grid(samples, int(info["num_bins"]), path, title=title)
        if kind == "points":
            samples = pl_module.sample(self.num_samples, temperature=self.temperature)
            return plots.point_clouds(samples, path, title=title)
        # 2-D data: a density map plus a histogram of enough samples to show its shape
        samples = pl_module.sample(5000, temperature=self.temperature)
        model = pl_module.eval_model
        was_training = model.training
        model.eval()
        try:
            return plots.density_2d(model, path, samples=samples, title=title)
        finally:
            model.train(was_training)

    def make_tabular_figure(
        self, pl_module, path: Path, title: str | None, data: tuple | None
    ) -> Path | None:
        """Marginal and pairwise histograms of samples (given the rows' contexts when
        conditional) against the validation rows ``data``."""
        if data is None:
            if not self._said_why_none:
                print(
                    "[survae] samples: no figure for this tabular run: its validation data is "
                    "not at hand to compare the samples with"
                )
                self._said_why_none = True
            return None
        x, context = data
        if self.temperature != 1.0:
            title = f"{title} — T = {self.temperature:g}" if title else f"T = {self.temperature:g}"
        samples = pl_module.sample(len(x), temperature=self.temperature, context=context)
        return plots.tabular_samples(samples, x, path, title=title)

    def make_conditional_figure(
        self, pl_module, path: Path, info, title: str | None = None
    ) -> Path | None:
        """One row of samples per context of ``data_info["sample_contexts"]`` (per class for
        labelled data); 2-D data: one density panel and one sample panel per context."""
        import torch

        contexts = torch.tensor(info["sample_contexts"], dtype=torch.float32)
        labels = info.get("sample_context_labels") or _context_labels(contexts)
        kind = pl_module.kind
        if kind == "toy":
            model = pl_module.eval_model
            was_training = model.training
            model.eval()
            try:
                return plots.conditional_density_2d(
                    model,
                    path,
                    contexts,
                    num_samples=2000,
                    temperature=self.temperature,
                    title=title,
                    labels=labels,
                )
            finally:
                model.train(was_training)
        per_row = max(1, self.num_samples // len(contexts))
        rows = contexts.repeat_interleave(per_row, dim=0)
        samples = pl_module.sample(len(rows), temperature=self.temperature, context=rows)
        if kind == "image":
            num_bins = int(info["num_bins"])
            return plots.image_grid(
                samples, num_bins, path, nrow=per_row, title=title, row_labels=labels
            )
        if kind == "points":
            panel_labels = [labels[i // per_row] for i in range(len(rows))]
            return plots.point_clouds(samples, path, title=title, labels=panel_labels)
        return None


def _context_labels(contexts) -> list[str]:
    """Labels of sample contexts recorded without any (older checkpoints): ``class k`` for
    one-hot rows, else ``context j``."""
    rows = contexts.tolist()
    one_hot = all(sorted(r) == [0.0] * (len(r) - 1) + [1.0] for r in rows)
    return [f"class {r.index(1.0)}" if one_hot else f"context {j}" for j, r in enumerate(rows)]


def log_figure(trainer: pl.Trainer, path: Path, step: int, key: str = "samples") -> None:
    """Send the PNG at ``path`` to every logger of ``trainer`` that takes images (W&B, and
    TensorBoard with the PNG decoded by matplotlib); a failure is a warning, never silent."""
    for logger in trainer.loggers:
        try:
            log_image = getattr(logger, "log_image", None)
            if log_image is not None:
                log_image(key=key, images=[str(path)], step=step)
            elif hasattr(getattr(logger, "experiment", None), "add_image"):
                image = plots.read_png(path)
                logger.experiment.add_image(key, image, step, dataformats="HWC")
        except Exception as err:  # a figure must not end a run; say what went wrong
            warnings.warn(
                f"could not log {path} to {type(logger).__name__}: {type(err).__name__}: {err}",
                stacklevel=2,
            )
