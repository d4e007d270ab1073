"""survae's submitit launchers without a cluster: the time-limit warning kept short of the
limit, the job's Python started with the warning pending, the sweep's closing table, the
command that reruns a job (the real scheduler: tests/cluster)."""

from __future__ import annotations

import signal
import subprocess

import pytest

from survae.app import cli, launcher


@pytest.mark.parametrize(
    ("timeout_min", "delay", "expected"),
    [(1, 120, 1), (2, 120, 30), (10, 120, 120), (4320, 120, 120), (60, 600, 600)],
)
def test_time_limit_warning_stays_short_of_the_limit(timeout_min, delay, expected):
    params = {"timeout_min": timeout_min, "signal_delay_s": delay}
    launcher.adjust_params(params)
    assert params["signal_delay_s"] == expected


def test_job_python_starts_with_the_time_limit_signals_pending():
    probe = "import signal; print(sorted(int(s) for s in signal.pthread_sigmask(0, [])))"
    out = subprocess.run(
        f"{launcher.job_python()} -c '{probe}'", shell=True, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    blocked = eval(out.stdout)  # a list of ints
    assert int(signal.SIGUSR1) in blocked and int(signal.SIGUSR2) in blocked


def test_summary_table_names_state_restarts_metric_and_a_failed_jobs_log():
    rows = [
        {"job": 0, "id": "7_0", "state": "COMPLETED", "restarts": "2", "metric": 3.01234,
         "folder": "multirun/s/0_a", "log": ""},
        {"job": 1, "id": "7_1", "state": "FAILED", "restarts": "0", "metric": None,
         "folder": "multirun/s/1_a", "log": "multirun/s/.submitit/7_1/7_1_0_log.out"},
    ]  # fmt: skip
    table = launcher.summary_table(rows).splitlines()
    assert table[0] == "[survae] sweep: 1 of 2 jobs completed"
    assert table[1].split() == ["job", "id", "state", "restarts", "metric", "folder"]
    assert table[2].split()[:5] == ["0", "7_0", "COMPLETED", "2", "3.0123"]
    assert table[3].split()[2] == "FAILED" and "(log: multirun/s/.submitit/7_1/" in table[3]


def test_reproducible_command_is_the_program_and_the_jobs_own_overrides(monkeypatch):
    monkeypatch.setenv(cli.PROG_ENV, "python run.py")
    command = cli.reproducible_command(["experiment=abs_flow_corners", "tags=[a,b]", "seed=1"])
    assert command == "python run.py experiment=abs_flow_corners 'tags=[a,b]' seed=1"
