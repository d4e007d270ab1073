"""Callbacks: periodic samples, and the final report of a run."""

from __future__ import annotations

from pathlib import Path

import pytorch_lightning as pl
from pytorch_lightning.utilities import rank_zero_only

from survae.training import plots


class SampleFigures(pl.Callback):
    """Every ``every_n_epochs`` epochs, draws samples and saves/logs a figure suited to the data:
    an image grid, point-cloud scatter plots, or a 2-D density heat map with samples."""

    def __init__(
        self, folder: str, every_n_epochs: int = 1, num_samples: int = 64, temperature: float = 1.0
    ):
        self.folder = Path(folder)
        self.every_n_epochs = every_n_epochs
        self.num_samples = num_samples
        self.temperature = temperature

    @rank_zero_only
    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module) -> None:
        if self.every_n_epochs <= 0 or (trainer.current_epoch + 1) % self.every_n_epochs:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.make_figure(
            pl_module, self.folder / f"samples_epoch{trainer.current_epoch:04d}.png"
        )
        if path is None:
            return
        for logger in trainer.loggers:
            log_image = getattr(logger, "log_image", None)
            if log_image is not None:
                log_image(key="samples", images=[str(path)], step=trainer.global_step)
            elif hasattr(getattr(logger, "experiment", None), "add_image"):
                from torchvision.io import decode_png, read_file

                try:
                    logger.experiment.add_image(
                        "samples", decode_png(read_file(str(path))), trainer.global_step
                    )
                except RuntimeError:  # compiled image ops unavailable
                    pass

    def make_figure(self, pl_module, path: Path) -> Path | None:
        kind = pl_module.kind
        if kind == "tabular":
            return None
        info = pl_module.hparams.data_info
        if info.get("sample_contexts"):
            return self.make_conditional_figure(pl_module, path, info)
        if kind == "image":
            samples = pl_module.sample(self.num_samples, temperature=self.temperature)
            return plots.image_grid(samples, int(info["num_bins"]), path)
        if kind == "points":
            samples = pl_module.sample(self.num_samples, temperature=self.temperature)
            return plots.point_clouds(samples, path)
        # 2-D data: a density map plus a histogram of enough samples to show its shape
        samples = pl_module.sample(5000, temperature=self.temperature)
        model = pl_module.eval_model
        was_training = model.training
        model.eval()
        try:
            return plots.density_2d(model, path, samples=samples)
        finally:
            model.train(was_training)

    def make_conditional_figure(self, pl_module, path: Path, info) -> Path | None:
        """One row of samples per context of ``data_info["sample_contexts"]`` (per class for
        labelled data); 2-D data: one density panel and one sample panel per context."""
        import torch

        contexts = torch.tensor(info["sample_contexts"], dtype=torch.float32)
        kind = pl_module.kind
        if kind == "toy":
            model = pl_module.eval_model
            was_training = model.training
            model.eval()
            try:
                return plots.conditional_density_2d(
                    model, path, contexts, num_samples=2000, temperature=self.temperature
                )
            finally:
                model.train(was_training)
        per_row = max(1, self.num_samples // len(contexts))
        rows = contexts.repeat_interleave(per_row, dim=0)
        samples = pl_module.sample(len(rows), temperature=self.temperature, context=rows)
        if kind == "image":
            return plots.image_grid(samples, int(info["num_bins"]), path, nrow=per_row)
        if kind == "points":
            return plots.point_clouds(samples, path)
        return None
