"""CPU thread policy: how many intra-op threads a training process should use.

PyTorch's default is one intra-op thread per core of the machine. That oversubscribes the
cores whenever something else runs beside the process — other programs, the jobs of a local
sweep, data-loader workers — and OpenMP threads that wait for each other then spin instead of
working: a small model trains tens of times slower. :func:`configure_threads` picks the count
from the cores this process may actually use (CPU affinity and the cgroup CPU quota), divides
them among the parallel jobs of a Hydra sweep and the data-loader workers, takes no more
than the cores other processes leave idle (those runnable when the run starts), respects an
explicit ``OMP_NUM_THREADS`` / ``MKL_NUM_THREADS``, and gives tiny models (toy 2-D and
tabular data, or few parameters) a single thread, since their kernels are too small to split.

The config key ``threads`` selects the policy: ``auto`` (the above), ``all`` (the above
without the tiny-model rule) or a positive integer (exactly that many threads).
"""

from __future__ import annotations

import math
import os
import statistics
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from survae.config_check import ConfigError

#: data kinds whose models are tiny: their steps are many small kernels (one thread is fastest)
TINY_KINDS: frozenset[str] = frozenset({"toy", "tabular"})
#: models with fewer parameters than this count as tiny whatever their data
TINY_PARAMS: int = 200_000
#: environment variable naming the number of training processes sharing this machine's cores
PARALLEL_JOBS_ENV = "SURVAE_PARALLEL_JOBS"
#: thread-count environment variables that, when set, fix the count under ``auto``
THREAD_ENV_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")

_last_logged: str | None = None


# --------------------------------------------------------------------------- available cores
def affinity_cores() -> int:
    """Cores this process may run on (its CPU affinity mask; all cores where there is none)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def _cgroup_paths(proc_cgroup: Path) -> dict[str, str]:
    """Controller → cgroup path of this process (``""`` is the v2 unified hierarchy)."""
    text = _read(proc_cgroup) or ""
    paths: dict[str, str] = {}
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        for ctl in controllers.split(",") if controllers else [""]:
            paths[ctl] = path
    return paths


def _dirs_up(mount: Path, cg_path: str) -> list[Path]:
    """``mount/cg_path`` and each parent up to ``mount`` (a quota anywhere above applies)."""
    rel = Path(cg_path.lstrip("/"))
    dirs = [mount / rel]
    while rel != Path("."):
        rel = rel.parent
        dirs.append(mount / rel)
    return dirs


def cgroup_cpu_limit(
    root: str | Path = "/sys/fs/cgroup", proc_cgroup: str | Path = "/proc/self/cgroup"
) -> float | None:
    """The CPU quota of this process's cgroup in cores (e.g. 1.5), or None when unlimited.

    Reads cgroup v2 ``cpu.max`` (``"QUOTA PERIOD"`` or ``"max PERIOD"``; mounted at ``root`` or,
    on hybrid systems, ``root/unified``) and cgroup v1 ``cpu.cfs_quota_us`` /
    ``cpu.cfs_period_us`` (``-1``: unlimited) in the process's cgroup and every parent; the
    smallest quota found wins.
    """
    root, paths = Path(root), _cgroup_paths(Path(proc_cgroup))
    limits: list[float] = []
    if "" in paths:
        for mount in (root, root / "unified"):
            for d in _dirs_up(mount, paths[""]):
                fields = (_read(d / "cpu.max") or "").split()
                if len(fields) == 2 and fields[0] != "max":
                    try:
                        quota, period = float(fields[0]), float(fields[1])
                    except ValueError:
                        continue
                    if quota > 0 and period > 0:
                        limits.append(quota / period)
    cg_v1 = paths.get("cpu")
    if cg_v1 is not None:
        for name in ("cpu", "cpu,cpuacct", "cpuacct,cpu"):
            for d in _dirs_up(root / name, cg_v1):
                quota, period = _read(d / "cpu.cfs_quota_us"), _read(d / "cpu.cfs_period_us")
                try:
                    q, p = float(quota or "-1"), float(period or "0")
                except ValueError:
                    continue
                if q > 0 and p > 0:
                    limits.append(q / p)
    return min(limits) if limits else None


def available_cores(
    root: str | Path = "/sys/fs/cgroup", proc_cgroup: str | Path = "/proc/self/cgroup"
) -> int:
    """Whole cores this process can use: its affinity, capped by its cgroup quota (at least 1)."""
    cores = affinity_cores()
    quota = cgroup_cpu_limit(root, proc_cgroup)
    if quota is not None:
        cores = min(cores, max(1, math.floor(quota + 1e-9)))
    return max(1, cores)


# --------------------------------------------------------------------------- parallel jobs
def _positive_int(value: Any, what: str) -> int:
    try:
        n = int(str(value).strip())
    except ValueError:
        n = 0
    if n < 1:
        raise ConfigError(f"{what} must be a positive integer, got {value!r}")
    return n


def _sweep_batch_size(hydra_cfg: Any) -> int | None:
    """Jobs per batch of a Hydra multirun: the sweeper's ``n_jobs`` (Optuna) or the size of
    the basic sweeper's first batch, recomputed from the sweep's ``multirun.yaml``."""
    sweeper = hydra_cfg.sweeper
    n_jobs = sweeper.get("n_jobs") if hasattr(sweeper, "get") else None
    if n_jobs:
        return int(n_jobs)
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from omegaconf import OmegaConf

    path = Path(str(hydra_cfg.sweep.dir)) / "multirun.yaml"
    if not path.is_file():
        return None
    parent = OmegaConf.load(path)
    task = list(OmegaConf.select(parent, "hydra.overrides.task") or [])
    params = OmegaConf.select(parent, "hydra.sweeper.params") or {}
    task = [f"{k}={v}" for k, v in dict(params).items()] + task
    overrides = OverridesParser.create().parse_overrides(task)
    batches = BasicSweeper.split_arguments(overrides, sweeper.get("max_batch_size"))
    return len(batches[0]) if batches else None


def hydra_parallel_jobs() -> int | None:
    """Training processes a running Hydra multirun starts at once on this machine, or None
    when not in a multirun (or when it cannot be told).

    The submitit local launcher runs a whole batch at once; the joblib launcher at most its
    ``n_jobs``; Hydra's basic launcher one job at a time; cluster launchers (Slurm) give each
    job its own allocation, which affinity and cgroup limits already describe.
    """
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        if not HydraConfig.initialized():
            return None
        hc = HydraConfig.get()
        if hc.mode != RunMode.MULTIRUN:
            return None
        target = str(hc.launcher.get("_target_", ""))
        if "LocalLauncher" in target:  # submitit local: every job of a batch in parallel
            return _sweep_batch_size(hc)
        if "Joblib" in target:
            n = int(hc.launcher.get("n_jobs", -1))
            batch = _sweep_batch_size(hc)
            n = affinity_cores() if n < 1 else n
            return min(n, batch) if batch else n
        return 1
    except Exception:  # never let detection break a run: fall back to one job
        return None


def parallel_jobs(env: Mapping[str, str] | None = None) -> tuple[int, str]:
    """Training processes sharing this process's cores, and where that number came from:
    ``SURVAE_PARALLEL_JOBS`` if set, else Hydra's multirun launcher, else 1."""
    env = os.environ if env is None else env
    if env.get(PARALLEL_JOBS_ENV, "").strip():
        return _positive_int(env[PARALLEL_JOBS_ENV], PARALLEL_JOBS_ENV), PARALLEL_JOBS_ENV
    jobs = hydra_parallel_jobs()
    if jobs and jobs > 1:
        return jobs, "hydra multirun"
    return 1, "single job"


# --------------------------------------------------------------------------- policy
def is_tiny(data_kind: str | None = None, num_params: int | None = None) -> bool:
    """Whether a model is too small to gain from intra-op threads (toy or tabular data, or
    fewer than :data:`TINY_PARAMS` parameters)."""
    if data_kind is not None and data_kind in TINY_KINDS:
        return True
    return num_params is not None and num_params < TINY_PARAMS


def choose_threads(
    setting: int | str = "auto",
    *,
    dataloader_workers: int = 0,
    data_kind: str | None = None,
    num_params: int | None = None,
    env: Mapping[str, str] | None = None,
    cores: int | None = None,
    jobs: int | None = None,
    load: float | None = None,
) -> tuple[int, str]:
    """The intra-op thread count for ``setting`` and a one-line reason (see the module doc).

    ``auto``: an explicit ``OMP_NUM_THREADS``/``MKL_NUM_THREADS`` wins; else 1 for a tiny model
    (:func:`is_tiny`); else the available cores (``cores``, default :func:`available_cores`)
    divided by the parallel jobs (``jobs``, default :func:`parallel_jobs`), less one per
    data-loader worker, and no more than the cores other processes leave idle (``load``, the
    one-minute load average, default :func:`os.getloadavg`: threads that must wait for a busy
    core make every step wait), at least 1. ``all``: the same without the tiny-model rule. An
    integer: exactly that. Raises :class:`~survae.config_check.ConfigError` for anything else.
    """
    env = os.environ if env is None else env
    if isinstance(setting, bool):
        raise ConfigError(f"threads must be 'auto', 'all' or a positive integer, got {setting!r}")
    if isinstance(setting, int) or (isinstance(setting, str) and setting.strip().isdigit()):
        n = _positive_int(setting, "threads")
        return n, "threads=" + str(n)
    if setting not in ("auto", "all"):
        raise ConfigError(f"threads must be 'auto', 'all' or a positive integer, got {setting!r}")
    for var in THREAD_ENV_VARS:
        if env.get(var, "").strip():
            return _positive_int(env[var], var), f"{var}={env[var].strip()}"
    if setting == "auto" and is_tiny(data_kind, num_params):
        what = f"{data_kind} data" if data_kind in TINY_KINDS else f"{num_params:,} parameters"
        return 1, f"tiny model ({what})"
    cores = available_cores() if cores is None else cores
    if jobs is None:
        jobs, source = parallel_jobs(env)
    else:
        source = "given"
    workers = max(0, int(dataloader_workers))
    n = max(1, cores // max(1, jobs) - workers)
    reason = f"{cores} cores / {jobs} job(s) ({source}) - {workers} loader worker(s)"
    if load is None:
        load, what = busy_elsewhere()
    else:
        what = "load average"
    idle = max(1, cores - round(load))
    if idle < n:
        n, reason = idle, f"{reason}; {what} {load:.1f} leaves {idle} core(s) idle"
    return n, reason


def busy_elsewhere(samples: int = 5, interval: float = 0.05) -> tuple[float, str]:
    """How many cores other processes keep busy now, and what measured it.

    The runnable count of ``/proc/loadavg`` minus this process, the median of a few samples: the
    one-minute load average lags by a minute and would still count work that has just ended
    (a run started after another then keeps one thread on an idle machine for its whole
    length). Elsewhere, the one-minute load average.
    """
    counts = []
    for i in range(samples):
        text = _read(Path("/proc/loadavg"))
        try:
            running = int(text.split()[3].split("/")[0]) if text else None
        except (IndexError, ValueError):
            running = None
        if running is None:
            break
        counts.append(max(0, running - 1))
        if i + 1 < samples:
            time.sleep(interval)
    if counts:
        return float(statistics.median(counts)), "runnable processes"
    try:
        return os.getloadavg()[0], "load average"
    except (AttributeError, OSError):  # not available on this platform
        return 0.0, "load average"


def configure_threads(
    setting: int | str = "auto",
    *,
    dataloader_workers: int = 0,
    log: bool = True,
    data_kind: str | None = None,
    num_params: int | None = None,
) -> int:
    """Set ``torch``'s intra-op thread count by :func:`choose_threads` and return it; print
    the choice in one line (once per process for the same choice)."""
    global _last_logged
    n, reason = choose_threads(
        setting, dataloader_workers=dataloader_workers, data_kind=data_kind, num_params=num_params
    )
    torch.set_num_threads(n)
    line = f"[survae] threads: {n} ({reason})"
    if log and line != _last_logged:
        print(line, flush=True)
        _last_logged = line
    return n


__all__ = [
    "PARALLEL_JOBS_ENV",
    "TINY_KINDS",
    "TINY_PARAMS",
    "affinity_cores",
    "available_cores",
    "cgroup_cpu_limit",
    "choose_threads",
    "configure_threads",
    "hydra_parallel_jobs",
    "is_tiny",
    "parallel_jobs",
]
