"""Slurm jobs without a cluster: the time-limit signals are noted while training and handed on
afterwards, helper processes started with the scheduler's signals blocked, no srun hint
outside Slurm jobs (the real scheduler: tests/cluster)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import warnings
from pathlib import Path

import pytest

from survae.training import slurm

sys.path.insert(0, str(Path(__file__).parent))
from conftest import QUIET, cli_process, tiny_data  # noqa: E402  (tests/training/conftest.py)

HINT = "The `srun` command is available on your system but is not used. HINT: ..."


@pytest.fixture
def clean_handlers():
    saved = {s: signal.getsignal(s) for s in slurm.REQUEUE_SIGNALS}
    yield
    for signum, handler in saved.items():
        signal.signal(signum, handler)
    slurm._previous.clear()


@pytest.mark.parametrize("in_job", [False, True])
def test_srun_hint_only_inside_slurm_jobs(monkeypatch, in_job):
    if in_job:
        monkeypatch.setenv("SLURM_JOB_ID", "7")
    else:
        monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        slurm.silence_srun_hint()
        warnings.warn(HINT, UserWarning, stacklevel=1)
    assert len(seen) == int(in_job)


def test_time_limit_signal_is_noted_then_handed_to_the_previous_handler(
    monkeypatch, clean_handlers
):
    monkeypatch.setenv("SLURM_JOB_ID", "7")
    before, noted = [], []
    signal.signal(signal.SIGUSR2, lambda signum, frame: before.append(signum))  # submitit's
    slurm.install_requeue_handlers(noted.append)
    os.kill(os.getpid(), signal.SIGUSR2)
    assert noted == ["SIGUSR2"] and before == []  # noted only: training saves first
    slurm.restore_requeue_handlers()
    with pytest.raises(SystemExit) as stop:
        slurm.requeue("SIGUSR2")
    assert before == [signal.SIGUSR2]  # submitit's handler requeues (and exits, on rank 0)
    assert stop.value.code == 128 + signal.SIGUSR2


def test_outside_slurm_the_signals_keep_their_default_action(monkeypatch, clean_handlers):
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    signal.signal(signal.SIGUSR1, signal.SIG_DFL)
    slurm.install_requeue_handlers(lambda name: None)
    assert signal.getsignal(signal.SIGUSR1) is signal.SIG_DFL


def test_plain_sbatch_job_requeues_itself(monkeypatch, clean_handlers):
    monkeypatch.setenv("SLURM_JOB_ID", "42")
    monkeypatch.delenv("SLURM_ARRAY_JOB_ID", raising=False)
    monkeypatch.delenv("SLURM_PROCID", raising=False)
    calls = []
    monkeypatch.setattr(slurm.subprocess, "run", lambda cmd, **kw: calls.append(cmd))
    signal.signal(signal.SIGUSR1, signal.SIG_DFL)
    slurm.install_requeue_handlers(lambda name: None)
    with pytest.raises(SystemExit) as stop:
        slurm.requeue("SIGUSR1")
    assert calls == [["scontrol", "requeue", "42"]]
    assert stop.value.code == 128 + signal.SIGUSR1


def test_processes_started_while_blocked_outlive_the_scheduler_signals():
    with slurm.scheduler_signals_blocked():
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        assert signal.SIGTERM not in signal.pthread_sigmask(signal.SIG_BLOCK, [])
        for signum in (signal.SIGTERM, signal.SIGUSR2):
            child.send_signal(signum)
        time.sleep(0.5)
        assert child.poll() is None  # pending, never delivered
    finally:
        child.kill()
        child.wait()


#: a user module that sends the process SIGUSR2 (Slurm's time-limit warning) at a step
USR2_AT = textwrap.dedent(
    """
    import os, signal

    from survae.training.module import FlowModule

    AT = int(os.environ["USR2_AT_STEP"])
    _step = FlowModule.training_step


    def training_step(self, batch, batch_idx):
        if self.global_step == AT:
            os.kill(os.getpid(), signal.SIGUSR2)
        return _step(self, batch, batch_idx)


    FlowModule.training_step = training_step
    """
)


def test_time_limit_warning_in_a_job_saves_after_the_step_and_requeues(tmp_path):
    (tmp_path / "usr2.py").write_text(USR2_AT)
    run_dir = tmp_path / "run"
    args = [
        "experiment=plain_flow_checkerboard",
        *tiny_data(512),
        *QUIET,
        "callbacks.checkpoint_every_n_steps=null",
        "callbacks.checkpoint_every_minutes=null",
        "trainer.max_steps=20",
        "imports=[usr2]",
        f"hydra.run.dir={run_dir}",
    ]
    # a plain sbatch job: no submitit handler, so the run requeues itself with scontrol
    env = {"PYTHONPATH": str(tmp_path), "USR2_AT_STEP": "10", "SLURM_JOB_ID": "999999999"}
    env["PATH"] = f"{tmp_path}:{os.environ['PATH']}"
    (tmp_path / "scontrol").write_text(f'#!/bin/sh\necho "$@" > {tmp_path}/scontrol.args\n')
    (tmp_path / "scontrol").chmod(0o755)
    proc = cli_process(args, tmp_path, env)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 128 + signal.SIGUSR2, err[-3000:]
    assert "SIGUSR2: saving the latest state" in out and "Traceback" not in err
    assert (tmp_path / "scontrol.args").read_text().split() == ["requeue", "999999999"]
    record = json.loads((run_dir / "results.json").read_text())
    assert record["interrupted"] == "SIGUSR2" and record["steps"] == 11
