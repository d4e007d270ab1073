"""Runs as Slurm jobs: time-limit signals that save before the job is requeued, helper
processes kept out of the scheduler's signals, and no Slurm hints outside Slurm.

Slurm warns a job before its time limit with a signal (``--signal``): submitit's jobs get
SIGUSR2 (``hydra/launcher=slurm``), Lightning's convention is SIGUSR1. Unhandled, submitit
requeues the job at once, in the middle of a training step, and the run continues from an
older checkpoint (or from scratch). While training, :func:`install_requeue_handlers` makes
these signals only note themselves; :class:`~survae.training.checkpoint.LatestCheckpoint`
saves ``last.ckpt`` after the step and stops, the run finishes its records and its logger, and
:func:`requeue` then hands the signal to the handler that was there before (submitit's:
requeue and exit) or, in a plain ``sbatch`` job, requeues the job itself with ``scontrol``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import warnings
from collections.abc import Callable, Iterator
from typing import Any

#: signals Slurm jobs receive ahead of their time limit (``sbatch --signal``)
REQUEUE_SIGNALS = (signal.SIGUSR1, signal.SIGUSR2)
#: signals the scheduler sends to every process of a job (time limit, preemption, scancel)
SCHEDULER_SIGNALS = {signal.SIGTERM, signal.SIGINT, signal.SIGUSR1, signal.SIGUSR2}

_previous: dict[int, Any] = {}  # handlers in place before install_requeue_handlers


def in_slurm_job() -> bool:
    """Whether this process runs inside a Slurm job (allocation)."""
    return bool(os.environ.get("SLURM_JOB_ID"))


def silence_srun_hint() -> None:
    """Outside Slurm jobs, hide Lightning's "The `srun` command is available on your system but
    is not used" hint (printed on every machine where Slurm is installed)."""
    if not in_slurm_job():
        warnings.filterwarnings("ignore", message="The `srun` command is available")


def install_requeue_handlers(note: Callable[[str], None]) -> None:
    """While training: SIGUSR1/SIGUSR2 call ``note(signal name)`` instead of their handler.

    Done in a Slurm job, or wherever a Python handler for them is in place (submitit's local
    executor); elsewhere the signals keep their default action. Main thread only."""

    def _noted(signum: int, frame: Any) -> None:
        note(signal.Signals(signum).name)

    _noted.survae_requeue = True  # type: ignore[attr-defined]
    for signum in REQUEUE_SIGNALS:
        current = signal.getsignal(signum)
        if getattr(current, "survae_requeue", False):  # ours, left by an earlier fit
            current = _previous.get(signum, signal.SIG_DFL)
        if in_slurm_job() or callable(current):
            _previous[signum] = current
            signal.signal(signum, _noted)


def restore_requeue_handlers() -> None:
    """Put back the handlers :func:`install_requeue_handlers` replaced."""
    for signum, handler in list(_previous.items()):
        if getattr(signal.getsignal(signum), "survae_requeue", False):
            signal.signal(signum, handler)


def requeues_itself(signame: str | None) -> bool:
    """Whether a run stopped by ``signame`` requeues its Slurm job (:func:`requeue`: the
    time-limit warning), so that it continues in its folder by itself."""
    return in_slurm_job() and signame in ("SIGUSR1", "SIGUSR2")


def requeue(signame: str) -> None:
    """After training stopped on ``signame`` (its latest state saved, its records written):
    give the signal to the handler that was in place before training (submitit's handler
    requeues the job and exits), or in a Slurm job without one requeue it with ``scontrol``;
    then exit with the shell's code for the signal."""
    signum = int(getattr(signal, signame))
    handler = _previous.get(signum)
    if callable(handler):
        handler(signum, None)  # submitit: requeues and exits (rank 0); returns on other ranks
    elif in_slurm_job() and int(os.environ.get("SLURM_PROCID", "0")) == 0:
        job = os.environ["SLURM_JOB_ID"]
        if os.environ.get("SLURM_ARRAY_JOB_ID"):
            job = f"{os.environ['SLURM_ARRAY_JOB_ID']}_{os.environ['SLURM_ARRAY_TASK_ID']}"
        print(f"[survae] {signame}: requeueing Slurm job {job}", flush=True)
        try:
            subprocess.run(["scontrol", "requeue", job], check=False, timeout=60)
        except (OSError, subprocess.SubprocessError) as err:
            print(f"[survae] could not requeue job {job}: {err}", file=sys.stderr)
    sys.exit(128 + signum)


@contextlib.contextmanager
def scheduler_signals_blocked() -> Iterator[None]:
    """Block the scheduler's signals in this thread for the duration.

    Processes started meanwhile inherit the blocked signals: Slurm signals every process of a
    job, and a helper such as W&B's service would otherwise die on the time-limit warning
    while the run still needs it to finish its record (a helper that handles a signal itself,
    as W&B's service does SIGTERM, unblocks it: see :mod:`survae.training.loggers`). The
    signals stay pending for this process and are handled when the block ends."""
    if not hasattr(signal, "pthread_sigmask"):
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, SCHEDULER_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)
