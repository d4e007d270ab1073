"""The parts of a run's ``results.json`` that say how far it got and how it ended.

Every run that owned its folder leaves a ``results.json`` (``scripts/report.py`` lists them
all), with

* ``state``: ``finished`` (trained and, unless ``test=false``, tested), ``interrupted``
  (SIGTERM/Ctrl-C; ``last.ckpt`` holds the latest state, ``resume=`` continues it),
  ``diverged`` (a NaN or infinite loss stopped it) or ``failed`` (any other error);
* ``reason``: ``null`` for a finished run, else one line saying why it stopped;
* ``epochs``: epochs trained as a fraction, training batches run / batches per epoch (0.2 for
  200 of an epoch's 1,000 steps, 0.833 for a run stopped at step 833 of its first epoch), and
  ``completed_epochs``, the whole epochs among them;
* ``wall_time_s``: training time over every session of a resumed run (``session_wall_time_s``
  the last session's).
"""

from __future__ import annotations

import datetime
import json
import os
import sys
from collections.abc import Mapping
from typing import Any

import pytorch_lightning as pl

from survae.training.run_folder import _is_rank_zero, atomic_write_text

#: the values of ``results.json``'s ``state``
STATES = ("finished", "failed", "diverged", "interrupted")


def epochs_trained(trainer: pl.Trainer) -> float:
    """Epochs trained so far, over all sessions, as a fraction: training batches run divided
    by the batches of an epoch (Lightning's epoch counter counts an epoch that ``max_steps``
    cut short as whole, and one cut short by a signal not at all)."""
    batches = trainer.num_training_batches
    done = int(trainer.fit_loop.epoch_loop.batch_progress.total.processed)
    if not isinstance(batches, int) or batches <= 0:
        return float(trainer.current_epoch)
    return round(done / batches, 3)


def state_and_reason(results: Mapping[str, Any], step: int) -> tuple[str, str | None]:
    """``(state, reason)`` of a run that returned from training (finished or interrupted)."""
    signame = results.get("interrupted")
    if signame:
        return "interrupted", f"{signame} at step {step}; resume= continues from last.ckpt"
    return "finished", None


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def failure_state(err: BaseException) -> tuple[str, str]:
    """``(state, reason)`` of a run that an exception stopped."""
    from survae.training.module import NonFiniteLossError

    if isinstance(err, NonFiniteLossError):
        return "diverged", _one_line(str(err))
    if isinstance(err, KeyboardInterrupt):
        return "interrupted", "KeyboardInterrupt (a second Ctrl-C aborted at once)"
    if isinstance(err, SystemExit):
        return "failed", f"exit status {err.code}"
    name = type(err).__name__
    message = _one_line(str(err.args[0]) if isinstance(err, KeyError) and err.args else str(err))
    return "failed", f"{name}: {message}" if message else name


def write_failure_record(
    out_dir: str, cfg: Mapping[str, Any], err: BaseException, trained: bool
) -> str | None:
    """``results.json`` for a run that an exception stopped: the state, the reason and what is
    known of the run (no test value); only the global rank 0 writes. An error before training
    (``trained`` false) in a folder that holds a record already (a resumed run refused) leaves
    that record as it was; otherwise the previous session's record is updated."""
    path = os.path.join(out_dir, "results.json")
    previous: dict[str, Any] = {}
    if not _is_rank_zero() or (os.path.isfile(path) and not trained):
        return None
    if os.path.isfile(path):
        try:
            with open(path) as f:
                previous = json.load(f)
        except (OSError, ValueError):
            previous = {}
    state, reason = failure_state(err)
    run_info = cfg.get("run_info") or {}
    record = {
        **previous,
        "experiment": cfg.get("task_name"),
        "run_name": cfg.get("task_name"),
        "overrides": list(run_info.get("overrides") or []),
        "data_name": (cfg.get("data") or {}).get("name"),
        "debug": bool(run_info.get("debug") or (cfg.get("trainer") or {}).get("fast_dev_run")),
        "state": state,
        "reason": reason,
        "finished": False,
        "test": None,
        "seed": cfg.get("seed"),
        "command": previous.get("command") or " ".join(sys.argv),
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
    }
    try:
        atomic_write_text(path, json.dumps(record, indent=2))
    except OSError:
        return None  # the folder went away or the disk is full: the error itself matters
    return path
