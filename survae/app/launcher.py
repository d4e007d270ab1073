"""What survae's submitit launchers (``hydra/launcher=slurm``, ``hydra/launcher=local``; the
plugin classes are in ``hydra_plugins/survae_launcher``, where Hydra looks for them) add to
``hydra_plugins.hydra_submitit_launcher``, so that a sweep reports honestly:

* every job is waited for, whatever the others do (the plugin stops at the first job that
  died), and a job that ended without a result (killed, out of memory, over its time limit)
  is told from its Slurm state (``sacct``, or ``scontrol`` where the cluster keeps no
  accounting), so the sweep never waits for it forever;
* a table when the sweep ends: job, Slurm job id, state, restarts (requeues), the returned
  metric and the job's folder; a failed job's row names its log file, and the sweep's error
  (the first failed job, raised by Hydra's sweeper) names the job and the log;
* Slurm's warning before the time limit (``signal_delay_s``) is kept short of the limit
  (:func:`adjust_params`), and a warning that comes while a job is still starting requeues it
  instead of killing it (:func:`job_python`);
* no empty folder literally named ``.submitit/%j`` is left behind.
"""

from __future__ import annotations

import logging
import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, filter_overrides
from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
from omegaconf import OmegaConf

from survae.app.cli import SweepJobError

log = logging.getLogger(__name__)

#: Slurm states of a job that has ended
ENDED = {
    "BOOT_FAIL",
    "CANCELLED",
    "COMPLETED",
    "DEADLINE",
    "FAILED",
    "NODE_FAIL",
    "OUT_OF_MEMORY",
    "TIMEOUT",
}


def scontrol_job(job_id: str) -> dict[str, str]:
    """``scontrol show job`` of a job as a mapping (empty when Slurm no longer knows it)."""
    try:
        out = subprocess.run(
            ["scontrol", "show", "job", "-o", str(job_id)],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return {}
    fields = (f.partition("=") for f in out.split())
    return {key: value for key, _, value in fields if key}


def adjust_params(params: dict[str, Any]) -> None:
    """Slurm's warning before the time limit (``signal_delay_s``) no longer than half the limit
    less Slurm's 30 s check interval: Slurm sends it up to 30 s early, and Hydra's default
    120 s would signal a job with a short limit at once, on every requeue."""
    limit_s = 60 * int(params.get("timeout_min") or 0)
    delay = params.get("signal_delay_s")
    if limit_s and delay is not None:
        params["signal_delay_s"] = max(1, min(int(delay), limit_s // 2 - 30))


#: the job's Python starts with the time-limit signals blocked (they stay pending): one sent
#: while the job is still starting would otherwise kill it (the default action) before
#: submitit's handler exists; :func:`unblock_requeue_signals` delivers them once it does
_BLOCKED_START = (
    "import os, signal, sys; "
    "signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1, signal.SIGUSR2}); "
    "os.execv(sys.executable, [sys.executable, *sys.argv[1:]])"
)


def job_python() -> str:
    """The command submitit's Slurm jobs start Python with (see ``_BLOCKED_START``)."""
    return f"{shlex.quote(sys.executable)} -c {shlex.quote(_BLOCKED_START)}"


def unblock_requeue_signals() -> None:
    """In the job, once submitit's handlers are in place: deliver pending time-limit signals
    (a job warned while it started is requeued at once and starts over)."""
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGUSR1, signal.SIGUSR2})


def launch(
    launcher: Any, job_overrides: Sequence[Sequence[str]], initial_job_idx: int
) -> Sequence[JobReturn]:
    """The launcher's ``launch``: submit, wait for every job, print the summary table."""
    jobs = _submit(launcher, job_overrides, initial_job_idx)
    returns, rows = [], []
    for idx, (job, overrides) in enumerate(zip(jobs, job_overrides), initial_job_idx):
        ret, row = _collect(launcher, job, list(overrides), idx)
        returns.append(ret)
        rows.append(row)
    _remove_unexpanded_folders(Path(str(launcher.params["submitit_folder"])))
    print(summary_table(rows), flush=True)
    return returns


def _submit(launcher: Any, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> list:
    """``BaseSubmititLauncher.launch`` up to the submission: the jobs, not yet waited for."""
    import submitit

    params = dict(launcher.params)
    init_keys = {"submitit_folder", "max_num_timeout"}
    init = {f"slurm_{k}": params[k] for k in ("max_num_timeout",) if k in params}
    if launcher._EXECUTOR == "slurm":
        init["slurm_python"] = job_python()
    executor = submitit.AutoExecutor(
        cluster=launcher._EXECUTOR, folder=params["submitit_folder"], **init
    )
    base = set(OmegaConf.structured(BaseQueueConf).keys())
    executor.update_parameters(
        **{
            key if key in base else f"{launcher._EXECUTOR}_{key}": value
            for key, value in params.items()
            if key not in init_keys
        }
    )
    sweep_dir = Path(str(launcher.config.hydra.sweep.dir))
    log.info(f"Submitit '{launcher._EXECUTOR}' sweep output dir : {sweep_dir}")
    sweep_dir.mkdir(parents=True, exist_ok=True)
    job_params = []
    for idx, overrides in enumerate(job_overrides, initial_job_idx):
        log.info(f"\t#{idx} : {' '.join(filter_overrides(overrides))}")
        state = Singleton.get_state()
        job_params.append((list(overrides), "hydra.sweep.dir", idx, f"job_id_for_{idx}", state))
    jobs = executor.map_array(SweepJob(launcher), *zip(*job_params))
    if launcher._EXECUTOR == "slurm" and jobs and not _has_accounting():
        # submitit would call sacct (and warn) at every poll: ask scontrol instead (_wait)
        jobs[0].watcher._make_command = lambda: None
    return jobs


class SweepJob:
    """What each job runs, pickled by submitit: the launcher plugin's job (Hydra's job in its
    folder), with submitit's checkpoint protocol (a requeued job runs again with the same
    arguments). Only ``survae`` needs to be importable in the job, not the plugin package."""

    def __init__(self, launcher: Any) -> None:
        self.hydra_context = launcher.hydra_context
        self.config = launcher.config
        self.task_function = launcher.task_function

    def __call__(self, *args: Any) -> JobReturn:
        """The job, once submitit's signal handlers are in place. An attempt that Slurm
        terminated (preemption, ``scontrol requeue``) and that then failed leaves no result:
        the failure came from the termination (W&B's service killed while starting, say),
        and the job's result is that of the attempt Slurm starts next."""
        from hydra_plugins.hydra_submitit_launcher.submitit_launcher import (
            BaseSubmititLauncher,
        )

        terminated = _note_sigterm()
        unblock_requeue_signals()
        ret = BaseSubmititLauncher.__call__(self, *args)  # type: ignore[arg-type]
        if terminated and ret.status != JobStatus.COMPLETED:
            log.warning("terminated by Slurm, then failed: no result, the job runs again")
            sys.exit(128 + signal.SIGTERM)
        return ret

    def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        """Requeue with the same arguments (submitit calls it on the time-limit signal)."""
        import submitit

        return submitit.helpers.DelayedSubmission(self, *args, **kwargs)


def _note_sigterm() -> list[int]:
    """A list that SIGTERM appends to (the handler in place, submitit's, still runs)."""
    seen: list[int] = []
    previous = signal.getsignal(signal.SIGTERM)

    def noted(signum: int, frame: Any) -> None:
        seen.append(signum)
        if callable(previous):
            previous(signum, frame)
        elif previous == signal.SIG_DFL:  # no submitit handler: terminate as before
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGTERM)

    signal.signal(signal.SIGTERM, noted)
    return seen


def _has_accounting() -> bool:
    """Whether this cluster keeps job accounting (``sacct`` answers)."""
    try:
        done = subprocess.run(["sacct", "-n", "-X", "-j", "1"], capture_output=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return False
    return done.returncode == 0


def _collect(launcher: Any, job: Any, overrides: list[str], idx: int) -> tuple[JobReturn, dict]:
    """Wait for one job; its return (a failed one carries a :class:`SweepJobError`) and its
    row of the summary."""
    state = _wait(job)
    info = scontrol_job(job.job_id) if launcher._EXECUTOR == "slurm" else {}
    row = {"job": idx, "id": job.job_id, "restarts": info.get("Restarts", "-")}
    logfile = str(job.paths.stdout)
    shown = " ".join(filter_overrides(overrides))
    what = f"job #{idx} ({shown}; {launcher._EXECUTOR} job {job.job_id})"
    try:
        ret = job.results()[0]
    except Exception as err:  # submitit: the job ended without writing a result
        state = info.get("JobState") or state or "FAILED"
        reason = (str(err).strip() or type(err).__name__).splitlines()[0]
        ret = JobReturn(overrides=overrides, status=JobStatus.FAILED)
        ret.working_dir = _job_folder(launcher, overrides, idx)
        ret.return_value = SweepJobError(f"{what} ended {state}: {reason}; log: {logfile}")
    else:
        state = "COMPLETED" if ret.status == JobStatus.COMPLETED else "FAILED"
        if state == "FAILED":
            err = ret._return_value
            failure = SweepJobError(f"{what} failed: {type(err).__name__}: {err}; log: {logfile}")
            failure.__cause__ = err
            ret.return_value = failure
    value = ret._return_value if ret.status == JobStatus.COMPLETED else None
    folder = OmegaConf.select(ret.hydra_cfg, "hydra.runtime.output_dir") if ret.hydra_cfg else None
    row.update(state=state, metric=value, folder=folder or ret.working_dir or "-")
    row["log"] = logfile if state != "COMPLETED" else ""
    return ret, row


def _job_folder(launcher: Any, overrides: list[str], idx: int) -> str | None:
    """The folder a job that returned nothing was given (as the job resolves it)."""
    try:
        cfg = launcher.hydra_context.config_loader.load_sweep_config(launcher.config, overrides)
        cfg.hydra.job.num = idx
        return str(Path(str(cfg.hydra.sweep.dir)) / str(cfg.hydra.sweep.subdir))
    except Exception:  # noqa: BLE001 -- the folder is only shown
        return None


def _wait(job: Any, poll_s: float = 1.0, check_every_s: float = 15.0) -> str | None:
    """Wait until ``job`` has a result or Slurm says it has ended; its Slurm state if known.

    submitit learns a job's state from ``sacct``; where that is missing (no accounting) a job
    that died without a result would be waited for forever, so ``scontrol`` is asked too."""
    last_check = time.monotonic()
    slurm = type(job).__name__.startswith("Slurm")
    while not job.done():
        time.sleep(poll_s)
        if slurm and time.monotonic() - last_check >= check_every_s:
            last_check = time.monotonic()
            state = scontrol_job(job.job_id).get("JobState", "")
            if state in ENDED:
                time.sleep(poll_s)  # the result file may lag behind the state
                if not job.done():
                    return state
    return None


def summary_table(rows: list[dict]) -> str:
    """The sweep's jobs as a plain-text table (job, id, state, restarts, metric, folder)."""
    header = ["job", "id", "state", "restarts", "metric", "folder"]
    lines = [header]
    for row in rows:
        metric = row["metric"]
        shown = f"{metric:.4f}" if isinstance(metric, float) else str(metric or "-")
        folder = str(row["folder"]) + (f"  (log: {row['log']})" if row.get("log") else "")
        lines.append(
            [str(row["job"]), str(row["id"]), row["state"], str(row["restarts"]), shown, folder]
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(header) - 1)]
    done = sum(row["state"] == "COMPLETED" for row in rows)
    out = [f"[survae] sweep: {done} of {len(rows)} jobs completed"]
    for line in lines:
        out.append("  ".join(c.ljust(w) for c, w in zip(line, widths)) + "  " + line[-1])
    return "\n".join(out)


def _remove_unexpanded_folders(folder: Path) -> None:
    """Remove the empty folder submitit makes for its unexpanded ``%j`` pattern."""
    for path in [folder, *folder.parents]:
        if "%" in path.name and path.is_dir() and not any(path.iterdir()):
            path.rmdir()
