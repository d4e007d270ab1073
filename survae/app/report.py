"""Markdown table of this project's runs: seeds averaged, compared with the published targets,
and every run that gave no result listed with its state and reason. Usage::

    survae-report [FOLDERS ...] [--wandb ENTITY/PROJECT] [--targets FILE]
                  [--markdown OUT.md] [--plot OUT.png] [--all]
    survae-report multirun/<sweep>/          # a sweep: table + metric vs swept value

(also ``survae report ...``, or ``python scripts/report.py ...`` in a checkout.)

Reads every run under each folder (default: outputs/ and multirun/) from survae's own records
(:mod:`survae.app.run_records`): ``results.json`` (its ``state``: finished, failed, diverged,
interrupted; and ``reason``), run folders that hold no ``results.json`` (``incomplete``, or
``running`` while their lock is held), and CSV logs. With ``--wandb ENTITY/PROJECT`` it also
reads runs from the W&B server.

Runs of one experiment with the same overrides (the seed aside) form one row: the mean ± the
standard deviation over the seeds that finished, with their count ``n``. Failed, diverged,
incomplete and running runs are left out of the mean; the row's ``notes`` count them (``n = 2
of 3: 1 diverged left out``) and a second table below lists each with its state, reason and
folder. Runs on stand-in data (``"fake_data"`` in results.json, or the marker file of
``python -m survae.data.fake`` in the run's data folder), debug runs (``debug=...``,
``fast_dev_run``) and interrupted runs get rows of their own, marked in ``notes``, and are
never compared with published numbers (stand-in data: "stand-in data" in the ``difference``
column). With ``--all`` every run is its own row, its state in ``notes``.

A sweep folder (``multirun/...`` with ``multirun.yaml`` or numbered job folders holding
``.hydra/overrides.yaml``) also gets a plot of the metric against the swept value; by default
the table and the plot are written into the sweep folder as ``report.md`` and ``report.png``.
"""

from __future__ import annotations

import argparse
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from survae.app.run_records import EXCLUDED_STATES, collect_local, collect_wandb, run_state
from survae.app.sweeps import is_sweep_folder, sweep_plot, swept_keys

__all__ = [
    "collect_local",
    "difference",
    "group_runs",
    "is_sweep_folder",
    "main",
    "notes",
    "not_counted",
    "sweep_plot",
    "swept_keys",
    "table",
]

#: metric as survae logs it -> how the targets file states it (nll is logged, ll published)
SIGN = {("nll", "ll"): -1.0}
#: override keys averaged over (``seed``) or that do not change a result (where files go)
IGNORED_KEYS = ("seed", "paths", "hydra", "logger", "data.root", "data.download",
                "data.check_integrity", "ckpt_path", "resume", "experiment", "debug",
                "threads", "tags", "callbacks.rich_progress_bar", "callbacks.samples",
                "callbacks.lr_monitor", "trainer.enable_progress_bar")  # fmt: skip
NOTE_ORDER = ("fake data", "debug", "unfinished")
#: where the published numbers are looked for when ``--targets`` is not given
TARGETS = Path("experiments") / "targets.yaml"


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
    unfinished = run_state(rec) == "interrupted"
    flags = {"fake data": bool(fake), "debug": bool(debug), "unfinished": unfinished}
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


def _counts(rec: Mapping[str, Any], every_run: bool) -> bool:
    """Whether a run's value enters its row's mean (every run does with ``--all``)."""
    return every_run or run_state(rec) not in EXCLUDED_STATES


def group_runs(records: Iterable[Mapping[str, Any]], every_run: bool = False) -> list[dict]:
    """Rows: runs with the same experiment, overrides (seed aside) and notes together; each
    holds its runs, the ``left_out`` ones (failed, diverged, incomplete, running) and the
    mean/std/n of the test (else validation) metric of the others."""
    groups: dict[tuple, list[Mapping[str, Any]]] = {}
    for i, rec in enumerate(records):
        key = (
            rec.get("experiment") or "(unnamed)",
            kept_overrides(rec.get("overrides") or []),
            notes(rec),
            i if every_run else 0,
        )
        groups.setdefault(key, []).append(rec)
    rows = [_row(*key[:3], runs, every_run) for key, runs in sorted(groups.items())]
    metrics = {r["experiment"]: r["metric"] for r in rows if r["metric"] != "?"}
    for row in rows:  # a row of failed runs only: its experiment's metric from the others
        row["metric"] = metrics.get(row["experiment"], row["metric"])
    return rows


def _row(experiment: str, overrides: tuple, row_notes: tuple, runs: list, every_run: bool):
    counted = [r for r in runs if _counts(r, every_run)]
    tests = [float(r["test"]) for r in counted if r.get("test") is not None]
    vals = [v for v in (_best_val(r) for r in counted) if v is not None]
    split, values = ("test", tests) if tests else ("val", vals)
    metric = next((r["metric"] for r in runs if r.get("metric")), "?")
    return {
        "experiment": experiment,
        "metric": metric,
        "overrides": overrides,
        "notes": row_notes,
        "runs": counted,
        "left_out": [r for r in runs if not _counts(r, every_run)],
        "split": split,
        "values": values,
        "n": len(counted),
        "mean": sum(values) / len(values) if values else None,
        "std": _std(values),
        "val_mean": sum(vals) / len(vals) if vals else None,
        "exact": bool(counted) and all(bool(r.get("exact")) for r in counted),
        "seeds": sorted({r.get("seed") for r in counted if r.get("seed") is not None}),
    }


def _std(values: Sequence[float]) -> float | None:
    """Sample standard deviation (n - 1); None for fewer than two values."""
    if len(values) < 2:
        return None
    mean = sum(values) / len(values)
    return math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


# --------------------------------------------------------------------------------------------
# tables
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


def _row_notes(row: Mapping[str, Any], every_run: bool) -> str:
    """The notes cell: the marks, ``not compared``, and how many runs were left out."""
    out = list(row["notes"])
    if row["notes"]:
        out.append("not compared")
    if every_run:
        out += [f"{run_state(r)}: {r.get('reason') or '?'}" for r in row["runs"]
                if run_state(r) in EXCLUDED_STATES]  # fmt: skip
    left_out = row["left_out"]
    if left_out:
        by_state: dict[str, int] = {}
        for r in left_out:
            by_state[run_state(r)] = by_state.get(run_state(r), 0) + 1
        total = row["n"] + len(left_out)
        what = ", ".join(f"{k} {v}" for k, v in sorted(by_state.items()))
        out.append(f"n = {row['n']} of {total}: {what} left out (listed below)")
    return ", ".join(out) or "–"


def _exactness(row: Mapping[str, Any]) -> str:
    """``exact`` or ``bound`` for a row's value; ``–`` for a row without runs that count."""
    if not row["runs"]:
        return "–"
    return "exact" if row["exact"] else "bound"


def table(
    records: Iterable[Mapping[str, Any]],
    targets: Mapping[str, Mapping[str, Any]],
    every_run: bool = False,
) -> str:
    """The markdown table: one row per experiment × overrides × notes (see :func:`group_runs`),
    then the runs left out of it (see :func:`not_counted`)."""
    header = (
        "| experiment | overrides | metric | n | ours (mean ± std) | exact/bound | published "
        "| difference | best val | steps | epochs | wall time | hardware | notes |"
    )
    lines = [header, "|" + "---|" * 14]
    rows = group_runs(records, every_run)
    for row in rows:
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
        lines.append(
            f"| {row['experiment']} | {' '.join(row['overrides']) or '–'} | {row['metric']} | "
            f"{row['n']} | {ours} | {_exactness(row)} | "
            f"{_fmt(published_s)} | {diff} | "
            f"{_fmt(row['val_mean'])} | {_spread([r.get('steps') for r in runs])} | "
            f"{_spread([r.get('epochs') for r in runs])} | {_fmt(wall_s)} | "
            f"{', '.join(hardware) or '–'} | {_row_notes(row, every_run)} |"
        )
    left_out = not_counted(rows)
    return "\n".join(lines) + (f"\n\n{left_out}" if left_out else "")


def not_counted(rows: Sequence[Mapping[str, Any]]) -> str:
    """The runs no row's mean includes (failed, diverged, incomplete, running): one line each
    with its state, reason, last validation value and folder; empty when there are none."""
    runs = [r for row in rows for r in row["left_out"]]
    if not runs:
        return ""
    lines = [
        f"Runs left out of the table ({len(runs)}; `--all` shows every run as its own row):",
        "",
        "| experiment | overrides | seed | state | reason | best val | steps | folder |",
        "|" + "---|" * 8,
    ]
    for r in runs:
        reason = str(r.get("reason") or "–").replace("|", "\\|").replace("\n", " ")
        lines.append(
            f"| {r.get('experiment') or '(unnamed)'} | "
            f"{' '.join(kept_overrides(r.get('overrides') or [])) or '–'} | "
            f"{_fmt(r.get('seed'))} | {run_state(r)} | {reason} | {_fmt(_best_val(r))} | "
            f"{_fmt(r.get('steps'))} | {_where(r.get('source'))} |"
        )
    return "\n".join(lines)


def _where(source: Any) -> str:
    """A run's folder, relative to the current folder when it lies below it."""
    if not source:
        return "–"
    path = Path(str(source))
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except (ValueError, OSError):
        return str(source)


# --------------------------------------------------------------------------------------------
# command line
# --------------------------------------------------------------------------------------------


def _default_targets() -> Path | None:
    """``experiments/targets.yaml`` in the current folder, else in the checkout survae is
    imported from; None when neither exists (an installed package without a checkout)."""
    for base in (Path.cwd(), Path(__file__).resolve().parents[2]):
        if (base / TARGETS).is_file():
            return base / TARGETS
    return None


def _parser(prog: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=prog, description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    p.add_argument("folders", nargs="*", type=Path, help="default: outputs/ and multirun/")
    p.add_argument("--targets", type=Path, default=None, help=f"default: {TARGETS}")
    p.add_argument("--wandb", default=None, help="ENTITY/PROJECT on the W&B server")
    p.add_argument("--markdown", type=Path, default=None, help="also write the table here")
    p.add_argument("--plot", type=Path, default=None, help="metric vs swept value (PNG)")
    p.add_argument("--all", action="store_true", help="one row per run (no averaging)")
    return p


def main(argv: list[str] | None = None, prog: str = "survae-report") -> str:
    """Print (and return) the table of the runs under the folders; a sweep folder also gets
    ``report.md`` and ``report.png``. A missing folder or targets file stops with one line."""
    args = _parser(prog).parse_args(argv)
    targets_file = args.targets or _default_targets()
    if args.targets is not None and not args.targets.is_file():
        raise SystemExit(f"{prog}: --targets {args.targets} does not exist")
    missing = [str(f) for f in args.folders if not f.exists()]
    if missing:
        raise SystemExit(f"{prog}: no such folder: {', '.join(missing)}")
    folders = args.folders or [Path("outputs"), Path("multirun")]
    targets = (yaml.safe_load(targets_file.read_text()) or {}) if targets_file else {}
    records = list(collect_local(folders))
    if args.wandb:
        records += list(collect_wandb(args.wandb))
    text = table(records, targets, every_run=args.all)
    print(text)
    if not records:
        print(f"\n(no runs found under {', '.join(str(f) for f in folders)})")
    if targets_file is None:
        print(f"\n(no published numbers: {TARGETS} not found; --targets FILE names one)")
    sweep = folders[0] if len(folders) == 1 and folders[0].is_dir() else None
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


def cli() -> None:
    """The ``survae-report`` command."""
    main()


if __name__ == "__main__":
    main()
