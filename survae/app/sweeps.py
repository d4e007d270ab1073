"""Sweep folders for the report: which folder is a Hydra multirun, which override keys were
swept, and the plot of the metric against the swept value (one line per combination of the
other swept keys; error bars: std over seeds; ``n`` beside each point)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any


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
