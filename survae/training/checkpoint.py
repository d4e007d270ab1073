"""Checkpoints that lose nothing: atomic writes, a ``last.ckpt`` that is the latest state
(periodic, at epoch and training end, on SIGTERM/SIGINT and Slurm's time-limit signals), and the
RNG and data-order state that makes a resumed run continue bit for bit."""

from __future__ import annotations

import copy
import os
import random
import signal
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO
from pytorch_lightning.callbacks import Checkpoint

from survae.training import slurm
from survae.training.run_folder import TMP_PREFIX, atomic_write


def remove_orphan_temporaries(folder: str | os.PathLike) -> list[str]:
    """Delete temporary checkpoint files left in ``folder`` by writes that were killed.

    Call it only while holding the run folder (no other process writes there)."""
    removed = []
    for path in Path(folder).glob(f"{TMP_PREFIX}*.ckpt"):
        path.unlink(missing_ok=True)
        removed.append(str(path))
    return removed


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` to ``path`` atomically (:func:`~survae.training.run_folder.atomic_write`):
    a reader never sees a half-written checkpoint, even if the process dies mid-write."""
    atomic_write(path, lambda f: torch.save(obj, f), binary=True, suffix=".ckpt")


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning checkpoint I/O that writes every checkpoint atomically (local paths)."""

    def save_checkpoint(self, checkpoint, path, storage_options=None) -> None:
        if storage_options is not None:
            raise TypeError("AtomicCheckpointIO takes no storage_options")
        atomic_torch_save(checkpoint, path)


def _numpy_state_to_tensors(state: tuple) -> tuple:
    name, keys, pos, has_gauss, cached = state
    return name, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)


def _numpy_state_from_tensors(state: tuple) -> tuple:
    name, keys, pos, has_gauss, cached = state
    return name, keys.numpy().astype(np.uint32), pos, has_gauss, cached


class RunInterruptedError(Exception):
    """Training stopped on a signal (SIGTERM, SIGINT, Slurm's SIGUSR1/SIGUSR2) after writing
    ``last.ckpt``."""

    def __init__(self, signame: str, step: int, checkpoint: str):
        self.signame, self.step, self.checkpoint = signame, step, checkpoint
        super().__init__(f"{signame} at step {step}; latest state saved to {checkpoint}")


class ExactResumeState(pl.Callback):
    """Stores what Lightning does not -- Python, NumPy, torch (and CUDA) RNG states and the
    position in the epoch's data order -- and restores it, so that a run resumed from any
    checkpoint, even one written mid-epoch, draws the same batches and noise as an unbroken
    run."""

    def __init__(self) -> None:
        self._position: dict[str, int] | None = None
        self._rng_before_validation: dict[str, Any] | None = None

    def on_save_checkpoint(self, trainer, pl_module, checkpoint) -> None:
        checkpoint["rng_states"] = _get_rng_states()
        loader = trainer.train_dataloader
        batch_size = getattr(loader, "batch_size", None)
        if batch_size:
            # batches whose optimisation step finished in the epoch in progress
            done = trainer.fit_loop.epoch_loop.batch_progress.current.processed
            sampler = getattr(loader, "sampler", None)
            checkpoint["data_position"] = {
                "epoch": int(getattr(sampler, "current_epoch", trainer.current_epoch)),
                "examples": int(done) * int(batch_size),
                "epoch_done": int(done >= trainer.num_training_batches),
            }
            close_finished_epoch(checkpoint)

    def on_load_checkpoint(self, trainer, pl_module, checkpoint) -> None:
        # before Lightning restores its loops from the same mapping: older checkpoints too
        close_finished_epoch(checkpoint)
        if checkpoint.get("epoch_closed") and trainer.max_steps != -1:
            # a step-bounded run counts one batch more when it restarts at an epoch's start
            # (Lightning's logging step, not an optimisation step): counted here beforehand
            state = checkpoint["loops"]["fit_loop"].get("epoch_loop.state_dict") or {}
            if "_batches_that_stepped" in state:
                state["_batches_that_stepped"] -= 1
        state = checkpoint.get("rng_states")
        self._position = checkpoint.get("data_position")
        if not state:
            return
        _set_rng_states(state)

    def on_train_start(self, trainer, pl_module) -> None:
        """After restoring: continue the data order where the checkpoint left it."""
        if self._position is None:
            return
        sampler = getattr(trainer.train_dataloader, "sampler", None)
        if hasattr(sampler, "resume_at"):
            sampler.resume_at(
                self._position["epoch"],
                self._position["examples"],
                epoch_done=bool(self._position.get("epoch_done", 0)),
            )
        self._position = None

    # validation draws (e.g. dequantization noise) must not move the training RNG streams:
    # a resumed run may validate a different number of times than an unbroken one
    def on_validation_start(self, trainer, pl_module) -> None:
        if trainer.state.fn == "fit":
            self._rng_before_validation = _get_rng_states()

    def on_validation_end(self, trainer, pl_module) -> None:
        if self._rng_before_validation is not None:
            _set_rng_states(self._rng_before_validation)
            self._rng_before_validation = None


def _finished_epoch_form(fit: dict[str, Any]) -> str | None:
    """How a fit-loop state that has run all of an epoch's batches was saved: ``"last_batch"``
    (in ``on_train_batch_end`` of the last batch: the batch not yet completed, the epoch not
    processed), ``"epoch_end"`` (in ``on_train_epoch_end``: processed, not completed), or
    None (any other point, e.g. already closed or mid-validation)."""
    batch = fit["epoch_loop.batch_progress"]["current"]
    epoch = fit["epoch_progress"]["current"]
    if batch["completed"] == batch["processed"] - 1 and epoch["processed"] == epoch["started"] - 1:
        return "last_batch" if fit["epoch_loop.batch_progress"]["is_last_batch"] else None
    if (
        batch["completed"] == batch["processed"]
        and epoch["processed"] == epoch["started"]
        and epoch["completed"] == epoch["processed"] - 1
    ):
        return "epoch_end"
    return None


def _zero(progress: dict[str, Any]) -> None:
    for key, value in progress.items():
        progress[key] = 0 if isinstance(value, int) else value


def close_finished_epoch(checkpoint: dict[str, Any]) -> bool:
    """Record a checkpoint saved after an epoch's last batch as the start of the next epoch.

    ``data_position.epoch_done`` says the epoch's batches have all been run. Lightning resumes
    a save on the last batch by closing the epoch without counting the next one as started
    (a second checkpoint in that epoch then resumes into it again and trains it twice), and
    an epoch-end save by running the epoch's end again (when the run is also bounded by
    ``max_epochs`` it stops an epoch early). Counted as closed -- the epoch processed and
    completed, the next one's batch, scheduler and optimiser counters at zero, as Lightning
    has them when it starts an epoch -- either resumes like an unbroken run in both stopping
    modes. The rest of the closed epoch's end (its validation, when the save came before it)
    is skipped; validation never moves the training RNG streams (:class:`ExactResumeState`).
    Returns whether the checkpoint was changed (then ``checkpoint["epoch_closed"]`` is set).
    """
    if not (checkpoint.get("data_position") or {}).get("epoch_done"):
        return False
    loops = checkpoint.get("loops") or {}
    try:
        form = _finished_epoch_form(loops["fit_loop"])
        if form is None:
            return False
        fit = copy.deepcopy(loops["fit_loop"])
        for scope in ("current", "total"):
            epoch = fit["epoch_progress"][scope]
            epoch["processed"] = epoch["completed"] = epoch["started"]
            batch = fit["epoch_loop.batch_progress"][scope]
            batch["completed"] = batch["processed"]
        fit["epoch_loop.batch_progress"]["is_last_batch"] = False
        _zero(fit["epoch_loop.batch_progress"]["current"])
        _zero(fit["epoch_loop.scheduler_progress"]["current"])
        optimizer = fit["epoch_loop.automatic_optimization.optim_progress"]["optimizer"]
        _zero(optimizer["step"]["current"])
        _zero(optimizer["zero_grad"]["current"])
    except (KeyError, TypeError):  # a loop layout of another Lightning version: leave it
        return False
    state = fit.get("epoch_loop.state_dict") or {}
    if form == "last_batch" and "_batches_that_stepped" in state:
        state["_batches_that_stepped"] += 1  # as the batch's completion would have counted it
    checkpoint["loops"] = {**loops, "fit_loop": fit}
    checkpoint["epoch_closed"] = True
    return True


def _get_rng_states() -> dict[str, Any]:
    state = {
        "python": random.getstate(),
        # as a tensor: checkpoints stay loadable with torch.load(weights_only=True)
        "numpy": _numpy_state_to_tensors(np.random.get_state()),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_states(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(_numpy_state_from_tensors(state["numpy"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class LatestCheckpoint(Checkpoint):
    """Keeps ``last.ckpt`` the latest state of training.

    Written every ``every_n_steps`` optimisation steps and every ``every_minutes`` minutes
    (whichever comes first; either may be ``None``), after every training epoch (after its
    validation), at the end of training, and on SIGTERM (Slurm preemption), SIGINT (Ctrl-C) or,
    in a Slurm job, SIGUSR1/SIGUSR2 (the warning before the time limit, see
    :mod:`survae.training.slurm`): then it saves after the current step and stops the run with
    :class:`RunInterruptedError` (all ranks of a distributed run at the same step). A second
    Ctrl-C aborts at once. All writes are atomic (see :class:`AtomicCheckpointIO`).
    """

    FILENAME = "last.ckpt"

    def __init__(
        self,
        dirpath: str | os.PathLike,
        every_n_steps: int | None = None,
        every_minutes: float | None = None,
    ) -> None:
        self.path = str(Path(dirpath) / self.FILENAME)
        self.every_n_steps = every_n_steps
        self.every_seconds = None if every_minutes is None else 60.0 * float(every_minutes)
        self._last_saved_step = -1
        self._last_saved_time = time.monotonic()
        self._before_epoch_end = False
        self._signal: str | None = None
        self._previous_sigint: Any = None

    # -------------------------------------------------------------------- signals
    def _on_sigint(self, signum, frame) -> None:
        if self._signal == "SIGINT":  # second Ctrl-C: give up at once
            raise KeyboardInterrupt
        self._signal = "SIGINT"
        print("\n[survae] Ctrl-C: saving the latest state after this step (again to abort)")

    def _on_requeue_signal(self, signame: str) -> None:
        if self._signal is None:
            self._signal = signame
            print(f"\n[survae] {signame}: saving the latest state after this step", flush=True)

    def on_fit_start(self, trainer, pl_module) -> None:
        if threading.current_thread() is threading.main_thread():
            self._previous_sigint = signal.signal(signal.SIGINT, self._on_sigint)
            slurm.install_requeue_handlers(self._on_requeue_signal)

    def _restore_sigint(self) -> None:
        if self._previous_sigint is not None:
            signal.signal(signal.SIGINT, self._previous_sigint)
            self._previous_sigint = None
            slurm.restore_requeue_handlers()

    def teardown(self, trainer, pl_module, stage: str) -> None:
        self._restore_sigint()

    # -------------------------------------------------------------------- saving
    def save(self, trainer) -> None:
        trainer.save_checkpoint(self.path)
        self._last_saved_step = trainer.global_step
        self._last_saved_time = time.monotonic()
        # a save on an epoch's last batch comes before the epoch's validation: the epoch-end
        # save after it is still due (last.ckpt then holds the validation's results too)
        progress = trainer.fit_loop.epoch_loop.batch_progress
        self._before_epoch_end = bool(progress.is_last_batch) and (
            progress.current.completed < progress.current.processed
        )

    def _decide(self, trainer) -> tuple[str | None, bool]:
        """The signal to stop on (None: go on) and whether a periodic save is due; the same
        on every rank (every rank must take part in a save, and all stop at the same step)."""
        step = trainer.global_step
        signame = "SIGTERM" if trainer.received_sigterm else self._signal
        due = bool(self.every_n_steps) and step % int(self.every_n_steps) == 0
        if self.every_seconds is not None:
            due = due or time.monotonic() - self._last_saved_time >= self.every_seconds
        if trainer.world_size > 1:  # any rank's signal stops all; any rank's clock saves all
            signum = int(getattr(signal, signame)) if signame else 0
            flags = torch.tensor([signum, int(due)], device=trainer.strategy.root_device)
            flags = trainer.strategy.reduce(flags, reduce_op="max")
            signum, due = int(flags[0]), bool(flags[1])
            if signame is None and signum:
                signame = signal.Signals(signum).name
        return signame, due and step != self._last_saved_step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        signame, due = self._decide(trainer)
        if signame is not None:
            self.save(trainer)
            raise RunInterruptedError(signame, trainer.global_step, self.path)
        if due:
            self.save(trainer)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if trainer.global_step != self._last_saved_step or self._before_epoch_end:
            self.save(trainer)

    def on_train_end(self, trainer, pl_module) -> None:
        if trainer.global_step != self._last_saved_step:
            self.save(trainer)
        self._restore_sigint()
