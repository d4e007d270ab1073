"""Speed and memory benchmark of the paper workloads, built exactly as their experiment configs.

For each named workload (an experiment config, ``configs/experiment/NAME.yaml``) the Hydra
config is composed as ``run.py`` composes it, the model is built through
:class:`~survae.training.module.FlowModule` with the data module's ``data_info``, and the
optimiser and learning-rate schedule are built as the config says. On one fixed synthetic batch
(seed 0) it then measures, after untimed warm-up steps:

* a **training step** — ``zero_grad`` → ``FlowModule.training_step`` (the module's metric:
  bits/dim for images, −PPLL for point sets, nats for toy data, including its finite-loss
  check) → ``backward`` → gradient clipping when ``trainer.gradient_clip_val`` is set →
  optimiser step → scheduler step → EMA update when ``ema_decay`` is set;
* an **evaluation batch** — ``log_prob`` of the evaluation weights under ``no_grad`` in eval
  mode, then the metric (as ``FlowModule.validation_step``);
* a **sampled batch** — ``FlowModule.sample(batch)``;

plus the peak memory (CUDA ``max_memory_allocated`` on a GPU, the process's peak resident set
size on the CPU) and, as a sanity check, the untrained model's metric on the batch
(``loss_value``: bits/dim, PPLL or nats, in the metric's own sign) in eval mode, i.e. before any
data-dependent initialisation such as actnorm's — the reference protocol — and after it
(``loss_value_initialised``, train mode). Timings use ``time.perf_counter`` and synchronise
CUDA before every clock reading; warm-up steps (and with them any compilation, reported as
``compile_s``) are not timed.

Synthetic data (no files): images are uniform random ``uint8``; point sets uniform random
points in ``[0, 28)²`` (SpatialMNIST's square); toy data the registered toy data module's own
samples; tabular data standard normal (the UCI sets are standardised).

Since the resident-set peak belongs to a process, every (workload, speed variant) runs in its
own subprocess unless ``--in-process`` is given. Speed features (:mod:`survae.runtime.speed`) are
measured against themselves switched off in the same run; ``--ablate`` measures each one alone
and all together and reports the ratios ``baseline_ms / variant_ms``.

    python scripts/benchmark.py --workloads abs_flow_eight_gaussians,glow_cifar10 \\
        --device cpu --steps 10 --warmup 3 --json bench.json --markdown bench.md [--ablate]
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from survae.bench.official import OFFICIAL_WORKLOADS, official_markdown, run_official
from survae.bench.report import markdown
from survae.bench.runner import combine, run_workload
from survae.bench.timing import default_threads, measure
from survae.bench.workloads import (
    FEATURES,
    PAPER_WORKLOADS,
    SPLINE_WORKLOADS,
    compose_experiment,
    data_kind,
    plan_variants,
)
from survae.runtime.devices import DeviceUnavailableError, check_device


def _add_measurement_arguments(p: argparse.ArgumentParser) -> None:
    """What is measured: workloads, device, steps, batch, threads, config."""
    p.add_argument(
        "--workloads",
        default="paper",
        help="comma-separated experiment names; 'paper' = the paper workloads "
        f"({', '.join(PAPER_WORKLOADS)}); 'splines' = spline layers next to affine ones "
        f"({', '.join(SPLINE_WORKLOADS)})",
    )
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.add_argument("--steps", type=int, default=10, help="timed steps per measurement")
    p.add_argument(
        "--warmup", type=int, default=3, help="untimed warm-up steps (at least 2 with compile)"
    )
    p.add_argument("--batch", type=int, default=None, help="batch size (default: the config's)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: all cores)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--override",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra Hydra override for every workload (repeatable)",
    )
    p.add_argument("--config-dir", default=None, help="Hydra config folder (default: configs/)")
    p.add_argument("--timeout", type=float, default=None, help="seconds per subprocess")


def _add_output_arguments(p: argparse.ArgumentParser) -> None:
    """Where the results go."""
    p.add_argument("--json", default=None, help="write the results to this JSON file")
    p.add_argument("--markdown", default=None, help="write the results as markdown tables here")
    p.add_argument("--quiet", action="store_true", help="no progress lines on stderr")


def _add_feature_arguments(p: argparse.ArgumentParser) -> None:
    """The speed features and which variants of each workload run."""
    p.add_argument(
        "--preset",
        choices=("auto", "off"),
        default=None,
        help="speed.preset of survae's side: auto (run.py's default: channels-last for "
        "convolutional models, fused attention for point sets, compile for long toy runs) or "
        "off (the bare model). Workloads: auto adds a 'defaults' variant (the baseline is "
        "always the bare model); --official: survae runs with auto unless --preset off",
    )
    p.add_argument("--compile", action="store_true", help="torch.compile the training forward")
    p.add_argument(
        "--compile-mode",
        default=None,
        help="speed.compile_mode (default, reduce-overhead, max-autotune, ...)",
    )
    p.add_argument("--bf16", action="store_true", help="bf16 autocast of coupling networks")
    p.add_argument("--channels-last", action="store_true", help="channels-last image models")
    p.add_argument(
        "--memory-saving", action="store_true", help="reconstruct activations in backward"
    )
    p.add_argument("--memory-saving-anchor-every", type=int, default=None)
    p.add_argument(
        "--fused-attention",
        action="store_true",
        help="the point-set transformers' attention as one compiled CPU kernel",
    )
    p.add_argument(
        "--ablate",
        action="store_true",
        help="per workload: baseline, each feature alone (the flags given, or all), all on",
    )
    p.add_argument(
        "--no-baseline",
        action="store_true",
        help="with feature flags (no --ablate): measure only the flagged configuration",
    )
    p.add_argument(
        "--in-process",
        action="store_true",
        help="run everything in this process (peak RSS then covers all earlier workloads; "
        "with --peers: all libraries in one process instead of one process each)",
    )


def _add_comparison_arguments(p: argparse.ArgumentParser) -> None:
    """Comparisons with the official code and the peer libraries."""
    p.add_argument(
        "--official",
        default=None,
        metavar="PATH",
        help="a checkout of the official SurVAE code: time it back to back with survae on the "
        f"workloads that have an official counterpart ({', '.join(OFFICIAL_WORKLOADS)})",
    )
    p.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="with --official or --peers: interleaved rounds per workload",
    )
    p.add_argument(
        "--peers",
        action="store_true",
        help="survae against nflows / normflows / zuko / FrEIA on matched models "
        "(survae.bench.peers; libraries not installed are skipped)",
    )
    p.add_argument(
        "--default-heap",
        action="store_true",
        help="with --peers: leave glibc's heap thresholds (default: every library's process "
        "keeps its freed heap memory, survae.runtime.heap.retain_heap)",
    )
    p.add_argument("--child-spec", default=None, help=argparse.SUPPRESS)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="benchmark.py",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_measurement_arguments(p)
    _add_output_arguments(p)
    _add_feature_arguments(p)
    _add_comparison_arguments(p)
    return p


def _selected_features(args: argparse.Namespace) -> list[str]:
    flags = {
        "defaults": args.preset == "auto",
        "compile": args.compile,
        "bf16": args.bf16,
        "channels_last": args.channels_last,
        "memory_saving": args.memory_saving,
        "fused_attention": args.fused_attention,
    }
    return [name for name in FEATURES if flags[name]]


def _write_report(
    args: argparse.Namespace, report: dict[str, Any], table: Callable[[], str]
) -> dict[str, Any]:
    """Finish a run: ``report`` to ``--json``, then its Markdown ``table()`` to ``--markdown``
    and stdout (unless ``--quiet``); returns ``report``."""
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    text = table()
    if args.markdown:
        Path(args.markdown).write_text(text)
    if not args.quiet:
        print(text)
    return report


def _workload_names(spec: str) -> list[str]:
    """``--workloads``: experiment names, with ``paper`` and ``splines`` expanded."""
    names = []
    for item in spec.split(","):
        item = item.strip()
        if item == "paper":
            names += list(PAPER_WORKLOADS)
        elif item == "splines":
            names += list(SPLINE_WORKLOADS)
        elif item:
            names.append(item)
    return names


def _common(args: argparse.Namespace, device: str) -> dict[str, Any]:
    """The measurement settings every workload and variant shares."""
    speed_extra: dict[str, Any] = {}
    if args.compile_mode is not None:
        speed_extra["compile_mode"] = args.compile_mode
    if args.memory_saving_anchor_every is not None:
        speed_extra["memory_saving_anchor_every"] = args.memory_saving_anchor_every
    return {
        "device": device,
        "steps": args.steps,
        "warmup": args.warmup,
        "batch": args.batch,
        "threads": args.threads or default_threads(),
        "overrides": list(args.override),
        "speed_extra": speed_extra,
        "seed": args.seed,
        "config_dir": args.config_dir,
    }


def _main_peers(
    args: argparse.Namespace, names: list[str], log: Callable[[str], None]
) -> dict[str, Any]:
    """``--peers``: survae against the peer libraries on matched models."""
    from survae.bench.peers import PEER_MODELS, peers_markdown, run_peers

    models = list(PEER_MODELS) if args.workloads == "paper" else names
    unknown = sorted(set(models) - set(PEER_MODELS))
    if unknown:
        raise SystemExit(f"--peers: unknown model(s) {unknown}; valid: {list(PEER_MODELS)}")
    peers = run_peers(
        models,
        rounds=args.rounds,
        steps=args.steps,
        warmup=args.warmup,
        threads=args.threads or 1,
        seed=args.seed,
        isolate=not args.in_process,
        retain_heap=not args.default_heap,
        preset=args.preset or "auto",
        log=log,
    )
    for lib, why in peers["skipped"].items():
        log(f"[peers] {lib}: skipped ({why}; pip install '.[peers]')")
    return _write_report(args, {"peers": peers}, lambda: peers_markdown(peers))


def _main_official(
    args: argparse.Namespace,
    names: list[str],
    common: dict[str, Any],
    selected: list[str],
    log: Callable[[str], None],
) -> dict[str, Any]:
    """``--official PATH``: survae against the official code, back to back."""
    if args.rounds < 1:
        raise SystemExit("--rounds must be at least 1")
    if args.workloads == "paper":
        names = list(OFFICIAL_WORKLOADS)
    if args.preset is None:  # survae as run.py runs it: the auto preset, flags on top
        selected = ["defaults", *selected]
    report = run_official(
        names, args.official, common, args.rounds, args.timeout, log, features=selected
    )
    return _write_report(args, {"official": report}, lambda: official_markdown(report))


def _main_workloads(
    args: argparse.Namespace,
    names: list[str],
    common: dict[str, Any],
    selected: list[str],
    log: Callable[[str], None],
) -> dict[str, Any]:
    """Every workload in its planned variants."""
    report: dict[str, Any] = {}
    for name in names:
        try:
            kind = data_kind(compose_experiment(name, args.override, args.config_dir))
        except Exception as exc:
            log(f"[benchmark] {name}: config does not compose: {type(exc).__name__}: {exc}")
            report[name] = {"error": f"config does not compose: {type(exc).__name__}: {exc}"}
            continue
        plan = plan_variants(kind, selected, args.ablate, baseline=not args.no_baseline)
        results = run_workload(name, plan, common, args.in_process, args.timeout, log)
        primary = "baseline" if args.ablate else plan[-1][0]
        report[name] = combine(results, primary)
        if args.json:  # written after every workload: a long run keeps what it has measured
            Path(args.json).write_text(json.dumps(report, indent=2))
    return _write_report(args, report, lambda: markdown(report))


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the benchmark from command-line arguments and return the JSON report
    ``{workload: {params, batch, train_ms_median, train_ms_min, eval_ms_median, sample_ms,
    peak_mem_mb, loss_value, loss_unit, device, torch_version, speed_options, ...}}``, with
    ``variants`` and ``ratios`` for workloads measured in more than one configuration."""
    args = _parser().parse_args(argv)
    if args.child_spec is not None:  # one measurement in a subprocess
        result = measure(**json.loads(args.child_spec), isolated=True)
        Path(args.json).write_text(json.dumps(result, indent=2))
        return result

    log = (lambda s: None) if args.quiet else (lambda s: print(s, file=sys.stderr, flush=True))
    names = _workload_names(args.workloads)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    check_device(device)  # an absent device stops here, before any workload is composed
    selected = _selected_features(args)
    common = _common(args, device)
    if args.peers:
        return _main_peers(args, names, log)
    if args.official:
        return _main_official(args, names, common, selected, log)
    return _main_workloads(args, names, common, selected, log)


def failed(report: Mapping[str, Any]) -> list[str]:
    """Names of the workloads of ``report`` with a failed measurement (in any variant)."""
    if set(report) == {"official"}:  # a back-to-back comparison with the official code
        report = report["official"]
    if set(report) == {"peers"}:  # peer libraries: failures raise
        return []
    return [
        name
        for name, entry in report.items()
        if "error" in entry or any("error" in r for r in (entry.get("variants") or {}).values())
    ]


def cli(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point: 0 when every measurement succeeded, 1 otherwise; 2 with one
    line on stderr when the device is absent."""
    try:
        report = main(argv)
    except DeviceUnavailableError as err:
        print(f"benchmark: {err}", file=sys.stderr)
        return 2
    if "workload" in report:  # a subprocess's single measurement
        return 0
    return 1 if failed(report) else 0


if __name__ == "__main__":
    sys.exit(cli())
