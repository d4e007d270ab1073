"""Markdown table of this project's runs against the published targets.

    python scripts/report.py [RUN_DIRS ...] [--wandb ENTITY/PROJECT] [--targets FILE]

Reads, under each folder (default: outputs/ and multirun/):
* ``results.json`` — written by every run at its end;
* W&B offline or synced run folders (``wandb/*run-*/files/wandb-summary.json`` + ``config.yaml``);
* CSV logs (``metrics.csv`` beside ``hparams.yaml``) of runs that stopped before writing
  results (their last logged test/val metric).
With ``--wandb ENTITY/PROJECT`` it also reads runs from the W&B server. For each experiment the
most recent run is shown, with its metric, whether it is exact or a bound, the published value,
the difference (ours − published), steps/epochs, wall time and hardware.
"""

from __future__ import annotations

import argparse
import csv
import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
#: metric as survae logs it -> how the targets file states it (nll is logged, ll published)
SIGN = {("nll", "ll"): -1.0}


def _from_results(path: Path) -> dict[str, Any]:
    rec = json.loads(path.read_text())
    rec["source"] = str(path.parent)
    return rec


def _from_wandb_dir(run_dir: Path) -> dict[str, Any] | None:
    summary_file = run_dir / "files" / "wandb-summary.json"
    config_file = run_dir / "files" / "config.yaml"
    if not summary_file.exists():
        return None
    summary = json.loads(summary_file.read_text() or "{}")
    config = yaml.safe_load(config_file.read_text()) if config_file.exists() else {}

    def value(key: str) -> Any:
        entry = config.get(key)
        return entry.get("value") if isinstance(entry, dict) else entry

    test = {k.split("/", 1)[1]: v for k, v in summary.items() if k.startswith("test/")}
    metric = next((k for k in test if k != "exact"), None)
    if metric is None:
        return None
    return {
        "experiment": value("task_name"),
        "metric": metric,
        "test": test[metric],
        "exact": bool(test.get("exact", 0)),
        "steps": summary.get("trainer/global_step"),
        "epochs": summary.get("epoch"),
        "wall_time_s": summary.get("_runtime"),
        "hardware": None,
        "date": None,
        "source": str(run_dir),
    }


def _from_csv(metrics_file: Path) -> dict[str, Any] | None:
    hparams_file = metrics_file.parent / "hparams.yaml"
    hparams = yaml.safe_load(hparams_file.read_text()) if hparams_file.exists() else {}
    rows = list(csv.DictReader(metrics_file.open()))
    last: dict[str, str] = {}
    for row in rows:
        last.update({k: v for k, v in row.items() if v not in ("", None)})
    for split in ("test", "val"):
        keys = [k for k in last if k.startswith(f"{split}/") and k != f"{split}/exact"]
        if keys:
            metric = keys[0].split("/", 1)[1]
            return {
                "experiment": (hparams or {}).get("task_name"),
                "metric": metric + ("" if split == "test" else " (val)"),
                "test": float(last[keys[0]]),
                "exact": float(last.get(f"{split}/exact", 0)) == 1.0,
                "steps": int(float(last.get("step", 0))),
                "epochs": int(float(last.get("epoch", 0))),
                "wall_time_s": None,
                "hardware": None,
                "date": None,
                "source": str(metrics_file.parent),
            }
    return None


def collect_local(folders: Iterable[Path]) -> Iterator[dict[str, Any]]:
    """Run records found under ``folders`` (results.json first, then W&B and CSV logs)."""
    for folder in folders:
        if not folder.exists():
            continue
        with_results = {path.parent for path in folder.rglob("results.json")}
        for path in sorted(folder.rglob("results.json")):
            yield _from_results(path)

        def covered(p: Path, done: frozenset[Path] = frozenset(with_results)) -> bool:
            return any(parent in done for parent in p.parents)

        for run_dir in sorted(folder.rglob("*run-*")):
            if run_dir.is_dir() and (run_dir / "files").exists() and not covered(run_dir):
                rec = _from_wandb_dir(run_dir)
                if rec:
                    yield rec
        for metrics_file in sorted(folder.rglob("metrics.csv")):
            if not covered(metrics_file):
                rec = _from_csv(metrics_file)
                if rec:
                    yield rec


def collect_wandb(path: str) -> Iterator[dict[str, Any]]:
    """Finished runs of ``ENTITY/PROJECT`` from the W&B server."""
    import wandb

    for run in wandb.Api(timeout=30).runs(path):
        summary = dict(run.summary)
        metric = next((k.split("/", 1)[1] for k in summary if k.startswith("test/")
                       and k != "test/exact"), None)  # fmt: skip
        if metric is None:
            continue
        yield {
            "experiment": run.config.get("task_name"),
            "metric": metric,
            "test": summary[f"test/{metric}"],
            "exact": bool(summary.get("test/exact", 0)),
            "steps": summary.get("trainer/global_step"),
            "epochs": summary.get("epoch"),
            "wall_time_s": summary.get("_runtime"),
            "hardware": run.metadata.get("gpu") if run.metadata else None,
            "date": run.created_at,
            "source": run.url,
        }


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def table(records: Iterable[dict[str, Any]], targets: dict[str, dict[str, Any]]) -> str:
    """One row per experiment (its latest record), as a markdown table."""
    latest: dict[str, dict[str, Any]] = {}
    for rec in records:
        name = rec.get("experiment") or "(unnamed)"
        if name not in latest or (rec.get("date") or "") >= (latest[name].get("date") or ""):
            latest[name] = rec
    header = ("| experiment | metric | ours | exact/bound | published | difference | "
              "steps | epochs | wall time | hardware |")  # fmt: skip
    lines = [header, "|" + "---|" * 10]
    for name in sorted(latest):
        rec, target = latest[name], targets.get(name, {})
        ours = rec.get("test")
        published = target.get("value")
        diff = None
        if ours is not None and published is not None:
            sign = SIGN.get((rec["metric"], target.get("metric")), 1.0)
            if sign == 1.0 and rec["metric"] != target.get("metric"):
                diff = None  # different units: no difference shown
            else:
                diff = sign * float(ours) - float(published)
        bound = "exact" if rec.get("exact") else "bound"
        wall = rec.get("wall_time_s")
        wall_s = None if wall is None else f"{float(wall) / 60:.1f} min"
        published_s = f"{published} {target.get('metric')}" if published is not None else None
        lines.append(
            f"| {name} | {rec['metric']} | {_fmt(ours)} | {bound} | {_fmt(published_s)} | "
            f"{_fmt(diff)} | {_fmt(rec.get('steps'))} | {_fmt(rec.get('epochs'))} | "
            f"{_fmt(wall_s)} | {_fmt(rec.get('hardware'))} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> str:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("folders", nargs="*", type=Path,
                   default=[ROOT / "outputs", ROOT / "multirun"])  # fmt: skip
    p.add_argument("--targets", type=Path, default=ROOT / "experiments" / "targets.yaml")
    p.add_argument("--wandb", default=None, help="ENTITY/PROJECT on the W&B server")
    args = p.parse_args(argv)
    targets = yaml.safe_load(args.targets.read_text()) or {}
    records = list(collect_local(args.folders))
    if args.wandb:
        records += list(collect_wandb(args.wandb))
    text = table(records, targets)
    print(text)
    return text


if __name__ == "__main__":
    main()
