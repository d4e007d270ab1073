"""survae against the official SurVAE code, back to back on the paper workloads: each side in
its own process, on the same batch, steps, warm-up and threads, the order alternating."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from survae.bench.report import _first_line, _fmt_ms
from survae.bench.runner import _run_child
from survae.bench.workloads import _datamodule, compose_experiment, synthetic_batch

_TOY_ARGS = [
    "--hidden_units",
    "[200,100]",
    "--dataset",
    "eight_gaussians",
    "--scale_fn",
    "softplus",
]

_IMAGE_ARGS = (
    "--epochs 500 --batch_size 32 --optimizer adamax --lr 1e-3 --gamma 0.995 --eval_every 1 "
    "--check_every 10 --warmup 5000 --num_steps 12 --num_scales 2 --dequant flow --pooling {} "
    "--dataset cifar10 --augmentation eta"
)

_POINT_ARGS = ["--epochs", "500", "--num_flows", "32", "--warmup", "2000", "--gamma", "0.995"]

#: the official experiment behind each SurVAE workload: data kind, script (relative to its
#: experiments folder), the README's arguments, and survae overrides for a like-for-like model
#: (the official point-flow scripts default to dropout 0, the paper's tuned runs use 0.1/0.2)
OFFICIAL_WORKLOADS: dict[str, dict[str, Any]] = {
    "abs_flow_eight_gaussians": {
        "kind": "toy",
        "script": "train_abs_flow.py",
        "argv": _TOY_ARGS,
        "overrides": [],
    },
    "plain_flow_eight_gaussians": {
        "kind": "toy",
        "script": "train_flow.py",
        "argv": _TOY_ARGS,
        "overrides": [],
    },
    "maxpool_flow_cifar10": {
        "kind": "image",
        "script": "train.py",
        "argv": _IMAGE_ARGS.format("max").split(),
        "overrides": [],
    },
    "slice_flow_cifar10": {
        "kind": "image",
        "script": "train.py",
        "argv": _IMAGE_ARGS.format("none").split(),
        "overrides": [],
    },
    "permute_flow_spatial_mnist": {
        "kind": "points",
        "script": "train_perm_flow.py",
        "argv": _POINT_ARGS,
        "overrides": ["model.dropout=0.0"],
    },
    "sort_flow_spatial_mnist": {
        "kind": "points",
        "script": "train_sort_flow.py",
        "argv": _POINT_ARGS,
        "overrides": ["model.dropout=0.0"],
    },
}

#: the official toy AbsFlow asserts its Logit input lies in [0, 1] (data within ±4)
OFFICIAL_TOY_CLAMP = 3.99


def _run_official_child(
    spec: Mapping[str, Any], batch: torch.Tensor, timeout: float | None
) -> dict[str, Any]:
    """:mod:`survae.bench.official_harness` in a fresh, isolated Python process (``-I``: no
    PYTHONPATH, so nothing of this project is importable there)."""
    import numpy as np

    harness = Path(__file__).resolve().parent / "official_harness.py"
    with tempfile.TemporaryDirectory(prefix="survae-official-") as tmp:
        np.save(Path(tmp) / "batch.npy", batch.numpy())
        spec_file, out = Path(tmp) / "spec.json", Path(tmp) / "result.json"
        spec_file.write_text(json.dumps({**spec, "batch": str(Path(tmp) / "batch.npy")}))
        cmd = [sys.executable, "-I", str(harness), str(spec_file), str(out)]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return {"error": f"official code timed out after {timeout} s"}
        if proc.returncode != 0 or not out.is_file():
            tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-15:])
            return {"error": f"official code exited with {proc.returncode}:\n{tail}"}
        return json.loads(out.read_text())


def official_batch(workload: str, batch: int | None, seed: int = 0) -> torch.Tensor:
    """The fixed batch survae's measurement of ``workload`` uses, in the official code's
    dtype (images: integer levels as int64, as its ``Quantize`` gives; toy: clamped into the
    official AbsFlow's range, :data:`OFFICIAL_TOY_CLAMP`)."""
    info = OFFICIAL_WORKLOADS[workload]
    cfg = compose_experiment(workload, info["overrides"])
    size = int(batch or cfg["data"]["batch_size"])
    x = synthetic_batch(_datamodule(cfg, size, seed), size, seed)
    if info["kind"] == "image":
        return x.long()
    if info["kind"] == "toy":
        return x.clamp(-OFFICIAL_TOY_CLAMP, OFFICIAL_TOY_CLAMP).contiguous()
    return x.float().contiguous()


def spread(values: Sequence[float]) -> dict[str, float]:
    """Median, minimum and maximum of ``values``."""
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def _specs(
    workload: str, official: Path, common: Mapping[str, Any], features: Sequence[str]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The measurement specs of survae's side and of the official side of one workload."""
    info = OFFICIAL_WORKLOADS[workload]
    ours = {
        **common,
        "workload": workload,
        "features": list(features),
        "overrides": [*common.get("overrides", []), *info["overrides"]],
        "evaluate": False,
        "flops": False,
    }
    theirs = {
        "official": str(official),
        "kind": info["kind"],
        "script": info["script"],
        "argv": info["argv"],
        "steps": common["steps"],
        "warmup": common["warmup"],
        "threads": common["threads"],
        "seed": common.get("seed", 0),
    }
    return ours, theirs


def _rounds(
    workload: str,
    specs: tuple[dict[str, Any], dict[str, Any]],
    x: torch.Tensor,
    rounds: int,
    timeout: float | None,
    log: Callable[[str], None],
    entry: dict[str, Any],
) -> None:
    """Run the interleaved rounds into ``entry`` (stopping at the first failed measurement)."""
    ours_spec, theirs_spec = specs
    for r in range(rounds):
        order = ("survae", "official") if r % 2 == 0 else ("official", "survae")
        got: dict[str, dict[str, Any]] = {}
        for side in order:
            log(f"[benchmark] {workload} round {r + 1}/{rounds}: {side} ...")
            if side == "survae":
                got[side] = _run_child(ours_spec, timeout)
            else:
                got[side] = _run_official_child(theirs_spec, x, timeout)
        entry["order"].append(list(order))
        for side in order:
            entry[side].append(got[side])
        if any("error" in g for g in got.values()):
            errors = {k: v["error"] for k, v in got.items() if "error" in v}
            entry["error"] = "; ".join(f"{k}: {v}" for k, v in errors.items())
            log(f"[benchmark] {workload}: FAILED: {entry['error']}")
            return
        ratio = got["official"]["train_ms_median"] / got["survae"]["train_ms_median"]
        entry["ratios"].append(ratio)
        log(
            f"[benchmark] {workload} round {r + 1}: survae "
            f"{_fmt_ms(got['survae']['train_ms_median'])} ms, official "
            f"{_fmt_ms(got['official']['train_ms_median'])} ms, ratio {ratio:.2f}"
        )


def _summarise(entry: dict[str, Any]) -> None:
    """Add the ratios' spread, both sides' times, parameters and untrained losses."""
    entry["ratio"] = spread(entry["ratios"])
    # the fastest step of each round: steadier than the median when other processes take the
    # cores for part of a round
    entry["ratio_of_minima"] = spread(
        [o["train_ms_min"] / s["train_ms_min"] for s, o in zip(entry["survae"], entry["official"])]
    )
    cpu = [(o.get("train_cpu_ms_median"), s.get("train_cpu_ms_median"))
           for s, o in zip(entry["survae"], entry["official"])]  # fmt: skip
    if all(a and b for a, b in cpu):
        entry["cpu_ratio"] = spread([a / b for a, b in cpu])
    entry["survae_ms"] = spread([g["train_ms_median"] for g in entry["survae"]])
    entry["official_ms"] = spread([g["train_ms_median"] for g in entry["official"]])
    first = entry["survae"][0], entry["official"][0]
    entry["params"] = {"survae": first[0]["params"], "official": first[1]["params"]}
    entry["survae_retain_heap"] = bool(first[0].get("retain_heap"))
    compile_s = [g["compile_s"] for g in entry["survae"] if g.get("compile_s") is not None]
    if compile_s:
        entry["survae_compile_s"] = spread(compile_s)
    entry["loss_value"] = {"survae": first[0]["loss_value"], "official": first[1]["loss_value"]}


def run_official(
    workloads: Sequence[str],
    official: str | Path,
    common: Mapping[str, Any],
    rounds: int = 3,
    timeout: float | None = None,
    log: Callable[[str], None] = lambda s: None,
    features: Sequence[str] = (),
) -> dict[str, dict[str, Any]]:
    """survae against the official code, back to back: per workload, ``rounds`` rounds of one
    survae measurement and one official measurement (each in its own process, same batch,
    steps, warm-up and threads), the order alternating between rounds. Returns per workload the
    per-round medians, the per-round ratios ``official ms / survae ms`` (> 1: survae faster)
    and their median with minimum and maximum. ``features`` switches survae speed features on
    for survae's side (e.g. ``["compile"]``; none by default); the report names them, and a
    compiled side reports its one-time compilation seconds (never part of the timed steps)."""
    official = Path(official).resolve()
    if not (official / "survae" / "flows").is_dir() or not (official / "experiments").is_dir():
        raise ValueError(f"--official {official}: not a checkout of the official SurVAE code")
    report: dict[str, dict[str, Any]] = {}
    for workload in workloads:
        if workload not in OFFICIAL_WORKLOADS:
            valid = ", ".join(OFFICIAL_WORKLOADS)
            report[workload] = {"error": f"no official counterpart; valid: {valid}"}
            continue
        x = official_batch(workload, common.get("batch"), common.get("seed", 0))
        entry: dict[str, Any] = {
            "survae": [], "official": [], "ratios": [], "order": [],
            "survae_features": list(features),
        }  # fmt: skip
        specs = _specs(workload, official, common, features)
        _rounds(workload, specs, x, rounds, timeout, log, entry)
        if entry["ratios"]:
            _summarise(entry)
        report[workload] = entry
    return report


def official_markdown(report: Mapping[str, Mapping[str, Any]]) -> str:
    """The back-to-back comparison as a markdown table: median per-step times of each side
    and the median ratio (official / survae) with its range over the rounds."""
    lines = [
        "| workload | params (survae / official) | train ms survae | train ms official "
        "| ratio (median) | ratio range | ratio of fastest steps (range) | rounds "
        "| untrained loss (s / o) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, e in report.items():
        if "ratio" not in e:
            lines.append(f"| `{name}` | failed: {_first_line(e.get('error', '?'))} |" + " |" * 7)
            continue
        q, p, lv = e["ratio"], e["params"], e["loss_value"]
        m = e.get("ratio_of_minima")
        fastest = f"{m['median']:.2f} ({m['min']:.2f}–{m['max']:.2f})" if m else "–"
        label = f"`{name}`"
        if e.get("survae_features"):
            label += ", survae + " + " + ".join(e["survae_features"])
        if e.get("survae_compile_s"):
            label += f" ({e['survae_compile_s']['median']:.1f} s compilation, untimed)"
        lines.append(
            f"| {label} | {p['survae']:,} / {p['official']:,} "
            f"| {_fmt_ms(e['survae_ms']['median'])} | {_fmt_ms(e['official_ms']['median'])} "
            f"| **{q['median']:.2f}** | {q['min']:.2f}–{q['max']:.2f} | {fastest} "
            f"| {len(e['ratios'])} "
            f"| {lv['survae']:.3f} / {lv['official']:.3f} |"
        )
    cpu = {k: e["cpu_ratio"] for k, e in report.items() if "cpu_ratio" in e}
    if cpu:
        lines += [
            "",
            "Ratio of CPU time per step (official / survae, each process's CPU seconds: "
            "steadier than wall time when other processes share the cores; at one thread "
            "the same work): "
            + "; ".join(
                f"`{k}` {q['median']:.2f} ({q['min']:.2f}–{q['max']:.2f})" for k, q in cpu.items()
            )
            + ".",
        ]
    if any(e.get("survae_retain_heap") for e in report.values()):
        lines += [
            "",
            "survae's side kept its freed heap memory (`retain_heap=true`, as `run.py` runs "
            "it; survae.runtime.heap); the official code ran with glibc's default thresholds. "
            "`--override retain_heap=false` measures survae without it.",
        ]
    return "\n".join(lines) + "\n"
