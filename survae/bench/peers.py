"""survae against other flow libraries (nflows, normflows, zuko, FrEIA) on matched models.

``scripts/benchmark.py --peers`` builds each model in every installed library with the same
architecture and parameter count, and times one training step (``zero_grad`` →
``-log_prob(x).mean()`` → ``backward`` → Adam step) on one fixed batch, with the libraries in
a different order in each round (rotated), so that every ratio compares steps measured back to
back. Each library's model lives in its own process (as its users run it), kept between rounds:
in one shared process the timing of a library depended on what the others had allocated before
(glibc returned freed heap memory to the system, and the next step paid ~9,000 page faults);
``--in-process`` runs them all in the benchmark's process instead. Every process keeps its
freed heap memory (:func:`survae.runtime.heap.retain_heap`; ``--default-heap`` leaves glibc's
thresholds), so no library pays page faults for the heap's history. A library that is not
installed is skipped with a message.

Models (the speed issue's three, the MAF in two variants):

* ``toy``: 2-D, 4 affine couplings (one coordinate conditions the other, swapped between
  couplings), MLP 1 → 200 → 100 → 2 with ReLU, batch 128 (82,808 parameters);
* ``maf``: MAF (5) on 6-D data (POWER's shape), MADE with hidden layers [100, 100], batch norm
  after each MADE, order reversed between them, batch 100 (nflows); survae's is the ``maf_*``
  experiments' model, with the paper's unbounded log-scale; zuko has no batch norm and
  normflows' cannot be inverted inside its ``log_prob``, so they are compared with survae's MAF
  without batch norm (``maf_nobn``);
* ``glow``: a small Glow on ``1×28×28`` images, batch 32: L = 2 levels of K = 4 steps
  (actnorm → invertible 1×1 convolution → affine coupling), a squeeze before each level and,
  after the first, half the channels factored out to N(0, I); top latent ``8×7×7`` under
  N(0, I). Coupling networks 3×3 conv → ReLU → 1×1 conv → ReLU → zero-initialised 3×3 conv,
  128 hidden channels (218,624 parameters in survae). survae's is Glow's network (an actnorm
  after each hidden convolution, folded into it, and a learned output scale); normflows has
  the actnorms but no output scale (−48 parameters), nflows and FrEIA take a plain biased
  network (nflows −2,048 with the bias of its 1×1 convolution, FrEIA −2,096). FrEIA's
  ``AllInOneBlock`` is its whole step: coupling, then a global affine map (its actnorm) and a
  channel mixing, here ``C`` learned Householder reflections (``C²`` parameters, as the 1×1
  convolution). zuko has no image layers, so it has no Glow.

Each library's own default affine parameterisation is kept (survae: ``sigmoid(s + 2)``,
Glow's, as ``affine_coupling``'s default; nflows: ``sigmoid(s + 2) + 1e-3``,
normflows: ``exp`` (``sigmoid(s + 2)`` in Glow), FrEIA: soft-clamped ``exp``); the step's cost
is dominated by the networks.
"""

from __future__ import annotations

import multiprocessing
import statistics
import time
import traceback
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from survae.bench.peer_models import (
    BUILDERS,
    PEER_MODELS,
    PEER_NOTES,
    PEERS,
    LogProb,
    installed,
)
from survae.runtime.heap import retain_heap as _retain_heap


# --------------------------------------------------------------------------- timing
def _step_timer(module: nn.Module, log_prob: LogProb, x: torch.Tensor) -> Callable[[], float]:
    optimizer = torch.optim.Adam(module.parameters(), lr=1e-3)

    def step() -> float:
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        loss = -log_prob(x).mean()
        loss.backward()
        optimizer.step()
        return time.perf_counter() - start

    return step


class _Worker:
    """One library's model in its own process (``spawn``): built, warmed up, then timing
    ``steps`` training steps per request."""

    def __init__(self, lib: str, spec: dict[str, Any]):
        ctx = multiprocessing.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.process = ctx.Process(target=_worker_main, args=(child, lib, spec), daemon=True)
        self.process.start()
        child.close()

    def ready(self) -> dict[str, Any]:
        """``{"params": n}``, ``{"params": None}`` (no such model) or ``{"error": text}``."""
        return self._recv()

    def steps(self, count: int) -> list[float] | dict[str, str]:
        """``count`` step times, or ``{"error": text}`` when the step raised or the worker
        has died."""
        try:
            self.conn.send(count)
        except (BrokenPipeError, OSError):
            return self._exited()
        return self._recv()

    def _recv(self) -> Any:
        try:
            return self.conn.recv()
        except EOFError:
            return self._exited()

    def _exited(self) -> dict[str, str]:
        self.process.join()
        return {"error": f"worker exited with {self.process.exitcode}"}

    def close(self) -> None:
        try:
            self.conn.send(None)
        except (BrokenPipeError, OSError):
            pass
        self.process.join(timeout=30)
        if self.process.is_alive():
            self.process.kill()


def _worker_main(conn: Any, lib: str, spec: dict[str, Any]) -> None:
    try:
        timer, params = _prepare(lib, spec)
    except Exception:  # reported to the parent, which records it for this library
        conn.send({"error": traceback.format_exc()})
        return
    conn.send({"params": params})
    if timer is None:
        return
    while (count := conn.recv()) is not None:
        try:
            conn.send([timer() for _ in range(count)])
        except Exception:  # e.g. a non-finite loss: reported, and this worker ends
            conn.send({"error": traceback.format_exc()})
            return


def _prepare(lib: str, spec: dict[str, Any]) -> tuple[Callable[[], float] | None, int | None]:
    """Build ``spec["model"]`` in ``lib`` (seeded), warm it up; its step timer and parameter
    count, or ``(None, None)`` when the library has no such model."""
    torch.set_num_threads(int(spec["threads"]))
    if spec.get("retain_heap"):
        _retain_heap()
    x = torch.randn(
        spec["batch"], *spec["shape"], generator=torch.Generator().manual_seed(spec["seed"])
    )
    torch.manual_seed(spec["seed"])
    extra = {"preset": spec.get("preset", "auto")} if lib == "survae" else {}
    built = BUILDERS[lib](spec["model"], **extra)
    if built is None:
        return None, None
    module, log_prob = built
    module.train()
    params = sum(p.numel() for p in module.parameters() if p.requires_grad)
    timer = _step_timer(module, log_prob, x)
    for _ in range(spec["warmup"]):
        timer()
    return timer, params


class _InProcess:
    """:class:`_Worker`'s interface for a model built in this process."""

    def __init__(self, lib: str, spec: dict[str, Any]):
        try:
            self.timer, params = _prepare(lib, spec)
            self.status: dict[str, Any] = {"params": params}
        except Exception:
            self.timer, self.status = None, {"error": traceback.format_exc()}

    def ready(self) -> dict[str, Any]:
        return self.status

    def steps(self, count: int) -> list[float] | dict[str, str]:
        assert self.timer is not None
        try:
            return [self.timer() for _ in range(count)]
        except Exception:
            return {"error": traceback.format_exc()}

    def close(self) -> None:
        pass


def _time_libraries(
    name: str,
    runners: dict[str, _Worker | _InProcess],
    rounds: int,
    steps: int,
    errors: dict[str, str],
    log: Callable[[str], None],
) -> tuple[dict[str, int], dict[str, list[float]]]:
    """Each built library's parameter count and per-round median ms for model ``name``, the
    libraries rotated by one per round. A library that fails (at build, a raising step, a dead
    worker) goes into ``errors`` and out of both results."""
    params: dict[str, int] = {}
    ms: dict[str, list[float]] = {}

    def fail(lib: str, error: str) -> None:
        errors[f"{name}/{lib}"] = error
        params.pop(lib, None)
        ms.pop(lib, None)
        log(f"[peers] {name}: {lib} failed: {_last_line(error)}")

    for lib, runner in runners.items():
        status = runner.ready()
        if "error" in status:
            fail(lib, status["error"])
        elif status["params"] is not None:
            params[lib], ms[lib] = status["params"], []
    for r in range(rounds):
        order = list(ms)  # the libraries still timed
        if not order:
            break
        for lib in order[r % len(order) :] + order[: r % len(order)]:
            times = runners[lib].steps(steps)
            if isinstance(times, dict):  # the step raised or the worker died
                fail(lib, times["error"])
            else:
                ms[lib].append(1e3 * statistics.median(times))
    return params, ms


def run_peers(
    models: Sequence[str] = ("toy", "maf", "maf_nobn", "glow"),
    *,
    rounds: int = 5,
    steps: int = 30,
    warmup: int = 5,
    threads: int = 1,
    seed: int = 0,
    isolate: bool = True,
    retain_heap: bool = True,
    preset: str = "auto",
    log: Callable[[str], None] = lambda s: None,
) -> dict[str, Any]:
    """Per model: each installed library's parameter count, median ms per training step per
    round, and the ratios ``peer ms / survae ms`` per round (> 1: survae faster) as median,
    min and max. Libraries are rotated between rounds. With ``isolate`` (the default) each
    library's model lives in its own process, as its users run it, so that no library's
    allocations or global settings change another's timing; otherwise all run in this
    process. With ``retain_heap`` (the default) every library's process keeps its freed heap
    memory (:func:`survae.runtime.heap.retain_heap`, applied to this process too when not
    isolated), so no library pays page faults for the heap's history (module docstring). A
    library whose model fails to build, whose step raises or whose worker dies is reported
    under ``errors`` (key ``"model/library"``) and left out of that model's table. survae's
    model runs with the speed ``preset`` (``auto``, its default: the toy model compiled as a
    paper-length run compiles it, the Glow's networks channels-last; the compilation happens
    in the untimed warm-up; ``off``: the bare model)."""
    report: dict[str, Any] = {"skipped": {p: "not installed" for p in PEERS if not installed(p)}}
    errors: dict[str, str] = {}
    previous_threads = torch.get_num_threads()
    if not isolate:
        torch.set_num_threads(int(threads))
    try:
        for name in models:
            batch, shape = PEER_MODELS[name]
            spec = {"model": name, "batch": batch, "shape": shape, "threads": threads,
                    "seed": seed, "warmup": warmup, "retain_heap": retain_heap,
                    "preset": preset}  # fmt: skip
            libs = [lib for lib in BUILDERS if lib == "survae" or installed(lib)]
            runners = {lib: (_Worker if isolate else _InProcess)(lib, spec) for lib in libs}
            try:
                params, ms = _time_libraries(name, runners, rounds, steps, errors, log)
            finally:
                for runner in runners.values():
                    runner.close()
            entry: dict[str, Any] = {"batch": batch, "params": params, "ms": ms, "ratio": {}}
            for lib in ms:
                if lib == "survae" or "survae" not in ms:
                    continue
                q = [a / b for a, b in zip(ms[lib], ms["survae"])]
                entry["ratio"][lib] = {
                    "median": statistics.median(q),
                    "min": min(q),
                    "max": max(q),
                }
            log(
                f"[peers] {name}: "
                + ", ".join(f"{k} {statistics.median(v):.2f} ms" for k, v in ms.items())
            )
            report[name] = entry
    finally:
        torch.set_num_threads(previous_threads)
    report["isolated"] = isolate
    report["retain_heap"] = retain_heap
    report["survae_preset"] = preset
    if errors:
        report["errors"] = errors
    return report


def _last_line(text: str) -> str:
    """The last line of a traceback: the exception and its message."""
    return text.strip().splitlines()[-1]


def _model_entries(report: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return [(k, v) for k, v in report.items() if k in PEER_MODELS]


def peers_markdown(report: dict[str, Any]) -> str:
    """The comparison as a markdown table: per model and library, parameters, median ms per
    step, and the median ratio peer / survae with its range (> 1: survae faster); under it,
    per model whose libraries' parameter counts differ, each difference and its reason."""
    lines = [
        "| model | library | params | train ms (median of rounds) | peer / survae (median) "
        "| range |",
        "|---|---|---|---|---|---|",
    ]
    for name, entry in _model_entries(report):
        for lib, values in entry["ms"].items():
            q = entry["ratio"].get(lib)
            ratio = f"**{q['median']:.2f}**" if q else "–"
            span = f"{q['min']:.2f}–{q['max']:.2f}" if q else "–"
            lines.append(
                f"| `{name}` | {lib} | {entry['params'][lib]:,} "
                f"| {statistics.median(values):.2f} | {ratio} | {span} |"
            )
    for lib, why in report.get("skipped", {}).items():
        lines.append(f"| | {lib} | skipped: {why} | | | |")
    for key, why in report.get("errors", {}).items():
        model, lib = key.split("/")
        lines.append(f"| `{model}` | {lib} | failed: {_last_line(why)} | | | |")
    if "isolated" in report:
        where = "its own process" if report["isolated"] else "the benchmark's process"
        heap = (
            "freed heap memory kept in the process (survae.runtime.heap.retain_heap)"
            if report.get("retain_heap")
            else "glibc's default heap thresholds"
        )
        lines += ["", f"Each library ran in {where}, with {heap}."]
    if "survae_preset" in report:
        lines += [f"survae ran with `speed.preset={report['survae_preset']}`."]
    notes = []
    for name, entry in _model_entries(report):
        if "survae" not in entry["params"]:
            continue
        ours = entry["params"]["survae"]
        diffs = [
            f"{lib} {n - ours:+,} ({100 * (n - ours) / ours:+.2f} %)"
            for lib, n in entry["params"].items()
            if n != ours
        ]
        if diffs:
            why = f": {PEER_NOTES[name]}" if name in PEER_NOTES else ""
            notes.append(
                f"`{name}`: parameters against survae's {ours:,}: {', '.join(diffs)}{why}."
            )
    if notes:
        lines += ["", *notes]
    return "\n".join(lines) + "\n"
