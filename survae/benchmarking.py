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
own subprocess unless ``--in-process`` is given. Speed features (:mod:`survae.speed`) are
measured against themselves switched off in the same run; ``--ablate`` measures each one alone
and all together and reports the ratios ``baseline_ms / variant_ms``.

    python scripts/benchmark.py --workloads abs_flow_eight_gaussians,glow_cifar10 \\
        --device cpu --steps 10 --warmup 3 --json bench.json --markdown bench.md [--ablate]
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from survae.devices import DeviceUnavailableError, check_device
from survae.malloc import retain_heap

#: the workloads of the papers, each run with its paper's batch size by default
PAPER_WORKLOADS: tuple[str, ...] = (
    "abs_flow_eight_gaussians",
    "plain_flow_eight_gaussians",
    "maxpool_flow_cifar10",
    "slice_flow_cifar10",
    "permute_flow_spatial_mnist",
    "sort_flow_spatial_mnist",
    "glow_cifar10",
    "flowpp_cifar10",
)

#: spline layers next to their affine counterparts (``--workloads splines``): 2-D couplings
#: (affine baseline vs RQ-NSF (C) on the checkerboard), tabular couplings (RealNVP vs RQ-NSF (C)
#: on POWER) and tabular autoregressive layers (MAF vs RQ-NSF (AR) on POWER)
SPLINE_WORKLOADS: tuple[str, ...] = (
    "plain_flow_checkerboard",
    "nsf_checkerboard",
    "realnvp_power",
    "nsf_power",
    "maf_power",
    "nsf_ar_power",
)

#: speed features: variant name → the :func:`survae.speed.apply_speed_options` keys it sets
FEATURES: dict[str, dict[str, bool]] = {
    "compile": {"compile": True},
    "bf16": {"bf16_couplings": True},
    "channels_last": {"channels_last": True},
    "memory_saving": {"memory_saving": True},
    "fused_attention": {"fused_attention": True},
}
#: features that only change anything for one data kind (channels-last: 4-D image models;
#: fused attention: the point-set transformers); skipped by ``--ablate`` for the others
FEATURE_KIND: dict[str, str] = {"channels_last": "image", "fused_attention": "points"}
#: the boolean speed switches, all off in the baseline
_SWITCHES = ("compile", "bf16_couplings", "channels_last", "memory_saving", "fused_attention")

#: the configs of a source checkout (``survae/`` next to ``configs/``)
CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"

#: point sets are drawn uniformly from this square (SpatialMNIST: 28 × 28 pixels)
POINT_RANGE = 28.0

#: the LR schedule's epoch length; any value gives the same per-step cost
NOMINAL_STEPS_PER_EPOCH = 1000

#: warm-up training steps when compiling (first compilation, then recompilations)
MIN_COMPILE_WARMUP = 2

LOSS_UNITS = {"bpd": "bits/dim", "ppll": "PPLL (nats/point)", "nll": "nats"}

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


# --------------------------------------------------------------------------- config and data
def compose_experiment(
    name: str, overrides: Sequence[str] = (), config_dir: str | Path | None = None
) -> dict[str, Any]:
    """The resolved config of ``experiment=NAME`` (plus Hydra ``overrides``) as a plain dict,
    composed as ``run.py`` composes it (nothing is written: no run directory is created)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf, open_dict

    try:  # the configs' own resolvers (run names), where this version has them
        from survae.training.resolvers import register as register_resolvers
    except ImportError:
        pass
    else:
        register_resolvers()
    config_dir = Path(config_dir or CONFIG_DIR).resolve()
    if not (config_dir / "experiment" / f"{name}.yaml").is_file():
        known = sorted(p.stem for p in (config_dir / "experiment").glob("*.yaml"))
        raise ValueError(f"unknown workload {name!r}: no experiment config; valid: {known}")
    out_dir = os.path.join(tempfile.gettempdir(), "survae-benchmark")  # a name only: unused
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(config_dir), version_base="1.3"):
            cfg = compose(
                "train",
                overrides=[f"experiment={name}", "logger=none", *overrides],
                return_hydra_config=True,
            )
            with open_dict(cfg):
                cfg.hydra.runtime.output_dir = out_dir
                cfg.hydra.job.num = 0
            HydraConfig.instance().set_config(cfg)
            cfg.paths.output_dir = out_dir
            container = OmegaConf.to_container(cfg, resolve=True)
    finally:
        GlobalHydra.instance().clear()
    container.pop("hydra", None)
    return container


def data_kind(cfg: Mapping[str, Any]) -> str:
    """The data kind (``image``, ``points``, ``tabular``, ``toy``) of a composed config."""
    import survae  # noqa: F401  (registers the data modules)
    from survae import registry

    return registry.get("dataset", cfg["data"]["name"]).kind


def _datamodule(cfg: Mapping[str, Any], batch: int, seed: int):
    """The config's data module with the benchmark batch size (toy splits shrunk to one batch:
    their samples are generated, not read)."""
    import inspect

    from survae import registry
    from survae.training.pipeline import build_datamodule

    data = dict(cfg["data"])
    data["batch_size"] = batch
    data["num_workers"] = 0
    data["pin_memory"] = False
    params: set[str] = set()
    for klass in registry.get("dataset", data["name"]).__mro__:
        if "__init__" in vars(klass):
            params |= set(inspect.signature(klass.__init__).parameters)
    for key, value in (("train_size", batch), ("val_size", 1), ("test_size", 1)):
        if key in params:
            data[key] = value
    return build_datamodule(data, seed)


def synthetic_batch(dm: Any, batch: int, seed: int = 0) -> torch.Tensor:
    """One fixed batch of the data module's dtype and shape (see the module docstring)."""
    gen = torch.Generator().manual_seed(seed)
    shape = (batch, *dm.shape)
    if dm.kind == "image":
        levels = int(dm.num_bins or 256)
        return torch.randint(0, levels, shape, generator=gen, dtype=torch.int64).to(torch.uint8)
    if dm.kind == "points":
        x = torch.rand(shape, generator=gen) * POINT_RANGE
        return x.clamp_max(math.nextafter(POINT_RANGE, 0.0))
    if dm.kind == "toy":
        dm.setup("fit")
        return next(iter(dm.train_dataloader()))[:batch].float()
    return torch.randn(shape, generator=gen)


# --------------------------------------------------------------------------- measurement
def _sync(device: torch.device) -> Callable[[], None]:
    if device.type == "cuda":
        return lambda: torch.cuda.synchronize(device)
    return lambda: None


def _compiled_graphs() -> int:
    """Graphs ``torch.compile`` has compiled so far in this process."""
    from torch._dynamo.utils import counters

    return int(counters["stats"]["unique_graphs"])


def _timed(fn: Callable[[int], Any], count: int, sync: Callable[[], None]) -> list[float]:
    """Seconds per call of ``fn(i)`` for ``count`` calls, synchronised before each reading."""
    times = []
    for i in range(count):
        sync()
        start = time.perf_counter()
        fn(i)
        sync()
        times.append(time.perf_counter() - start)
    return times


def peak_rss_mb() -> float:
    """This process's peak resident set size in MiB (``getrusage``)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10  # bytes vs KiB


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def count_flops(fn: Callable[[int], Any], i: int = 0) -> int:
    """Floating-point operations of the matrix products and convolutions (forward and
    backward) that ``fn(i)`` runs, counted by :class:`torch.utils.flop_counter.FlopCounterMode`
    (elementwise work is not counted: this is the work a matrix unit could do)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn(i)
    return int(counter.get_total_flops())


_PEAK_CACHE: dict[tuple[str, int], float] = {}


def peak_flops(device: torch.device | str = "cpu", n: int = 2048, repeats: int = 5) -> float:
    """This machine's measured float32 peak in FLOP/s: the best of ``repeats`` timed
    ``n × n`` matrix products (``2n³`` FLOPs each) on the current torch thread count.
    Cached per device and thread count."""
    dev = torch.device(device)
    key = (str(dev), torch.get_num_threads())
    if key not in _PEAK_CACHE:
        sync = _sync(dev)
        gen = torch.Generator().manual_seed(0)
        a = torch.randn(n, n, generator=gen).to(dev)
        b = torch.randn(n, n, generator=gen).to(dev)
        a @ b  # warm-up
        best = min(_timed(lambda i: a @ b, repeats, sync))
        _PEAK_CACHE[key] = 2.0 * n**3 / best
    return _PEAK_CACHE[key]


def default_threads() -> int:
    """All cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def variant_speed(cfg: Mapping[str, Any], features: Sequence[str]) -> dict[str, Any]:
    """The speed options of a variant: the config's own (modes, anchors) with every switch off,
    then the named ``features`` on."""
    from survae.speed import SPEED_DEFAULTS

    speed = {**SPEED_DEFAULTS, **dict(cfg.get("speed") or {})}
    for key in _SWITCHES:
        speed[key] = False
    for name in features:
        speed.update(FEATURES[name])
    return speed


def measure(
    workload: str,
    features: Sequence[str] = (),
    *,
    device: str = "cpu",
    steps: int = 10,
    warmup: int = 3,
    batch: int | None = None,
    threads: int | None = None,
    overrides: Sequence[str] = (),
    speed_extra: Mapping[str, Any] | None = None,
    seed: int = 0,
    config_dir: str | Path | None = None,
    isolated: bool = False,
    evaluate: bool = True,
    flops: bool = True,
) -> dict[str, Any]:
    """Measure one workload with the speed ``features`` on (the others off) in this process.

    ``speed_extra`` sets further speed options (``compile_mode``,
    ``memory_saving_anchor_every``). ``isolated`` records that this process runs nothing else
    (its peak RSS is this workload's). ``evaluate=False`` times only the training step (no
    evaluation or sampling). ``flops`` counts the matrix-product and convolution FLOPs of one
    extra (untimed) training step and reports the achieved rate against this machine's
    measured peak (:func:`peak_flops`). Returns the result mapping (see :func:`main`).
    """
    import survae  # noqa: F401  (torchvision shim, registrations)
    from survae.training.module import FlowModule
    from survae.training.optim import build_optimizer, build_scheduler
    from survae.training.pipeline import data_info

    if steps < 1 or warmup < 0:
        raise ValueError(f"steps must be >= 1 and warmup >= 0, got {steps} and {warmup}")
    dev = check_device(device)
    if threads is not None:
        torch.set_num_threads(int(threads))
    sync = _sync(dev)
    gc.collect()
    if dev.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(dev)

    started = time.perf_counter()
    cfg = compose_experiment(workload, overrides, config_dir)
    heap_retained = bool(cfg.get("retain_heap", True)) and retain_heap()  # as run.py does
    batch = int(batch or cfg["data"]["batch_size"])
    dm = _datamodule(cfg, batch, seed)
    info = data_info(dm)
    speed = variant_speed(cfg, features)
    speed.update(speed_extra or {})
    if speed["compile"]:
        torch._dynamo.reset()  # no caches or recompilation limits carried over
    torch.manual_seed(seed)
    module = FlowModule(
        cfg["model"],
        info,
        cfg.get("optim"),
        ema_decay=cfg.get("ema_decay"),
        check_finite=bool(cfg.get("check_finite", True)),
        speed=speed,
    ).to(dev)
    x = synthetic_batch(dm, batch, seed).to(dev)
    optim_cfg = dict(cfg.get("optim") or {})
    optimizer = build_optimizer(module.model.parameters(), optim_cfg)
    scheduler = build_scheduler(optimizer, optim_cfg, NOMINAL_STEPS_PER_EPOCH)
    trainer_cfg = dict(cfg.get("trainer") or {})
    clip_val = trainer_cfg.get("gradient_clip_val")
    clip_algo = trainer_cfg.get("gradient_clip_algorithm") or "norm"
    params = [p for g in optimizer.param_groups for p in g["params"]]
    sync()
    build_s = time.perf_counter() - started

    # Untrained metric on the fixed batch, as the reference protocol: eval mode, so layers with
    # data-dependent initialisation (actnorm) are still at their constructed values. Then in
    # train mode, which runs that initialisation on this batch as the first training step would.
    loss_values = []
    for train_mode in (False, True):
        torch.manual_seed(seed)
        module.train(train_mode)
        with torch.no_grad():
            value = module.metric(module.model.log_prob(x), module.metric_size).mean()
        loss_values.append(float(value))

    def train_step(i: int) -> None:
        optimizer.zero_grad(set_to_none=True)
        loss = module.training_step(x, i)
        loss.backward()
        if clip_val:
            if clip_algo == "value":
                torch.nn.utils.clip_grad_value_(params, float(clip_val))
            else:
                torch.nn.utils.clip_grad_norm_(params, float(clip_val))
        optimizer.step()
        scheduler.step()
        module.on_train_batch_end(None, x, i)

    def eval_step(i: int) -> None:
        with torch.no_grad():
            model = module.eval_model
            module.metric(model.log_prob(x), module.metric_size).mean()

    def sample_step(i: int) -> None:
        module.sample(batch)

    compiled = bool(speed["compile"])
    # compilation is never timed: with compile, at least two warm-up steps (the second
    # recompiles where the first call flipped state, e.g. a one-time initialisation)
    train_warmup = max(warmup, MIN_COMPILE_WARMUP) if compiled else warmup
    with warnings.catch_warnings():
        # training_step logs through self.log, which has no trainer to log to here
        warnings.filterwarnings("ignore", message=r".*self\.log\(\).*")
        module.train()
        warm = _timed(train_step, train_warmup, sync)
        graphs_before = _compiled_graphs()
        train = _timed(train_step, steps, sync)
        recompiled = _compiled_graphs() - graphs_before
        # FLOPs of one further step (the counter slows it down: never timed); a compiled
        # graph hides its operators from the counter
        step_flops = None
        if flops and not compiled:
            try:
                step_flops = count_flops(train_step, steps)
            except RuntimeError:  # e.g. memory-saving backprop's autograd.grad in backward
                step_flops = None
    module.eval()
    evals = samples = [math.nan]
    if evaluate:
        _timed(eval_step, warmup, sync)
        evals = _timed(eval_step, steps, sync)
        _timed(sample_step, warmup, sync)
        samples = _timed(sample_step, steps, sync)
    sync()

    train_median = statistics.median(train)
    peak = peak_flops(dev) if step_flops else None
    achieved = step_flops / train_median if step_flops else None
    result: dict[str, Any] = {
        "workload": workload,
        "params": sum(p.numel() for p in module.model.parameters()),
        "batch": batch,
        "train_ms_median": 1e3 * train_median,
        "train_ms_min": 1e3 * min(train),
        "train_ms_all": [1e3 * t for t in train],
        "eval_ms_median": 1e3 * statistics.median(evals) if evaluate else None,
        "eval_ms_min": 1e3 * min(evals) if evaluate else None,
        "sample_ms": 1e3 * statistics.median(samples) if evaluate else None,
        "sample_ms_min": 1e3 * min(samples) if evaluate else None,
        "train_flops": step_flops,
        "train_gflops_per_s": achieved / 1e9 if achieved else None,
        "peak_gflops_per_s": peak / 1e9 if peak else None,
        "flops_fraction_of_peak": achieved / peak if achieved and peak else None,
        "peak_mem_mb": (
            torch.cuda.max_memory_allocated(dev) / 2**20 if dev.type == "cuda" else peak_rss_mb()
        ),
        "peak_mem_kind": "cuda_max_memory_allocated" if dev.type == "cuda" else "peak_rss",
        "peak_rss_mb": peak_rss_mb(),
        "isolated": bool(isolated),
        "loss_value": loss_values[0],
        "loss_value_initialised": loss_values[1],
        "loss_unit": LOSS_UNITS.get(module.metric.name, module.metric.name),
        "loss_metric": module.metric.name,
        "exact": bool(module.model.exact),
        "data_kind": info["kind"],
        "data_shape": list(info["shape"]),
        "device": dev.type,
        "device_name": _device_name(dev),
        "threads": torch.get_num_threads(),
        "retain_heap": heap_retained,
        "torch_version": torch.__version__,
        "speed_options": speed,
        "features": list(features),
        "steps": steps,
        "warmup": train_warmup,
        "build_s": build_s,
        "first_train_step_s": warm[0] if warm else None,
        # warm-up time beyond that of as many ordinary steps: the compilation cost
        "compile_s": max(0.0, sum(warm) - len(warm) * train_median) if compiled else None,
        # graphs compiled during the timed steps (> 0: the timings include compilation)
        "graphs_compiled_while_timing": recompiled,
        "step_includes": {
            "grad_clip": float(clip_val) if clip_val else None,
            "ema": module.ema is not None,
            "check_finite": bool(module.check_finite),
            "scheduler": True,
        },
    }
    return result  # the model is freed with this frame (collected by the next measure())


# --------------------------------------------------------------------------- orchestration
def plan_variants(
    kind: str, selected: Sequence[str], ablate: bool, baseline: bool = True
) -> list[tuple[str, tuple[str, ...]]]:
    """``(variant name, features)`` to run for one workload.

    Without ``ablate``: the baseline (unless ``baseline`` is False) and, when features are
    selected, one variant with all of them on. With ``ablate``: the baseline, each applicable
    feature alone (``selected``, or every feature when none is) and, with more than one, all of
    them together (``"all"``). Features of one data kind (:data:`FEATURE_KIND`) are skipped for
    the others.
    """
    if ablate:
        names = [f for f in (selected or FEATURES) if FEATURE_KIND.get(f, kind) == kind]
        plan: list[tuple[str, tuple[str, ...]]] = [("baseline", ())]
        plan += [(f, (f,)) for f in names]
        if len(names) > 1:
            plan.append(("all", tuple(names)))
        return plan
    plan = [("baseline", ())] if baseline or not selected else []
    if selected:
        plan.append(("+".join(selected), tuple(selected)))
    return plan


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
            "survae.benchmarking",
            "--child-spec",
            json.dumps(spec),
            "--json",
            str(out),
        ]
        env = dict(os.environ)
        root = str(Path(__file__).resolve().parents[1])
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


# --------------------------------------------------------------------------- official code
def _run_official_child(
    spec: Mapping[str, Any], batch: torch.Tensor, timeout: float | None
) -> dict[str, Any]:
    """:mod:`survae.official_harness` in a fresh, isolated Python process (``-I``: no
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
        info = OFFICIAL_WORKLOADS[workload]
        x = official_batch(workload, common.get("batch"), common.get("seed", 0))
        ours_spec = {
            **common,
            "workload": workload,
            "features": list(features),
            "overrides": [*common.get("overrides", []), *info["overrides"]],
            "evaluate": False,
            "flops": False,
        }
        theirs_spec = {
            "official": str(official),
            "kind": info["kind"],
            "script": info["script"],
            "argv": info["argv"],
            "steps": common["steps"],
            "warmup": common["warmup"],
            "threads": common["threads"],
            "seed": common.get("seed", 0),
        }
        entry: dict[str, Any] = {
            "survae": [], "official": [], "ratios": [], "order": [],
            "survae_features": list(features),
        }  # fmt: skip
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
                break
            ratio = got["official"]["train_ms_median"] / got["survae"]["train_ms_median"]
            entry["ratios"].append(ratio)
            log(
                f"[benchmark] {workload} round {r + 1}: survae "
                f"{_fmt_ms(got['survae']['train_ms_median'])} ms, official "
                f"{_fmt_ms(got['official']['train_ms_median'])} ms, ratio {ratio:.2f}"
            )
        if entry["ratios"]:
            entry["ratio"] = spread(entry["ratios"])
            # the fastest step of each round: steadier than the median when other processes
            # take the cores for part of a round
            entry["ratio_of_minima"] = spread(
                [
                    o["train_ms_min"] / s["train_ms_min"]
                    for s, o in zip(entry["survae"], entry["official"])
                ]
            )
            entry["survae_ms"] = spread([g["train_ms_median"] for g in entry["survae"]])
            entry["official_ms"] = spread([g["train_ms_median"] for g in entry["official"]])
            first = entry["survae"][0], entry["official"][0]
            entry["params"] = {"survae": first[0]["params"], "official": first[1]["params"]}
            entry["survae_retain_heap"] = bool(first[0].get("retain_heap"))
            compile_s = [g["compile_s"] for g in entry["survae"] if g.get("compile_s") is not None]
            if compile_s:
                entry["survae_compile_s"] = spread(compile_s)
            entry["loss_value"] = {
                "survae": first[0]["loss_value"],
                "official": first[1]["loss_value"],
            }
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
    if any(e.get("survae_retain_heap") for e in report.values()):
        lines += [
            "",
            "survae's side kept its freed heap memory (`retain_heap=true`, as `run.py` runs "
            "it; survae.malloc); the official code ran with glibc's default thresholds. "
            "`--override retain_heap=false` measures survae without it.",
        ]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- markdown
def _fmt_ms(v: Any) -> str:
    if not isinstance(v, (int, float)):
        return "–"
    return f"{v:,.1f}" if v < 1000 else f"{v:,.0f}"


def _fmt_rate(r: Mapping[str, Any]) -> str:
    """Achieved GFLOP/s of the training step and its share of the measured peak."""
    rate, frac = r.get("train_gflops_per_s"), r.get("flops_fraction_of_peak")
    if not isinstance(rate, (int, float)) or not isinstance(frac, (int, float)):
        return "–"
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


# --------------------------------------------------------------------------- CLI
def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="benchmark.py",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
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
    p.add_argument("--json", default=None, help="write the results to this JSON file")
    p.add_argument("--markdown", default=None, help="write the results as markdown tables here")
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
    p.add_argument(
        "--override",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra Hydra override for every workload (repeatable)",
    )
    p.add_argument("--config-dir", default=None, help="Hydra config folder (default: configs/)")
    p.add_argument("--timeout", type=float, default=None, help="seconds per subprocess")
    p.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
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
        "(survae.benchmark_peers; libraries not installed are skipped)",
    )
    p.add_argument(
        "--default-heap",
        action="store_true",
        help="with --peers: leave glibc's heap thresholds (default: every library's process "
        "keeps its freed heap memory, survae.malloc.retain_heap)",
    )
    p.add_argument("--child-spec", default=None, help=argparse.SUPPRESS)
    return p


def _selected_features(args: argparse.Namespace) -> list[str]:
    flags = {
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
    names = []
    for item in args.workloads.split(","):
        item = item.strip()
        if item == "paper":
            names += list(PAPER_WORKLOADS)
        elif item == "splines":
            names += list(SPLINE_WORKLOADS)
        elif item:
            names.append(item)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    check_device(device)  # an absent device stops here, before any workload is composed
    selected = _selected_features(args)
    speed_extra: dict[str, Any] = {}
    if args.compile_mode is not None:
        speed_extra["compile_mode"] = args.compile_mode
    if args.memory_saving_anchor_every is not None:
        speed_extra["memory_saving_anchor_every"] = args.memory_saving_anchor_every
    common = {
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
    if args.peers:
        from survae.benchmark_peers import PEER_MODELS, peers_markdown, run_peers

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
            log=log,
        )
        for lib, why in peers["skipped"].items():
            log(f"[peers] {lib}: skipped ({why}; pip install '.[peers]')")
        return _write_report(args, {"peers": peers}, lambda: peers_markdown(peers))
    if args.official:
        if args.rounds < 1:
            raise SystemExit("--rounds must be at least 1")
        if args.workloads == "paper":
            names = list(OFFICIAL_WORKLOADS)
        report = run_official(
            names, args.official, common, args.rounds, args.timeout, log, features=selected
        )
        return _write_report(args, {"official": report}, lambda: official_markdown(report))
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
