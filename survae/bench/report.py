"""The benchmark's results as Markdown tables."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from survae.bench.workloads import _SWITCHES


def _fmt_ms(v: Any) -> str:
    if not isinstance(v, (int, float)):
        return "–"
    return f"{v:,.1f}" if v < 1000 else f"{v:,.0f}"


def _fmt_rate(r: Mapping[str, Any]) -> str:
    """Achieved GFLOP/s of the training step and its share of the measured peak of the
    precision its FLOPs ran in (a mixed step: the GFLOP/s of each precision, and the share of
    the step its work would take at those precisions' peaks)."""
    rate, frac = r.get("train_gflops_per_s"), r.get("flops_fraction_of_peak")
    if not isinstance(rate, (int, float)) or not isinstance(frac, (int, float)):
        return "–"
    by, peak = r.get("train_flops_by_precision") or {}, r.get("peak_gflops_per_s")
    seconds = r["train_ms_median"] / 1e3 if r.get("train_ms_median") else None
    if isinstance(peak, Mapping) and len(by) > 1 and seconds:
        parts = ", ".join(f"{p} {f / seconds / 1e9:,.1f}" for p, f in sorted(by.items()))
        peaks = ", ".join(f"{p} {peak[p]:,.0f}" for p in sorted(by))
        return f"{parts} GFLOP/s, {100 * frac:.0f} % of peak ({peaks})"
    if isinstance(peak, Mapping) and len(by) == 1:
        (p,) = by
        return f"{rate:,.1f} GFLOP/s, {100 * frac:.0f} % of {p} peak {peak[p]:,.0f}"
    return f"{rate:,.1f} GFLOP/s, {100 * frac:.0f} % of peak"


def _first_line(message: str) -> str:
    return (message.splitlines() or [""])[0].replace("|", "\\|")


def _fmt_ratio(v: Any) -> str:
    return f"{v:.2f}×" if isinstance(v, (int, float)) else "–"


def markdown(report: Mapping[str, Mapping[str, Any]]) -> str:
    """The results as markdown: one row per workload and, where several variants ran, a table
    of every variant with its ratios to the baseline."""
    lines = [
        "| workload | batch | params | train ms (median) | train ms (min) | eval ms | sample ms "
        "| peak MB | untrained loss | device | speed | train GFLOP/s (of peak) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in report.items():
        if "error" in r:
            lines.append(f"| `{name}` | | | failed: {_first_line(r['error'])} | | | | | | | | |")
            continue
        on = [k for k in _SWITCHES if r["speed_options"].get(k)]
        lines.append(
            f"| `{name}` | {r['batch']} | {r['params']:,} | {_fmt_ms(r['train_ms_median'])} "
            f"| {_fmt_ms(r['train_ms_min'])} | {_fmt_ms(r['eval_ms_median'])} "
            f"| {_fmt_ms(r.get('sample_ms'))} | {r['peak_mem_mb']:,.0f} "
            f"| {r['loss_value']:.3f} {r['loss_unit']} | {r['device']} "
            f"| {', '.join(on) or 'baseline'} | {_fmt_rate(r)} |"
        )
    ablated = {k: v for k, v in report.items() if "variants" in v}
    if ablated:
        lines += [
            "",
            "Ratios are baseline / variant (> 1: faster, or less memory, with the variant).",
            "",
            "| workload | variant | train ms | × train | eval ms | × eval | sample ms | × sample "
            "| peak MB | × memory | untrained loss | compile s |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for name, entry in ablated.items():
            rat = entry.get("ratios", {})
            for variant, r in entry["variants"].items():
                if "error" in r:
                    msg = _first_line(r["error"])
                    lines.append(f"| `{name}` | {variant} | failed: {msg} |" + " |" * 9)
                    continue
                q = rat.get(variant, {})
                comp = r.get("compile_s")
                lines.append(
                    f"| `{name}` | {variant} | {_fmt_ms(r['train_ms_median'])} "
                    f"| {_fmt_ratio(q.get('train'))} | {_fmt_ms(r['eval_ms_median'])} "
                    f"| {_fmt_ratio(q.get('eval'))} | {_fmt_ms(r['sample_ms'])} "
                    f"| {_fmt_ratio(q.get('sample'))} | {r['peak_mem_mb']:,.0f} "
                    f"| {_fmt_ratio(q.get('peak_mem'))} | {r['loss_value']:.3f} "
                    f"| {'–' if comp is None else f'{comp:.1f}'} |"
                )
    return "\n".join(lines) + "\n"
