"""Running a workload's variants, each in its own process by default (the resident-set peak
belongs to a process), and combining them into one report entry with ratios."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import traceback
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from survae.bench.report import _fmt_ms, _fmt_rate
from survae.bench.timing import measure


def ratios(base: Mapping[str, Any], other: Mapping[str, Any]) -> dict[str, float | None]:
    """``baseline / variant`` for the median timings and the peak memory (> 1: faster or
    smaller with the variant)."""

    def ratio(key: str) -> float | None:
        a, b = base.get(key), other.get(key)
        if not isinstance(a, (int, float)) or not isinstance(b, (int, float)) or b <= 0:
            return None
        return a / b

    return {
        "train": ratio("train_ms_median"),
        "eval": ratio("eval_ms_median"),
        "sample": ratio("sample_ms"),
        "peak_mem": ratio("peak_mem_mb"),
    }


def _run_child(spec: Mapping[str, Any], timeout: float | None) -> dict[str, Any]:
    """:func:`measure` in a fresh Python process (its own peak RSS and CUDA context)."""
    with tempfile.TemporaryDirectory(prefix="survae-bench-") as tmp:
        out = Path(tmp) / "result.json"
        cmd = [
            sys.executable,
            "-m",
            "survae.bench.benchmark",
            "--child-spec",
            json.dumps(spec),
            "--json",
            str(out),
        ]
        env = dict(os.environ)
        root = str(Path(__file__).resolve().parents[2])
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
        try:
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return {"error": f"timed out after {timeout} s"}
        if proc.returncode != 0 or not out.is_file():
            tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-15:])
            return {"error": f"subprocess exited with {proc.returncode}:\n{tail}"}
        return json.loads(out.read_text())


def run_workload(
    workload: str,
    plan: Sequence[tuple[str, tuple[str, ...]]],
    common: Mapping[str, Any],
    in_process: bool,
    timeout: float | None = None,
    log: Callable[[str], None] = lambda s: None,
) -> dict[str, dict[str, Any]]:
    """Run every variant of ``plan``; returns ``{variant: result or {"error": ...}}``."""
    results: dict[str, dict[str, Any]] = {}
    for name, features in plan:
        log(f"[benchmark] {workload} / {name} ...")
        spec = {"workload": workload, "features": list(features), **common}
        if in_process:
            try:
                results[name] = measure(**spec, isolated=False)
            except Exception as exc:  # keep going: report the failure in the results
                log(traceback.format_exc())
                results[name] = {"error": f"{type(exc).__name__}: {exc}"}
        else:
            results[name] = _run_child(spec, timeout)
        r = results[name]
        if "error" in r:
            log(f"[benchmark] {workload} / {name}: FAILED: {r['error']}")
        else:
            log(
                f"[benchmark] {workload} / {name}: train {_fmt_ms(r['train_ms_median'])} ms "
                f"({_fmt_rate(r)}), eval {_fmt_ms(r.get('eval_ms_median'))} ms, "
                f"sample {_fmt_ms(r.get('sample_ms'))} ms, peak {r['peak_mem_mb']:.0f} MB, "
                f"loss {r['loss_value']:.3f} {r['loss_unit']}"
            )
    return results


def combine(results: Mapping[str, Mapping[str, Any]], primary: str) -> dict[str, Any]:
    """One workload's JSON entry: the ``primary`` variant's fields at the top level, and with
    more than one variant, ``variants`` (every variant's result) and ``ratios`` (baseline over
    each other variant)."""
    entry = dict(results[primary])
    if len(results) > 1:
        entry["variants"] = {k: dict(v) for k, v in results.items()}
        base = results.get("baseline")
        if base is not None and "error" not in base:
            entry["ratios"] = {k: ratios(base, v) for k, v in results.items() if k != "baseline"}
    return entry
