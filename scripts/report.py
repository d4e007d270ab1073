"""Markdown table of this project's runs: seeds averaged, compared with the published targets.

    python scripts/report.py [FOLDERS ...] [--wandb ENTITY/PROJECT] [--targets FILE]
                             [--markdown OUT.md] [--plot OUT.png] [--all]
    python scripts/report.py multirun/<sweep>/          # a sweep: table + metric vs swept value

Reads, under each folder (default: outputs/ and multirun/):
* ``results.json`` — written by every run at its end (its ``overrides``, or else the run's
  ``.hydra/overrides.yaml``, say how the run differs from its experiment);
* W&B offline or synced run folders (``wandb/*run-*/files/wandb-summary.json`` + ``config.yaml``);
* CSV logs (``metrics.csv`` beside ``hparams.yaml``) of runs that stopped before writing
  results (their last logged test metric, else val: then marked unfinished).
With ``--wandb ENTITY/PROJECT`` it also reads runs from the W&B server.

Runs of one experiment with the same overrides (the seed aside) form one row: the mean ± the
standard deviation over seeds, with their count ``n``. Runs on stand-in data (``"fake_data"``
in results.json, or the marker file of ``python -m survae.data.fake`` in the run's data
folder), debug runs (``debug=...``, ``fast_dev_run``) and unfinished runs get rows of their
own, marked in the ``notes`` column, and are never compared with published numbers (stand-in
data: "stand-in data" in the ``difference`` column). With ``--all`` every run is its own row.

A sweep folder (``multirun/...`` with ``multirun.yaml`` or numbered job folders holding
``.hydra/overrides.yaml``) also gets a plot of the metric against the swept value (one line per
combination of the other swept keys; error bars: std over seeds); by default the table and the
plot are written into the sweep folder as ``report.md`` and ``report.png``.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
#: metric as survae logs it -> how the targets file states it (nll is logged, ll published)
SIGN = {("nll", "ll"): -1.0}
#: override keys averaged over (``seed``) or that do not change a result (where files go)
IGNORED_KEYS = ("seed", "paths", "hydra", "logger", "data.root", "data.download",
                "data.check_integrity", "ckpt_path", "resume", "experiment", "debug",
                "threads", "tags", "callbacks.rich_progress_bar", "callbacks.samples",
                "callbacks.lr_monitor", "trainer.enable_progress_bar")  # fmt: skip
NOTE_ORDER = ("fake data", "debug", "unfinished")


# --------------------------------------------------------------------------------------------
# reading run records
# --------------------------------------------------------------------------------------------


def _hydra_overrides(run_dir: Path) -> list[str] | None:
    """The overrides Hydra saved for the run in ``run_dir`` (or one of its parents)."""
    for folder in (run_dir, *run_dir.parents[:2]):
        path = folder / ".hydra" / "overrides.yaml"
        if path.is_file():
            return [str(o) for o in (yaml.safe_load(path.read_text()) or [])]
    return None


def _from_results(path: Path) -> dict[str, Any]:
    rec = json.loads(path.read_text())
    rec["source"] = str(path.parent)
    if not rec.get("overrides"):  # older records (no ``overrides``), or none recorded
        rec["overrides"] = _hydra_overrides(path.parent) or []
    return rec


def _from_wandb_dir(run_dir: Path) -> dict[str, Any] | None:
    summary_file = run_dir / "files" / "wandb-summary.json"
    config_file = run_dir / "files" / "config.yaml"
    if not summary_file.exists():
        return None
    summary = json.loads(summary_file.read_text() or "{}")
    config = yaml.safe_load(config_file.read_text()) if config_file.exists() else {}

    def value(key: str) -> Any:
        entry = (config or {}).get(key)
        return entry.get("value") if isinstance(entry, dict) else entry

    rec = _from_summary(summary, value("task_name"))
    if rec is None:
        return None
    data = value("data")
    rec.update(
        seed=value("seed"),
        data_name=data.get("name") if isinstance(data, dict) else None,
        overrides=_hydra_overrides(run_dir.parents[1]) or [],
        source=str(run_dir),
    )
    return rec


def _from_summary(summary: Mapping[str, Any], experiment: Any) -> dict[str, Any] | None:
    """A record from a W&B summary: the test metric if the run got that far, else val."""
    for split in ("test", "val"):
        keys = [k for k in summary if k.startswith(f"{split}/") and k != f"{split}/exact"]
        if keys:
            metric = keys[0].split("/", 1)[1]
            return {
                "experiment": experiment,
                "metric": metric,
                "test": summary[keys[0]] if split == "test" else None,
                "val": summary.get(f"val/{metric}"),
                "exact": bool(summary.get(f"{split}/exact", 0)),
                "finished": split == "test" and summary.get("survae/status") != "failed",
                "steps": summary.get("trainer/global_step"),
                "epochs": summary.get("epoch"),
                "wall_time_s": summary.get("_runtime"),
                "hardware": None,
                "date": None,
            }
    return None


def _from_csv(metrics_file: Path) -> dict[str, Any] | None:
    hparams_file = metrics_file.parent / "hparams.yaml"
    hparams = (yaml.safe_load(hparams_file.read_text()) if hparams_file.exists() else {}) or {}
    last: dict[str, str] = {}
    with metrics_file.open() as f:
        for row in csv.DictReader(f):
            last.update({k: v for k, v in row.items() if v not in ("", None)})
    summary: dict[str, Any] = {k: float(v) for k, v in last.items() if "/" in k}
    rec = _from_summary(summary, hparams.get("task_name"))
    if rec is None:
        return None
    data = hparams.get("data")
    rec.update(
        steps=int(float(last.get("step", 0))),
        epochs=int(float(last.get("epoch", 0))),
        wall_time_s=None,
        seed=hparams.get("seed"),
        data_name=data.get("name") if isinstance(data, dict) else None,
        overrides=_hydra_overrides(metrics_file.parent) or [],
        source=str(metrics_file.parent),
    )
    return rec


def collect_local(folders: Iterable[Path]) -> Iterator[dict[str, Any]]:
    """Run records found under ``folders`` (results.json first, then W&B and CSV logs of runs
    without one)."""
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
    """Runs of ``ENTITY/PROJECT`` from the W&B server."""
    import wandb

    for run in wandb.Api(timeout=30).runs(path):
        rec = _from_summary(dict(run.summary), run.config.get("task_name"))
        if rec is None:
            continue
        data = run.config.get("data")
        rec.update(
            finished=rec["finished"] and run.state == "finished",
            seed=run.config.get("seed"),
            data_name=data.get("name") if isinstance(data, dict) else None,
            overrides=list((run.config.get("run_info") or {}).get("overrides") or []),
            hardware=run.metadata.get("gpu") if run.metadata else None,
            date=run.created_at,
            source=run.url,
        )
        yield rec


# --------------------------------------------------------------------------------------------
# grouping
# --------------------------------------------------------------------------------------------


def override_key(override: str) -> str:
    """``+trainer.limit_train_batches=5`` -> ``trainer.limit_train_batches``."""
    return override.split("=", 1)[0].lstrip("+~")


def kept_overrides(overrides: Sequence[str]) -> tuple[str, ...]:
    """The overrides that make runs differ, sorted: not the seed, not where files go."""
    kept = []
    for o in overrides:
        key = override_key(str(o))
        if not any(key == k or key.startswith(k + ".") or key.startswith(k + "/")
                   for k in IGNORED_KEYS):  # fmt: skip
            kept.append(str(o).lstrip("+"))
    return tuple(sorted(kept))


def notes(rec: Mapping[str, Any]) -> tuple[str, ...]:
    """Why a run must not be compared with published numbers (empty when it may be)."""
    overrides = [str(o) for o in rec.get("overrides") or []]
    command = str(rec.get("command") or "")
    fake = bool(rec.get("fake_data")) or _marked_fake(rec)
    debug = rec.get("debug")
    if debug is None:  # older records: look at the command line and the overrides
        debug = any(override_key(o) in ("debug", "trainer.fast_dev_run") for o in overrides) or (
            re.search(r"(^|\s)\+*(debug|trainer\.fast_dev_run)=", command) is not None
        )
    finished = rec.get("finished", True)  # older results.json: written at a run's end only
    flags = {"fake data": bool(fake), "debug": bool(debug), "unfinished": not finished}
    return tuple(n for n in NOTE_ORDER if flags[n])


def _marked_fake(rec: Mapping[str, Any]) -> bool:
    """Whether the run's data folder holds the stand-in writer's marker now (records written
    before the marker was recorded, or data replaced by stand-ins later): the data set and root
    from the run folder's ``run_config.yaml``."""
    from survae.data.fake import fake_data_marker

    config_file = Path(str(rec.get("source") or "")) / "run_config.yaml"
    if not config_file.is_file():
        return False
    try:
        config = yaml.safe_load(config_file.read_text()) or {}
    except yaml.YAMLError:
        return False
    data, paths = config.get("data") or {}, config.get("paths") or {}
    if not isinstance(data, dict) or data.get("root") is None:
        return False
    root = Path(str(data["root"])).expanduser()
    if not root.is_absolute() and isinstance(paths, dict) and paths.get("root_dir"):
        root = Path(str(paths["root_dir"])) / root  # relative to where the run started
    return fake_data_marker(data.get("name"), root) is not None


def _best_val(rec: Mapping[str, Any]) -> float | None:
    val = rec.get("val")
    if isinstance(val, Mapping):
        val = val.get("best")
    return None if val is None else float(val)


def group_runs(records: Iterable[Mapping[str, Any]], every_run: bool = False) -> list[dict]:
    """Rows: runs with the same experiment, metric, overrides (seed aside) and notes together;
    each row holds its runs' values and mean/std/n of the test (else validation) metric."""
    groups: dict[tuple, list[Mapping[str, Any]]] = {}
    for i, rec in enumerate(records):
        key = (
            rec.get("experiment") or "(unnamed)",
            rec.get("metric") or "?",
            kept_overrides(rec.get("overrides") or []),
            notes(rec),
            i if every_run else 0,
        )
        groups.setdefault(key, []).append(rec)
    rows = []
    for (experiment, metric, overrides, row_notes, _), runs in sorted(groups.items()):
        tests = [float(r["test"]) for r in runs if r.get("test") is not None]
        vals = [v for v in (_best_val(r) for r in runs) if v is not None]
        split, values = ("test", tests) if tests else ("val", vals)
        rows.append(
            {
                "experiment": experiment,
                "metric": metric,
                "overrides": overrides,
                "notes": row_notes,
                "runs": runs,
                "split": split,
                "values": values,
                "n": len(runs),
                "mean": sum(values) / len(values) if values else None,
                "std": _std(values),
                "val_mean": sum(vals) / len(vals) if vals else None,
                "exact": all(bool(r.get("exact")) for r in runs),
                "seeds": sorted({r.get("seed") for r in runs if r.get("seed") is not None}),
            }
        )
    return rows


def _std(values: Sequence[float]) -> float | None:
    """Sample standard deviation (n - 1); None for fewer than two values."""
    if len(values) < 2:
        return None
    mean = sum(values) / len(values)
    return math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


# --------------------------------------------------------------------------------------------
# table
# --------------------------------------------------------------------------------------------


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _spread(values: Sequence[Any]) -> str:
    """``12`` or ``10–14`` for steps/epochs of several runs."""
    present = sorted({v for v in values if v is not None})
    if not present:
        return "–"
    return str(present[0]) if len(present) == 1 else f"{present[0]}–{present[-1]}"


def difference(row: Mapping[str, Any], target: Mapping[str, Any]) -> float | None:
    """ours − published in the published units; None when the units differ, the row is marked
    (fake data, debug, unfinished) or has no test value."""
    published = target.get("value")
    if row["notes"] or row["split"] != "test" or row["mean"] is None or published is None:
        return None
    sign = SIGN.get((row["metric"], target.get("metric")), 1.0)
    if sign == 1.0 and row["metric"] != target.get("metric"):
        return None
    return sign * float(row["mean"]) - float(published)


def table(
    records: Iterable[Mapping[str, Any]],
    targets: Mapping[str, Mapping[str, Any]],
    every_run: bool = False,
) -> str:
    """The markdown table: one row per experiment × overrides × notes (see :func:`group_runs`)."""
    header = (
        "| experiment | overrides | metric | n | ours (mean ± std) | exact/bound | published "
        "| difference | best val | steps | epochs | wall time | hardware | notes |"
    )
    lines = [header, "|" + "---|" * 14]
    for row in group_runs(records, every_run):
        target = targets.get(row["experiment"], {}) if not row["notes"] else {}
        diff = _fmt(difference(row, target))
        if "fake data" in row["notes"] and row["experiment"] in targets:
            diff = "stand-in data"  # random files of the right format: no comparison
        ours = _fmt(row["mean"])
        if row["std"] is not None:
            ours += f" ± {row['std']:.3f}"
        if row["split"] == "val" and row["mean"] is not None:
            ours += " (val)"
        published = target.get("value")
        published_s = f"{published} {target.get('metric')}" if published is not None else None
        runs = row["runs"]
        walls = [float(r["wall_time_s"]) for r in runs if r.get("wall_time_s") is not None]
        wall_s = f"{sum(walls) / len(walls) / 60:.1f} min" if walls else None
        hardware = sorted({str(r["hardware"]) for r in runs if r.get("hardware")})
        row_notes = list(row["notes"])
        if row["notes"]:
            row_notes.append("not compared")
        lines.append(
            f"| {row['experiment']} | {' '.join(row['overrides']) or '–'} | {row['metric']} | "
            f"{row['n']} | {ours} | {'exact' if row['exact'] else 'bound'} | "
            f"{_fmt(published_s)} | {diff} | "
            f"{_fmt(row['val_mean'])} | {_spread([r.get('steps') for r in runs])} | "
            f"{_spread([r.get('epochs') for r in runs])} | {_fmt(wall_s)} | "
            f"{', '.join(hardware) or '–'} | {', '.join(row_notes) or '–'} |"
        )
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# sweeps
# --------------------------------------------------------------------------------------------


def is_sweep_folder(folder: Path) -> bool:
    """A Hydra multirun folder: ``multirun.yaml``, or job folders with ``.hydra/overrides.yaml``."""
    if (folder / "multirun.yaml").is_file():
        return True
    return any((child / ".hydra" / "overrides.yaml").is_file() for child in folder.iterdir()
               if child.is_dir())  # fmt: skip


def swept_keys(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """Override keys whose value differs between rows (in first-seen order)."""
    values: dict[str, set[str]] = {}
    for row in rows:
        present = dict(o.split("=", 1) for o in row["overrides"] if "=" in o)
        for key in {k for r in rows for k in (o.split("=", 1)[0] for o in r["overrides"])}:
            values.setdefault(key, set()).add(present.get(key, "(default)"))
    order = [o.split("=", 1)[0] for r in rows for o in r["overrides"]]
    return [k for k in dict.fromkeys(order) if len(values.get(k, ())) > 1]


def _as_number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def sweep_plot(rows: Sequence[Mapping[str, Any]], path: Path, title: str = "") -> Path | None:
    """Metric (mean, std error bars) against the first swept key, one line per combination of
    the other swept keys and per experiment; None when nothing was swept or nothing has a
    value."""
    keys = swept_keys(rows)
    rows = [r for r in rows if r["mean"] is not None]
    if not rows:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x_key = keys[0] if keys else None
    lines: dict[str, list[tuple[str, Mapping[str, Any]]]] = {}
    for row in rows:
        present = dict(o.split("=", 1) for o in row["overrides"] if "=" in o)
        others = [f"{k}={present.get(k, '(default)')}" for k in keys[1:]]
        label = " ".join([row["experiment"], *others, *row["notes"]])
        x = present.get(x_key, "(default)") if x_key else row["experiment"]
        lines.setdefault(label, []).append((x, row))
    all_x = [x for pts in lines.values() for x, _ in pts]
    numeric = all(_as_number(x) is not None for x in all_x)
    categories = list(dict.fromkeys(all_x))
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for label, pts in lines.items():
        pts = sorted(pts, key=lambda p: _as_number(p[0]) if numeric else categories.index(p[0]))
        xs = [_as_number(x) if numeric else categories.index(x) for x, _ in pts]
        ys = [r["mean"] for _, r in pts]
        errs = [r["std"] or 0.0 for _, r in pts]
        ax.errorbar(xs, ys, yerr=errs, marker="o", capsize=3, label=label)
        for x, (_, r) in zip(xs, pts, strict=True):
            ax.annotate(f"n={r['n']}", (x, r["mean"]), textcoords="offset points",
                        xytext=(4, 4), fontsize=7)  # fmt: skip
    if numeric:
        xs_all = [_as_number(x) for x in all_x]
        if min(xs_all) > 0 and max(xs_all) / min(xs_all) >= 100:
            ax.set_xscale("log")
    else:
        ax.set_xticks(range(len(categories)))
        ax.set_xticklabels(categories, rotation=20, ha="right")
    metric = rows[0]["metric"]
    split = rows[0]["split"]
    ax.set_xlabel(x_key or "experiment")
    ax.set_ylabel(f"{split}/{metric} (mean ± std over seeds)")
    ax.set_title(title or f"{split}/{metric} vs {x_key or 'experiment'}")
    ax.grid(alpha=0.3)
    if len(lines) > 1 or any(r["notes"] for r in rows):
        ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=150)
    plt.close(fig)
    return path


# --------------------------------------------------------------------------------------------
# command line
# --------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> str:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("folders", nargs="*", type=Path, help="default: outputs/ and multirun/")
    p.add_argument("--targets", type=Path, default=ROOT / "experiments" / "targets.yaml")
    p.add_argument("--wandb", default=None, help="ENTITY/PROJECT on the W&B server")
    p.add_argument("--markdown", type=Path, default=None, help="also write the table here")
    p.add_argument("--plot", type=Path, default=None, help="metric vs swept value (PNG)")
    p.add_argument("--all", action="store_true", help="one row per run (no averaging)")
    args = p.parse_args(argv)
    if not args.targets.is_file():
        raise SystemExit(f"report.py: --targets {args.targets} does not exist")
    missing = [str(f) for f in args.folders if not f.exists()]
    if missing:
        raise SystemExit(f"report.py: no such folder: {', '.join(missing)}")
    args.folders = args.folders or [ROOT / "outputs", ROOT / "multirun"]
    targets = yaml.safe_load(args.targets.read_text()) or {}
    records = list(collect_local(args.folders))
    if args.wandb:
        records += list(collect_wandb(args.wandb))
    text = table(records, targets, every_run=args.all)
    print(text)
    sweep = args.folders[0] if len(args.folders) == 1 and args.folders[0].is_dir() else None
    if sweep is not None and not is_sweep_folder(sweep):
        sweep = None
    markdown = args.markdown or (sweep / "report.md" if sweep else None)
    if markdown is not None:
        markdown.write_text(text + "\n")
        print(f"\ntable written to {markdown}")
    plot = args.plot or (sweep / "report.png" if sweep else None)
    if plot is not None:
        title = f"{sweep.name}" if sweep else ""
        if sweep_plot(group_runs(records), plot, title) is not None:
            print(f"plot written to {plot}")
        else:
            print("no plot: no run has a value")
    return text


if __name__ == "__main__":
    main()
