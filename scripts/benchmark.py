"""Benchmark the paper workloads: ms per training step, evaluation batch and sampled batch,
peak memory and the untrained loss, each model built exactly as its experiment config.

    python scripts/benchmark.py --workloads abs_flow_eight_gaussians,glow_cifar10 \\
        --device cpu --steps 10 --warmup 3 --json bench.json [--markdown bench.md]
    python scripts/benchmark.py --workloads glow_cifar10 --device cuda --ablate --json ab.json

Speed features (``--compile``, ``--bf16``, ``--channels-last``, ``--memory-saving``) are
measured against the same workload with them switched off, in the same run; ``--ablate`` runs
the baseline, each feature alone and all together, and reports baseline/variant ratios. Each
measurement runs in its own subprocess (peak RSS is per process) unless ``--in-process``.
See :mod:`survae.bench.benchmark` for what exactly is timed.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

import survae  # noqa: F401  (first: torchvision shim)
from survae.bench import benchmark


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the benchmark and return its JSON report (see :func:`survae.bench.benchmark.main`)."""
    return benchmark.main(argv)


if __name__ == "__main__":
    sys.exit(benchmark.cli())
