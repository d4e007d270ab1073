"""Test log-likelihood of a checkpoint with an importance-weighted bound.

    survae-eval-loglik CKPT [--k 1000] [--split test] [--root DIR] [--json out.json]

Exact models (bijections and inference surjections only) report the exact value; models with
dequantization, augmentation or stochastic layers report log (1/k) Σ exp(bound_i), which
tightens towards the log-likelihood as k grows (SurVAE reports test bits/dim with k = 1000).
"""

from __future__ import annotations

import argparse
import json

import survae  # noqa: F401  (first: torchvision shim)
from survae.app.evaluation import (
    check_output_path,
    datamodule_from_checkpoint,
    evaluate_log_likelihood,
    input_errors,
    load_for_eval,
)
from survae.config_check import ConfigError
from survae.runtime.devices import check_device


def main(argv: list[str] | None = None, prog: str = "survae-eval-loglik") -> dict:
    """Evaluate, print and return ``{metric, value, exact, iw_samples, num_examples, ...}``;
    a bad input stops it with one line before any work."""
    args = _parser(prog).parse_args(argv)
    try:
        return evaluate(args)
    except input_errors() as err:
        raise SystemExit(f"{prog}: {err}") from None


def _parser(prog: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=prog, description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    p.add_argument("checkpoint")
    p.add_argument("--k", type=int, default=1000, help="importance samples per example")
    p.add_argument("--chunk", type=int, default=None, help="samples per forward pass")
    p.add_argument("--split", choices=["val", "test"], default="test")
    p.add_argument("--root", default=None, help="data folder (default: as in training)")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--max-batches", type=int, default=None)
    p.add_argument("--device", default="cpu")
    p.add_argument(
        "--trust-checkpoint",
        action="store_true",
        help="load a checkpoint that needs more than tensors and plain values (can run code)",
    )
    p.add_argument(
        "--trust-config",
        action="store_true",
        help="import the modules the run imported (its own layers; runs their code)",
    )
    p.add_argument("--json", default=None, help="write the result to this file")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def evaluate(args: argparse.Namespace) -> dict:
    """The evaluation itself: inputs checked first (output folder, device, k, checkpoint,
    data), then the progress-barred pass over the split."""
    check_output_path(args.json, "--json")
    check_device(args.device)
    if args.k < 1:
        raise ConfigError(f"--k must be at least 1, got {args.k}")
    model, info = load_for_eval(
        args.checkpoint, args.device, trust=args.trust_checkpoint, trust_config=args.trust_config
    )
    dm = datamodule_from_checkpoint(
        args.checkpoint,
        trust=args.trust_checkpoint,
        trust_config=args.trust_config,
        root=args.root,
        eval_batch_size=args.batch_size,
    )
    dm.setup("test" if args.split == "test" else "validate")
    loader = dm.test_dataloader() if args.split == "test" else dm.val_dataloader()
    result = evaluate_log_likelihood(
        model,
        loader,
        info["kind"],
        list(info["shape"]),
        args.k,
        args.chunk,
        args.device,
        args.max_batches,
        progress=not args.no_progress,
    )
    result.update(checkpoint=args.checkpoint, split=args.split)
    kind = "exact" if result["exact"] else f"IW bound, k={result['iw_samples']}"
    print(
        f"{args.split}/{result['metric']} = {result['value']:.4f} ({kind}, "
        f"{result['num_examples']} examples)"
    )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return result


def cli() -> None:
    """The ``survae-eval-loglik`` command."""
    main()


if __name__ == "__main__":
    main()
