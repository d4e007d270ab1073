"""The CPU thread policy (survae.runtime.threads) with mocked affinity, cgroups and environment."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from survae.config_check import ConfigError
from survae.runtime import threads


@pytest.fixture(autouse=True)
def _restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


# --------------------------------------------------------------------------- cgroups
def test_cgroup_v2_quota_in_own_group(tmp_path):
    _write(tmp_path / "proc_cgroup", "0::/jobs/a\n")
    _write(tmp_path / "cg/jobs/a/cpu.max", "150000 100000\n")
    limit = threads.cgroup_cpu_limit(tmp_path / "cg", tmp_path / "proc_cgroup")
    assert limit == pytest.approx(1.5)


def test_cgroup_v2_unlimited_and_parent_limit(tmp_path):
    _write(tmp_path / "proc_cgroup", "0::/jobs/a\n")
    _write(tmp_path / "cg/jobs/a/cpu.max", "max 100000\n")
    assert threads.cgroup_cpu_limit(tmp_path / "cg", tmp_path / "proc_cgroup") is None
    _write(tmp_path / "cg/jobs/cpu.max", "300000 100000\n")  # a parent's quota applies too
    assert threads.cgroup_cpu_limit(tmp_path / "cg", tmp_path / "proc_cgroup") == 3.0


def test_cgroup_v2_hybrid_unified_mount(tmp_path):
    _write(tmp_path / "proc_cgroup", "1:cpu:/\n0::/\n")
    _write(tmp_path / "cg/unified/cpu.max", "200000 100000\n")
    assert threads.cgroup_cpu_limit(tmp_path / "cg", tmp_path / "proc_cgroup") == 2.0


def test_cgroup_v1_quota_and_unlimited(tmp_path):
    _write(tmp_path / "proc_cgroup", "4:cpu,cpuacct:/docker/x\n2:memory:/docker/x\n")
    base = tmp_path / "cg/cpu,cpuacct/docker/x"
    _write(base / "cpu.cfs_quota_us", "-1\n")
    _write(base / "cpu.cfs_period_us", "100000\n")
    assert threads.cgroup_cpu_limit(tmp_path / "cg", tmp_path / "proc_cgroup") is None
    _write(base / "cpu.cfs_quota_us", "250000\n")
    assert threads.cgroup_cpu_limit(tmp_path / "cg", tmp_path / "proc_cgroup") == 2.5


def test_no_cgroup_files_means_unlimited(tmp_path):
    assert threads.cgroup_cpu_limit(tmp_path / "none", tmp_path / "missing") is None


def test_available_cores_is_affinity_capped_by_quota(monkeypatch):
    monkeypatch.setattr(threads, "affinity_cores", lambda: 8)
    monkeypatch.setattr(threads, "cgroup_cpu_limit", lambda *a: 2.5)
    assert threads.available_cores() == 2
    monkeypatch.setattr(threads, "cgroup_cpu_limit", lambda *a: 0.5)
    assert threads.available_cores() == 1  # a fractional quota still leaves one thread
    monkeypatch.setattr(threads, "cgroup_cpu_limit", lambda *a: None)
    assert threads.available_cores() == 8


def test_affinity_cores_uses_the_affinity_mask(monkeypatch):
    monkeypatch.setattr(threads.os, "sched_getaffinity", lambda pid: {0, 3, 5}, raising=False)
    assert threads.affinity_cores() == 3


# --------------------------------------------------------------------------- policy
def test_auto_divides_cores_among_jobs_and_workers():
    n, reason = threads.choose_threads("auto", env={}, cores=16, jobs=4, num_params=10**7, load=0)
    assert n == 4 and "4 job" in reason
    n, _ = threads.choose_threads(
        "auto", env={}, cores=16, jobs=4, dataloader_workers=2, num_params=10**7, load=0
    )
    assert n == 2
    n, _ = threads.choose_threads(
        "auto", env={}, cores=2, jobs=4, dataloader_workers=1, num_params=10**7
    )
    assert n == 1  # never below one


def test_auto_gives_tiny_models_one_thread():
    for kind in ("toy", "tabular"):
        n, reason = threads.choose_threads("auto", env={}, cores=16, jobs=1, data_kind=kind)
        assert n == 1 and kind in reason
    n, _ = threads.choose_threads("auto", env={}, cores=16, jobs=1, data_kind="image", load=0)
    assert n == 16
    n, _ = threads.choose_threads(
        "auto", env={}, cores=16, jobs=1, data_kind="image", num_params=1000
    )
    assert n == 1
    n, _ = threads.choose_threads("all", env={}, cores=16, jobs=1, data_kind="toy", load=0.2)
    assert n == 16  # 'all' has no tiny-model rule


def test_explicit_environment_wins_under_auto():
    n, reason = threads.choose_threads(
        "auto", env={"OMP_NUM_THREADS": "3"}, cores=16, jobs=1, data_kind="toy"
    )
    assert (n, reason) == (3, "OMP_NUM_THREADS=3")
    n, _ = threads.choose_threads("auto", env={"MKL_NUM_THREADS": "5"}, cores=16, jobs=1)
    assert n == 5
    with pytest.raises(ConfigError, match="OMP_NUM_THREADS"):
        threads.choose_threads("auto", env={"OMP_NUM_THREADS": "many"})


def test_integer_setting_is_used_as_given():
    assert threads.choose_threads(6, env={"OMP_NUM_THREADS": "1"}, cores=2)[0] == 6
    assert threads.choose_threads("4", env={}, cores=2)[0] == 4


@pytest.mark.parametrize("bad", [0, -2, "fast", True, 1.5])
def test_bad_setting_is_a_config_error(bad):
    with pytest.raises(ConfigError, match="threads"):
        threads.choose_threads(bad, env={}, cores=2, jobs=1)


def test_parallel_jobs_from_environment(monkeypatch):
    monkeypatch.setattr(threads, "hydra_parallel_jobs", lambda: None)
    assert threads.parallel_jobs({"SURVAE_PARALLEL_JOBS": "4"}) == (4, "SURVAE_PARALLEL_JOBS")
    assert threads.parallel_jobs({}) == (1, "single job")
    with pytest.raises(ConfigError, match="SURVAE_PARALLEL_JOBS"):
        threads.parallel_jobs({"SURVAE_PARALLEL_JOBS": "0"})
    monkeypatch.setattr(threads, "hydra_parallel_jobs", lambda: 3)
    assert threads.parallel_jobs({}) == (3, "hydra multirun")


def test_hydra_submitit_local_sweep_counts_its_batch(tmp_path, monkeypatch):
    """In a multirun job under the submitit local launcher, the jobs of the sweep's batch run at
    once: the count is recomputed from the sweep's multirun.yaml."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode
    from omegaconf import OmegaConf

    sweep = tmp_path / "sweep"
    parent = {"hydra": {"overrides": {"task": ["experiment=a,b", "seed=0,1", "x=3"]}}}
    _write(sweep / "multirun.yaml", OmegaConf.to_yaml(OmegaConf.create(parent)))
    hc = OmegaConf.create(
        {
            "mode": RunMode.MULTIRUN,
            "launcher": {
                "_target_": "hydra_plugins.hydra_submitit_launcher.submitit_launcher.LocalLauncher"
            },
            "sweeper": {"max_batch_size": None},
            "sweep": {"dir": str(sweep)},
        }
    )
    monkeypatch.setattr(HydraConfig, "initialized", staticmethod(lambda: True))
    monkeypatch.setattr(HydraConfig, "get", staticmethod(lambda: hc))
    assert threads.hydra_parallel_jobs() == 4
    hc.launcher._target_ = "hydra._internal.core_plugins.basic_launcher.BasicLauncher"
    assert threads.hydra_parallel_jobs() == 1  # one job at a time
    hc.launcher._target_ = "hydra_plugins.hydra_joblib_launcher.JoblibLauncher"
    hc.launcher.n_jobs = 3
    assert threads.hydra_parallel_jobs() == 3
    hc.sweeper.n_jobs = 2  # Optuna: batches of n_jobs trials
    hc.launcher._target_ = "hydra_plugins.hydra_submitit_launcher.submitit_launcher.LocalLauncher"
    assert threads.hydra_parallel_jobs() == 2


def test_no_hydra_run_means_no_parallel_jobs():
    assert threads.hydra_parallel_jobs() is None


def test_configure_threads_sets_torch_and_logs_once(monkeypatch, capsys):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setattr(threads, "_last_logged", None)
    assert threads.configure_threads("auto", data_kind="image") == 1
    assert torch.get_num_threads() == 1
    threads.configure_threads("auto", data_kind="image")
    out = capsys.readouterr().out.strip().splitlines()
    assert out == ["[survae] threads: 1 (OMP_NUM_THREADS=1)"]
    assert threads.configure_threads(2, log=False) == 2
    assert torch.get_num_threads() == 2
    assert capsys.readouterr().out == ""


def test_busy_cores_are_left_to_their_processes():
    """Threads beyond the idle cores wait for busy ones; auto takes at most the idle ones."""
    n, reason = threads.choose_threads("auto", env={}, cores=8, jobs=1, num_params=10**7, load=5.6)
    assert n == 2 and "load average 5.6" in reason
    n, _ = threads.choose_threads("auto", env={}, cores=2, jobs=1, num_params=10**7, load=9.0)
    assert n == 1
    n, _ = threads.choose_threads("auto", env={}, cores=8, jobs=2, num_params=10**7, load=1.0)
    assert n == 4  # the idle cores exceed the job's share: the share stands
    assert threads.choose_threads(3, env={}, cores=8, load=7.0)[0] == 3  # explicit wins


def test_busy_cores_are_counted_now_not_from_a_lagging_average(monkeypatch):
    # the 1-minute load average still counts work that has just ended; /proc/loadavg's
    # runnable count (minus this process) says what is busy now
    monkeypatch.setattr(threads, "_read", lambda path: "1.98 1.50 0.90 1/312 4242")
    assert threads.busy_elsewhere(samples=3, interval=0) == (0.0, "runnable processes")
    n, reason = threads.choose_threads("auto", env={}, cores=2, jobs=1, num_params=10**7)
    assert n == 2 and "runnable" not in reason
    monkeypatch.setattr(threads, "_read", lambda path: "1.98 1.50 0.90 3/312 4242")
    n, reason = threads.choose_threads("auto", env={}, cores=4, jobs=1, num_params=10**7)
    assert n == 2 and "runnable processes 2.0 leaves 2 core(s) idle" in reason
