"""Time the official SurVAE Flows code's training step on one workload (run as a script).

    python -I survae/bench/official_harness.py SPEC_JSON OUT_JSON

Run by :func:`survae.bench.benchmark.run_official` in its own process, because the official
package is also called ``survae``: this file imports nothing from this project, removes its own
folder from ``sys.path`` and puts the official checkout (``spec["official"]``) first. The model
is built by the official experiment script itself: for the toy and point-cloud workloads the
script's source is executed up to its training loop (argument parsing, model, optimiser and
schedulers exactly as written), with its ``data`` module replaced by one that serves the fixed
batch; for the image workloads ``experiments/image/train.py``'s calls (``get_model``,
``get_optim``) are made with the README's arguments. The batch comes from a ``.npy`` file
(``allow_pickle=False``). The training step is the script's: ``zero_grad`` → loss →
``backward`` → ``step`` → per-iteration scheduler step; untimed warm-up steps, then ``steps``
timed ones (``time.perf_counter``), as :func:`survae.bench.benchmark.measure` times survae.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
import time
import types
from pathlib import Path

HERE = Path(__file__).resolve().parent

#: where each workload's script lives, its README arguments and where its training loop starts
SCRIPTS = {
    "toy": ("experiments/toy", "## Training ##"),
    "points": ("experiments/point_cloud", "## Define training ##"),
    "image": ("experiments/image", None),
}


def _isolate(official: Path, sub: str) -> None:
    """Only the official checkout and its experiment folder on the path (this project's folder
    holds modules named like the official experiments' ``data``, ``utils``, ``model``)."""
    sys.path[:] = [p for p in sys.path if p and Path(p).resolve() != HERE]
    sys.path[:0] = [str(official / sub), str(official)]


def _import_torchvision() -> None:
    """torchvision on a CPU-only torch build: stub its two registration modules only when its
    compiled extension cannot load (they register operators the extension lacks)."""
    try:
        import torchvision  # noqa: F401
    except RuntimeError:
        for name in [n for n in sys.modules if n.startswith("torchvision")]:
            del sys.modules[name]
        for name in ("torchvision._meta_registrations", "torchvision._autograd_registrations"):
            sys.modules[name] = types.ModuleType(name)
        import torchvision  # noqa: F401


def _script_namespace(official: Path, sub: str, script: str, argv: list, stop: str, x, kind):
    """Run the script's source up to ``stop`` with ``argv``; returns its namespace."""
    data = types.ModuleType("data")
    data.dataset_choices = {a for a in argv if not a.startswith("-")} | {
        "eight_gaussians",
        "spatial_mnist",
    }
    splits = 2 if kind == "toy" else 3
    data.get_data = lambda args: tuple([x] for _ in range(splits))
    sys.modules["data"] = data
    path = official / sub / script
    source = path.read_text()
    if stop not in source:
        raise RuntimeError(f"{path}: marker {stop!r} not found")
    source = source[: source.index(stop)]
    sys.argv = [str(path), *argv]
    namespace = {"__name__": "__official_script__", "__file__": str(path)}
    exec(compile(source, str(path), "exec"), namespace)
    return namespace


def main(spec_path: str, out_path: str) -> None:
    spec = json.loads(Path(spec_path).read_text())
    official = Path(spec["official"]).resolve()
    kind = spec["kind"]
    sub, stop = SCRIPTS[kind]
    _isolate(official, sub)
    os.environ.setdefault("MPLBACKEND", "Agg")
    import numpy as np
    import torch

    torch.set_num_threads(int(spec["threads"]))
    _import_torchvision()
    x = torch.from_numpy(np.load(spec["batch"], allow_pickle=False))
    workdir = tempfile.mkdtemp(prefix="official-bench-")
    os.chdir(workdir)  # the scripts create models/, results/, figures/, tb/ folders

    scheduler_iter = None
    if kind == "image":
        import argparse

        from model.model import add_model_args, get_model
        from optim.expdecay import add_optim_args, get_optim

        from survae.utils import elbo_bpd

        parser = argparse.ArgumentParser()
        add_model_args(parser)
        add_optim_args(parser)
        parser.add_argument("--num_bits", type=int, default=8)
        args, _ = parser.parse_known_args(spec["argv"])
        torch.manual_seed(int(spec.get("seed", 0)))
        model = get_model(args, data_shape=tuple(x.shape[1:]))
        optimizer, scheduler_iter, _ = get_optim(args, model)

        def loss_fn():
            return elbo_bpd(model, x)
    else:
        ns = _script_namespace(official, sub, spec["script"], spec["argv"], stop, x, kind)
        model, optimizer = ns["model"], ns["optimizer"]
        scheduler_iter = ns.get("scheduler_iter")

        def loss_fn():
            return -model.log_prob(x).mean()

    def step() -> None:
        optimizer.zero_grad()
        loss = loss_fn()
        loss.backward()
        optimizer.step()
        if scheduler_iter:
            scheduler_iter.step()

    model.eval()
    with torch.no_grad():
        untrained = float(loss_fn())
    model.train()
    times, cpu = [], []
    for i in range(int(spec["warmup"]) + int(spec["steps"])):
        start, cpu_start = time.perf_counter(), time.process_time()
        step()
        if i >= int(spec["warmup"]):
            times.append(time.perf_counter() - start)
            cpu.append(time.process_time() - cpu_start)
    result = {
        "train_ms_median": 1e3 * statistics.median(times),
        # the process's CPU time per step (all threads): what the step costs when other
        # processes take the cores for part of its wall time
        "train_cpu_ms_median": 1e3 * statistics.median(cpu),
        "train_ms_min": 1e3 * min(times),
        "train_ms_all": [1e3 * t for t in times],
        "params": sum(p.numel() for p in model.parameters()),
        "loss_value": untrained,
        "threads": torch.get_num_threads(),
        "torch_version": torch.__version__,
    }
    Path(out_path).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
