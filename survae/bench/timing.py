"""One measurement: a workload's training step, evaluation batch and sampled batch timed in
this process, with its peak memory, FLOP rate and untrained loss."""

from __future__ import annotations

import gc
import math
import os
import statistics
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from survae.bench.clock import _compiled_graphs, _device_name, _sync, _timed, peak_rss_mb
from survae.bench.flops import count_flops_by_precision, step_fraction
from survae.bench.workloads import (
    _datamodule,
    compose_experiment,
    planned_steps,
    synthetic_batch,
    variant_speed,
)
from survae.runtime.devices import check_device
from survae.runtime.heap import retain_heap
from survae.runtime.speed import compile_if_it_pays

#: the LR schedule's epoch length; any value gives the same per-step cost
NOMINAL_STEPS_PER_EPOCH = 1000

#: warm-up training steps when compiling (first compilation, then recompilations)
MIN_COMPILE_WARMUP = 2

LOSS_UNITS = {"bpd": "bits/dim", "ppll": "PPLL (nats/point)", "nll": "nats"}


def default_threads() -> int:
    """All cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


@dataclass
class _Workload:
    """A workload built for measurement: its module, optimiser, schedule and fixed batch."""

    cfg: dict[str, Any]
    info: dict[str, Any]
    module: Any
    x: torch.Tensor
    batch: int
    optimizer: torch.optim.Optimizer
    scheduler: Any
    speed: dict[str, Any]
    heap_retained: bool
    build_s: float


def _build(
    workload: str,
    features: Sequence[str],
    dev: torch.device,
    batch: int | None,
    overrides: Sequence[str],
    speed_extra: Mapping[str, Any] | None,
    seed: int,
    config_dir: str | Path | None,
) -> _Workload:
    """Compose ``workload``'s config and build its model, optimiser, schedule and batch as a
    training run does, with the speed ``features`` on."""
    from survae.training.module import FlowModule
    from survae.training.optim import build_optimizer, build_scheduler
    from survae.training.pipeline import data_info

    started = time.perf_counter()
    cfg = compose_experiment(workload, overrides, config_dir)
    heap_retained = bool(cfg.get("retain_heap", True)) and retain_heap()  # as run.py does
    batch = int(batch or cfg["data"]["batch_size"])
    dm = _datamodule(cfg, batch, seed)
    info = data_info(dm)
    speed = variant_speed(cfg, features)
    speed.update(speed_extra or {})
    if speed["compile"] is not False:
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
    # the preset's compile decision, as the trainer makes it from the run's length
    compile_if_it_pays(module.model, planned_steps(cfg))
    speed = dict(module.model.__dict__.get("_speed_options", speed))  # as resolved
    x = synthetic_batch(dm, batch, seed).to(dev)
    optim_cfg = dict(cfg.get("optim") or {})
    optimizer = build_optimizer(module.model.parameters(), optim_cfg)
    scheduler = build_scheduler(optimizer, optim_cfg, NOMINAL_STEPS_PER_EPOCH)
    _sync(dev)()
    return _Workload(
        cfg, info, module, x, batch, optimizer, scheduler, speed, heap_retained,
        time.perf_counter() - started,
    )  # fmt: skip


def _untrained_losses(w: _Workload, seed: int) -> list[float]:
    """The untrained metric on the fixed batch, as the reference protocol: in eval mode, so
    layers with data-dependent initialisation (actnorm) are still at their constructed values;
    then in train mode, which runs that initialisation as the first training step would."""
    values = []
    for train_mode in (False, True):
        torch.manual_seed(seed)
        w.module.train(train_mode)
        with torch.no_grad():
            value = w.module.metric(w.module.model.log_prob(w.x), w.module.metric_size).mean()
        values.append(float(value))
    return values


def _clip(w: _Workload) -> tuple[float | None, str]:
    trainer_cfg = dict(w.cfg.get("trainer") or {})
    return trainer_cfg.get("gradient_clip_val"), trainer_cfg.get(
        "gradient_clip_algorithm"
    ) or "norm"


def _train_step(w: _Workload) -> Callable[[int], None]:
    """One training step as the trainer runs it (clipping, optimiser, schedule, EMA)."""
    module, x, optimizer, scheduler = w.module, w.x, w.optimizer, w.scheduler
    clip_val, clip_algo = _clip(w)
    params = [p for g in optimizer.param_groups for p in g["params"]]

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

    return train_step


def _time_training(
    w: _Workload, steps: int, warmup: int, flops: bool, sync: Callable[[], None]
) -> dict[str, Any]:
    """Warm-up and timed training steps, then the FLOPs of one further (untimed) step."""
    train_step = _train_step(w)
    compiled = bool(w.speed["compile"])
    # compilation is never timed: with compile, at least two warm-up steps (the second
    # recompiles where the first call flipped state, e.g. a one-time initialisation)
    train_warmup = max(warmup, MIN_COMPILE_WARMUP) if compiled else warmup
    with warnings.catch_warnings():
        # training_step logs through self.log, which has no trainer to log to here
        warnings.filterwarnings("ignore", message=r".*self\.log\(\).*")
        w.module.train()
        warm = _timed(train_step, train_warmup, sync)
        graphs_before = _compiled_graphs()
        cpu: list[float] = []

        def cpu_timed_step(i: int) -> None:
            start = time.process_time()
            train_step(i)
            cpu.append(time.process_time() - start)

        train = _timed(cpu_timed_step, steps, sync)
        recompiled = _compiled_graphs() - graphs_before
        # FLOPs of one further step (the counter slows it down: never timed); a compiled
        # graph hides its operators from the counter
        step_flops = None
        if flops and not compiled:
            try:
                step_flops = count_flops_by_precision(train_step, steps)
            except RuntimeError:  # e.g. memory-saving backprop's autograd.grad in backward
                step_flops = None
    return {
        "warm": warm, "train": train, "cpu": cpu, "recompiled": recompiled, "flops": step_flops,
        "warmup": train_warmup, "compiled": compiled,
    }  # fmt: skip


def _time_inference(
    w: _Workload, steps: int, warmup: int, sync: Callable[[], None]
) -> tuple[list[float], list[float]]:
    """Seconds per evaluation batch and per sampled batch, after untimed warm-up calls."""
    module = w.module

    def eval_step(i: int) -> None:
        with torch.no_grad():
            module.metric(module.eval_model.log_prob(w.x), module.metric_size).mean()

    def sample_step(i: int) -> None:
        module.sample(w.batch)

    module.eval()
    _timed(eval_step, warmup, sync)
    evals = _timed(eval_step, steps, sync)
    _timed(sample_step, warmup, sync)
    samples = _timed(sample_step, steps, sync)
    sync()
    return evals, samples


def _timing_fields(
    t: Mapping[str, Any], evals: list[float], samples: list[float], evaluate: bool, dev
) -> dict[str, Any]:
    """The result's timings, FLOP rate against the measured peak, and compilation cost."""
    train, warm = t["train"], t["warm"]
    train_median = statistics.median(train)
    by_precision = t["flops"] or None
    total = sum(by_precision.values()) if by_precision else None
    fraction, peak = step_fraction(by_precision, train_median, dev) if total else (None, None)
    achieved = total / train_median if total else None
    return {
        "train_ms_median": 1e3 * train_median,
        "train_ms_min": 1e3 * min(train),
        "train_ms_all": [1e3 * s for s in train],
        # the process's CPU time per step (all threads): what the step costs when other
        # processes take the cores for part of its wall time
        "train_cpu_ms_median": 1e3 * statistics.median(t["cpu"]),
        "eval_ms_median": 1e3 * statistics.median(evals) if evaluate else None,
        "eval_ms_min": 1e3 * min(evals) if evaluate else None,
        "sample_ms": 1e3 * statistics.median(samples) if evaluate else None,
        "sample_ms_min": 1e3 * min(samples) if evaluate else None,
        "train_flops": total,
        "train_flops_by_precision": by_precision,
        "train_gflops_per_s": achieved / 1e9 if achieved else None,
        # the peak of each precision the step's FLOPs ran in (best large matmul/convolution)
        "peak_gflops_per_s": {k: v / 1e9 for k, v in peak.items()} if peak else None,
        # the share of the step its counted FLOPs would take at their precisions' peaks
        "flops_fraction_of_peak": fraction,
        "first_train_step_s": warm[0] if warm else None,
        # warm-up time beyond that of as many ordinary steps: the compilation cost
        "compile_s": (max(0.0, sum(warm) - len(warm) * train_median) if t["compiled"] else None),
        # graphs compiled during the timed steps (> 0: the timings include compilation)
        "graphs_compiled_while_timing": t["recompiled"],
    }


def _result(
    workload: str, w: _Workload, dev: torch.device, losses: list[float], features: Sequence[str],
    steps: int, isolated: bool,
) -> dict[str, Any]:  # fmt: skip
    """The measurement's description: model, data, device, memory, loss and settings."""
    module = w.module
    clip_val, _ = _clip(w)
    return {
        "workload": workload,
        "params": sum(p.numel() for p in module.model.parameters()),
        "batch": w.batch,
        "peak_mem_mb": (
            torch.cuda.max_memory_allocated(dev) / 2**20 if dev.type == "cuda" else peak_rss_mb()
        ),
        "peak_mem_kind": "cuda_max_memory_allocated" if dev.type == "cuda" else "peak_rss",
        "peak_rss_mb": peak_rss_mb(),
        "isolated": bool(isolated),
        "loss_value": losses[0],
        "loss_value_initialised": losses[1],
        "loss_unit": LOSS_UNITS.get(module.metric.name, module.metric.name),
        "loss_metric": module.metric.name,
        "exact": bool(module.model.exact),
        "data_kind": w.info["kind"],
        "data_shape": list(w.info["shape"]),
        "device": dev.type,
        "device_name": _device_name(dev),
        "threads": torch.get_num_threads(),
        "retain_heap": w.heap_retained,
        "torch_version": torch.__version__,
        "speed_options": w.speed,
        "features": list(features),
        "steps": steps,
        "build_s": w.build_s,
        "step_includes": {
            "grad_clip": float(clip_val) if clip_val else None,
            "ema": module.ema is not None,
            "check_finite": bool(module.check_finite),
            "scheduler": True,
        },
    }


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
    extra (untimed) training step, per precision, and reports the achieved rate against this
    machine's measured peak of each precision (:func:`survae.bench.flops.peaks`). Returns the
    result mapping (see :func:`survae.bench.benchmark.main`).
    """
    import survae  # noqa: F401  (torchvision shim, registrations)

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

    w = _build(workload, features, dev, batch, overrides, speed_extra, seed, config_dir)
    losses = _untrained_losses(w, seed)
    t = _time_training(w, steps, warmup, flops, sync)
    evals = samples = [math.nan]
    if evaluate:
        evals, samples = _time_inference(w, steps, warmup, sync)
    else:
        w.module.eval()
        sync()
    result = _result(workload, w, dev, losses, features, steps, isolated)
    result.update(_timing_fields(t, evals, samples, evaluate, dev))
    result["warmup"] = t["warmup"]
    return result  # the model is freed with this frame (collected by the next measure())
