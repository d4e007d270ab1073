"""What a run reports while and after it trains: a validation at its very end, the record of
wall time and the last validation value over all of its sessions, and progress as plain lines.

* :class:`ValidateAtEnd`: Lightning validates at the end of each ``check_val_every_n_epoch``-th
  epoch, so a run bounded by ``max_steps`` that stops mid-epoch (or ends on an epoch that is
  not a validation epoch) would finish without a validation value: no best checkpoint, no value
  for a sweeper. This callback makes the last step of training a validation point.
* :class:`RunClock`: training wall time and the last validation value, kept in the checkpoint
  so that a resumed run reports the total over its sessions and a value even when the resumed
  session itself did not validate.
* :class:`TextProgressBar`: one plain line every ``every_n_steps`` steps and one per epoch
  (with the validation metric), for output that is not a terminal (Slurm, ``nohup``, a pipe),
  where a live bar prints nothing until it ends.
"""

from __future__ import annotations

import math
import sys
import time
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import ProgressBar, RichProgressBar


class ValidateAtEnd(pl.Callback):
    """Run validation after the last training step: at ``max_steps`` (also mid-epoch) and on
    the last batch of the last epoch even if it is not a ``check_val_every_n_epoch`` epoch.

    It asks Lightning to stop (``trainer.should_stop``) on the step training ends anyway, which
    Lightning answers with a validation before stopping; no step is added or removed.
    """

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module, outputs, batch, batch_idx):
        max_steps = int(trainer.max_steps or -1)
        at_max_steps = max_steps > 0 and trainer.global_step >= max_steps
        batches = trainer.num_training_batches
        last_batch = isinstance(batches, int) and batch_idx + 1 >= batches
        max_epochs = trainer.max_epochs
        last_epoch = max_epochs is not None and max_epochs > 0
        last_epoch = last_epoch and trainer.current_epoch + 1 >= max_epochs
        if not (at_max_steps or (last_batch and last_epoch)):
            return
        every = trainer.check_val_every_n_epoch
        if every is not None and (trainer.current_epoch + 1) % every != 0:
            trainer.check_val_every_n_epoch = 1  # the run ends here: this epoch validates
        trainer.should_stop = True


class RunClock(pl.Callback):
    """Training wall time and the last validation value (``monitor``), over every session of
    a run: both travel in the checkpoint (``state_dict``), so a resumed run adds to them."""

    def __init__(self, monitor: str) -> None:
        self.monitor = monitor
        self.previous_seconds = 0.0  # sessions before this one
        self.last_value: float | None = None
        self.last_value_step: int | None = None
        self._started: float | None = None
        self._ended: float | None = None

    @property
    def state_key(self) -> str:
        return "RunClock"

    def on_fit_start(self, trainer, pl_module) -> None:
        self._started, self._ended = time.monotonic(), None

    def on_fit_end(self, trainer, pl_module) -> None:
        self._ended = time.monotonic()

    def session_seconds(self) -> float:
        """Training time of this session (up to the end of fitting: testing not included)."""
        if self._started is None:
            return 0.0
        return (self._ended or time.monotonic()) - self._started

    def total_seconds(self) -> float:
        """Training wall time of all sessions so far."""
        return self.previous_seconds + self.session_seconds()

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking or trainer.state.fn != "fit":
            return
        value = trainer.callback_metrics.get(self.monitor)
        if value is not None:
            self.last_value = float(value)
            self.last_value_step = int(trainer.global_step)

    def state_dict(self) -> dict[str, Any]:
        return {
            "seconds": self.total_seconds(),
            "last_value": self.last_value,
            "last_value_step": self.last_value_step,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.previous_seconds = float(state_dict.get("seconds") or 0.0)
        self.last_value = state_dict.get("last_value")
        self.last_value_step = state_dict.get("last_value_step")


def _fmt(value: Any) -> str:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return str(value)
    return f"{number:.4g}" if math.isfinite(number) else str(number)


class TextProgressBar(ProgressBar):
    """Progress as plain lines on stdout: ``epoch 2/10 step 1200/5000 (24 %) | 35.1 it/s |
    train/nll 1.234`` every ``every_n_steps`` optimisation steps, and after each epoch's
    validation a line with the validation metrics. Readable in a log file, one line each."""

    def __init__(self, every_n_steps: int = 50) -> None:
        super().__init__()
        self.every_n_steps = max(1, int(every_n_steps))
        self._enabled = True
        self._last_step = -1
        self._clock: tuple[float, int] | None = None

    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True

    def _print(self, text: str) -> None:
        if self._enabled:
            print(text, flush=True)

    def _where(self, trainer: pl.Trainer) -> str:
        epochs = trainer.max_epochs if trainer.max_epochs and trainer.max_epochs > 0 else None
        text = f"epoch {trainer.current_epoch + 1}" + (f"/{epochs}" if epochs else "")
        step = trainer.global_step
        if trainer.max_steps and trainer.max_steps > 0:
            return f"{text} step {step}/{trainer.max_steps} ({100 * step // trainer.max_steps} %)"
        return f"{text} step {step}"

    def on_train_start(self, trainer, pl_module) -> None:
        self._clock = (time.monotonic(), trainer.global_step)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        if step == self._last_step or step % self.every_n_steps != 0:
            return
        self._last_step = step
        rate = ""
        if self._clock is not None:
            seconds, first = time.monotonic() - self._clock[0], self._clock[1]
            if seconds > 0 and step > first:
                rate = f" | {(step - first) / seconds:.1f} it/s"
        metrics = {
            k: v for k, v in self.get_metrics(trainer, pl_module).items() if k.startswith("train/")
        }
        shown = " ".join(f"{k} {_fmt(v)}" for k, v in metrics.items() if not k.endswith("_epoch"))
        self._print(f"[survae] {self._where(trainer)}{rate}" + (f" | {shown}" if shown else ""))

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking or trainer.state.fn != "fit":
            return
        metrics = {k: v for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
        shown = " ".join(f"{k} {_fmt(v)}" for k, v in metrics.items())
        self._print(f"[survae] {self._where(trainer)} validated | {shown}")

    def on_test_end(self, trainer, pl_module) -> None:
        metrics = {k: v for k, v in trainer.callback_metrics.items() if k.startswith("test/")}
        if metrics:
            self._print(
                "[survae] tested | " + " ".join(f"{k} {_fmt(v)}" for k, v in metrics.items())
            )


def progress_bar(rich: bool, every_n_steps: int = 50) -> ProgressBar:
    """The progress display: Rich's live bar when ``rich`` and stdout is a terminal; plain
    lines (:class:`TextProgressBar`) otherwise -- a live bar in a file prints nothing until
    the epoch ends and wraps the metrics into columns."""
    if rich and sys.stdout.isatty():
        return RichProgressBar(leave=True)
    return TextProgressBar(every_n_steps)
