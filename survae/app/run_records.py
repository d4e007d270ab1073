"""Reading the records of runs for the report (:mod:`survae.app.report`): every run, whatever
became of it.

A run is found by survae's own files, not W&B's:

* ``results.json`` — written at a run's end, also when it failed or diverged: its ``state``
  (``finished``, ``failed``, ``diverged`` or ``interrupted``) and ``reason``; older records have
  no ``state`` (finished, or interrupted where ``"finished": false``);
* a run folder (``run_config.yaml`` or Hydra's ``.hydra/config.yaml``) without ``results.json``:
  the run never reached its end (``incomplete``: killed, out of time, a crash of the process),
  or is still going (``running``: its folder lock is held by a live process). What it had logged
  is read from its CSV log (``metrics.csv``) or, where the W&B version wrote one, its W&B summary;
* CSV logs and W&B run folders outside any run folder (their last test, else val metric).

Each record is a plain dict: ``experiment``, ``metric``, ``test``, ``val``, ``state``,
``reason``, ``overrides``, ``seed``, ``steps``, ``source`` (the folder) and what results.json
holds besides.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml

#: what can become of a run; only ``finished`` runs are averaged with published numbers beside
STATES = ("finished", "interrupted", "diverged", "failed", "incomplete", "running")
#: states whose runs give no result: left out of a row's mean and listed below the table
EXCLUDED_STATES = ("diverged", "failed", "incomplete", "running")
#: the lock a live run holds on its folder (survae.training.run_folder.LOCK_FILE)
LOCK_FILE = ".survae-run.lock"


def run_state(rec: Mapping[str, Any]) -> str:
    """The record's ``state``; older records without one: ``finished``, or ``interrupted`` when
    they say ``"finished": false``."""
    state = rec.get("state")
    if state in STATES:
        return str(state)
    if state:
        return "failed" if "fail" in str(state) or "crash" in str(state) else str(state)
    return "finished" if rec.get("finished", True) else "interrupted"


def _read_yaml(path: Path) -> Any:
    try:
        return yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return None


def hydra_overrides(run_dir: Path) -> list[str] | None:
    """The overrides Hydra saved for the run in ``run_dir`` (or one of its parents)."""
    for folder in (run_dir, *run_dir.parents[:2]):
        path = folder / ".hydra" / "overrides.yaml"
        if path.is_file():
            return [str(o) for o in (_read_yaml(path) or [])]
    return None


def from_results(path: Path) -> dict[str, Any]:
    """The record of ``results.json`` at ``path``, with its state and source folder; a file
    that cannot be read is a ``failed`` record saying so."""
    try:
        rec = json.loads(path.read_text())
        if not isinstance(rec, dict):
            raise ValueError("not a JSON object")
    except (OSError, ValueError) as err:
        rec = {"state": "failed", "reason": f"unreadable results.json ({err})"}
        rec.update(_from_config(path.parent))
    rec["source"] = str(path.parent)
    rec["state"] = run_state(rec)
    if rec["state"] == "interrupted" and not rec.get("reason") and rec.get("interrupted"):
        rec["reason"] = f"stopped by {rec['interrupted']}"
    if not rec.get("overrides"):  # older records (no ``overrides``), or none recorded
        rec["overrides"] = hydra_overrides(path.parent) or []
    return rec


def _from_config(run_dir: Path) -> dict[str, Any]:
    """Experiment, seed and data set of a run folder, from its saved config."""
    for path in (run_dir / "run_config.yaml", run_dir / ".hydra" / "config.yaml"):
        cfg = _read_yaml(path) if path.is_file() else None
        if isinstance(cfg, dict):
            data = cfg.get("data")
            return {
                "experiment": cfg.get("task_name"),
                "seed": cfg.get("seed"),
                "data_name": data.get("name") if isinstance(data, dict) else None,
            }
    return {}


def is_run_folder(folder: Path) -> bool:
    """A folder a run writes into: its config record (``run_config.yaml``) or Hydra's."""
    return (folder / "run_config.yaml").is_file() or (folder / ".hydra" / "config.yaml").is_file()


def _lock_owner(run_dir: Path) -> dict[str, Any] | None:
    """The live process holding ``run_dir``'s lock (this host only), else None."""
    import os
    import socket

    try:
        owner = json.loads((run_dir / LOCK_FILE).read_text())
        pid = int(owner.get("pid", -1))
    except (OSError, ValueError, TypeError, AttributeError):
        return None
    if owner.get("host") != socket.gethostname():
        return owner  # another machine's run: cannot tell, take the lock's word
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except (PermissionError, OverflowError):
        pass
    return owner


def from_run_folder(run_dir: Path) -> dict[str, Any]:
    """A run folder without ``results.json``: ``running`` (its lock is held) or ``incomplete``,
    with what its CSV log or W&B summary holds."""
    rec: dict[str, Any] = {"metric": None, "test": None, "val": None, "steps": None}
    logged = next((from_csv(p) for p in sorted(run_dir.rglob("metrics.csv"))), None)
    if logged is None:
        logged = next(
            (r for d in sorted(run_dir.glob("wandb/*run-*")) if (r := from_wandb_dir(d))), None
        )
    rec.update(logged or {})
    rec.update({k: v for k, v in _from_config(run_dir).items() if v is not None})
    owner = _lock_owner(run_dir)
    if owner is not None:
        rec["state"] = "running"
        rec["reason"] = (
            f"running: process {owner.get('pid', '?')} on {owner.get('host', '?')} since "
            f"{owner.get('started', '?')}"
        )
    elif nonfinite := sorted(run_dir.glob("checkpoints/nonfinite-step*.ckpt")):
        step = nonfinite[-1].stem.removeprefix("nonfinite-step")
        rec["state"] = "diverged"
        rec["reason"] = (
            f"the loss became non-finite at step {step} (no results.json; weights before it: "
            f"checkpoints/{nonfinite[-1].name})"
        )
    else:
        last = "" if rec.get("steps") is None else f" (last logged step {rec['steps']})"
        rec["state"] = "incomplete"
        rec["reason"] = f"no results.json: the process ended before the run did{last}"
        if line := _last_log_line(run_dir):
            rec["reason"] += f"; its log ends: {line}"
    rec["overrides"] = hydra_overrides(run_dir) or []
    rec["source"] = str(run_dir)
    return rec


def _last_log_line(run_dir: Path, width: int = 160) -> str | None:
    """The last non-empty line of the run's log (``cli.log``), shortened to ``width``."""
    try:
        with (run_dir / "cli.log").open("rb") as f:
            f.seek(0, 2)
            f.seek(max(0, f.tell() - 4096))
            tail = f.read().decode("utf-8", "replace")
    except OSError:
        return None
    lines = [ln.strip() for ln in tail.splitlines() if ln.strip()]
    if not lines:
        return None
    line = lines[-1]
    return line if len(line) <= width else line[: width - 1] + "…"


def from_summary(summary: Mapping[str, Any], experiment: Any) -> dict[str, Any] | None:
    """A record from logged metrics: the test metric if the run got that far, else val."""
    for split in ("test", "val"):
        keys = [k for k in summary if k.startswith(f"{split}/") and k != f"{split}/exact"]
        if keys:
            metric = keys[0].split("/", 1)[1]
            finished = split == "test" and summary.get("survae/status") != "failed"
            return {
                "experiment": experiment,
                "metric": metric,
                "test": summary[keys[0]] if split == "test" else None,
                "val": summary.get(f"val/{metric}"),
                "exact": bool(summary.get(f"{split}/exact", 0)),
                "state": "finished" if finished else "interrupted",
                "steps": summary.get("trainer/global_step"),
                "epochs": summary.get("epoch"),
                "wall_time_s": summary.get("_runtime"),
                "hardware": None,
                "date": None,
            }
    return None


def from_wandb_dir(run_dir: Path) -> dict[str, Any] | None:
    """A W&B run folder's summary (``files/wandb-summary.json``; offline runs of recent W&B
    versions write none, so this is a fallback only)."""
    summary_file = run_dir / "files" / "wandb-summary.json"
    config_file = run_dir / "files" / "config.yaml"
    if not summary_file.exists():
        return None
    try:
        summary = json.loads(summary_file.read_text() or "{}")
    except (OSError, ValueError):
        return None
    config = (_read_yaml(config_file) if config_file.exists() else None) or {}

    def value(key: str) -> Any:
        entry = config.get(key) if isinstance(config, dict) else None
        return entry.get("value") if isinstance(entry, dict) else entry

    rec = from_summary(summary, value("task_name"))
    if rec is None:
        return None
    data = value("data")
    rec.update(
        seed=value("seed"),
        data_name=data.get("name") if isinstance(data, dict) else None,
        overrides=hydra_overrides(run_dir.parents[1]) or [],
        source=str(run_dir),
    )
    return rec


def from_csv(metrics_file: Path) -> dict[str, Any] | None:
    """A CSV log's last values (``metrics.csv`` beside Lightning's ``hparams.yaml``)."""
    hparams_file = metrics_file.parent / "hparams.yaml"
    hparams = (_read_yaml(hparams_file) if hparams_file.exists() else None) or {}
    last: dict[str, str] = {}
    with metrics_file.open() as f:
        for row in csv.DictReader(f):
            last.update({k: v for k, v in row.items() if v not in ("", None)})
    summary: dict[str, Any] = {k: float(v) for k, v in last.items() if "/" in k}
    rec = from_summary(summary, hparams.get("task_name"))
    if rec is None:
        return None
    data = hparams.get("data")
    rec.update(
        steps=int(float(last.get("step", 0))),
        epochs=int(float(last.get("epoch", 0))),
        wall_time_s=None,
        seed=hparams.get("seed"),
        data_name=data.get("name") if isinstance(data, dict) else None,
        overrides=hydra_overrides(metrics_file.parent) or [],
        source=str(metrics_file.parent),
    )
    return rec


def collect_local(folders: Iterable[Path]) -> Iterator[dict[str, Any]]:
    """Every run under ``folders``: each ``results.json``, each run folder without one, then
    CSV logs and W&B folders that belong to neither."""
    for folder in folders:
        if not folder.exists():
            continue
        runs = {path.parent for path in folder.rglob("results.json")}
        for path in sorted(folder.rglob("results.json")):
            yield from_results(path)
        others = sorted(
            d
            for d in [folder, *folder.rglob("*")]
            if d.is_dir() and d not in runs and is_run_folder(d) and ".hydra" not in d.parts
        )
        for run_dir in others:
            if not any(parent in runs for parent in run_dir.parents):
                yield from_run_folder(run_dir)
        covered = runs | set(others)

        def inside(p: Path, done: frozenset[Path] = frozenset(covered)) -> bool:
            return any(parent in done for parent in p.parents)

        for run_dir in sorted(folder.rglob("*run-*")):
            if run_dir.is_dir() and (run_dir / "files").exists() and not inside(run_dir):
                if rec := from_wandb_dir(run_dir):
                    yield rec
        for metrics_file in sorted(folder.rglob("metrics.csv")):
            if not inside(metrics_file) and (rec := from_csv(metrics_file)):
                yield rec


def collect_wandb(path: str) -> Iterator[dict[str, Any]]:
    """Runs of ``ENTITY/PROJECT`` from the W&B server (crashed and failed ones included)."""
    import wandb

    for run in wandb.Api(timeout=30).runs(path):
        rec = from_summary(dict(run.summary), run.config.get("task_name")) or {
            "experiment": run.config.get("task_name"),
            "metric": None,
        }
        data = run.config.get("data")
        server_state = str(run.state)
        if server_state in ("running", "crashed", "failed", "killed"):
            rec["state"] = "running" if server_state == "running" else "failed"
            rec["reason"] = f"W&B state {server_state}"
        rec.update(
            seed=run.config.get("seed"),
            data_name=data.get("name") if isinstance(data, dict) else None,
            overrides=list((run.config.get("run_info") or {}).get("overrides") or []),
            hardware=run.metadata.get("gpu") if run.metadata else None,
            date=run.created_at,
            source=run.url,
        )
        yield rec
