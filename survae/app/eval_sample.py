"""Sample quality of an image checkpoint: FID against real images and Inception Score.

    survae-eval-sample CKPT [--num-samples 10000] [--inception-weights FILE]
                              [--small-features] [--temperature 1.0] [--json out.json]

The Inception network (pytorch-fid's port, file pt_inception-2015-12-05-6726825d.pth) is read
from --inception-weights or $SURVAE_INCEPTION_WEIGHTS and never downloaded. --small-features
uses a small random network instead: the same maths, but numbers not comparable to published
FID/IS. Published numbers use 50,000 samples; compare only runs with equal sample counts.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

import survae  # noqa: F401  (first: torchvision shim)
from survae.app.evaluation import (
    check_output_path,
    datamodule_from_checkpoint,
    input_errors,
    load_for_eval,
    progress_iter,
)
from survae.config_check import ConfigError
from survae.metrics import (
    SmallFeatureExtractor,
    compute_fid,
    compute_inception_score,
    inception_feature_extractor,
    resolve_inception_weights,
)
from survae.runtime.devices import check_device

#: Inception Score is averaged over this many subsets of the samples
IS_SPLITS = 10


@torch.no_grad()
def generate(
    model,
    num_samples: int,
    batch_size: int,
    temperature: float,
    num_bins: int,
    device: str,
    progress: bool = False,
) -> torch.Tensor:
    """uint8 samples ``[N, C, H, W]`` rescaled from ``num_bins`` levels to 0–255
    (``progress``: a progress bar over the batches)."""
    out = []
    starts = range(0, num_samples, batch_size)
    for start in progress_iter(starts, "sampling (batches)", enabled=progress):
        n = min(batch_size, num_samples - start)
        x = model.sample(n, temperature=temperature).float().clamp(0, num_bins - 1)
        out.append((x * (255.0 / (num_bins - 1))).round().to(torch.uint8).cpu())
    return torch.cat(out)


def real_images(dm, num_images: int, split: str, num_bins: int) -> torch.Tensor:
    """Up to ``num_images`` uint8 images of the data module's ``split`` (train or test)."""
    dm.setup("fit" if split == "train" else "test")
    loader = dm.train_dataloader() if split == "train" else dm.test_dataloader()
    out, count = [], 0
    for x in loader:
        out.append(x)
        count += x.shape[0]
        if count >= num_images:
            break
    x = torch.cat(out)[:num_images].float()
    return (x * (255.0 / (num_bins - 1))).round().to(torch.uint8)


def main(argv: list[str] | None = None, prog: str = "survae-eval-sample") -> dict:
    """Evaluate, print and return the FID/IS record; a bad input stops it with one line
    before any sample is drawn."""
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
    p.add_argument("--num-samples", type=int, default=10_000)
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--real-split", choices=["train", "test"], default="train")
    p.add_argument("--root", default=None, help="data folder (default: as in training)")
    p.add_argument("--inception-weights", default=None)
    p.add_argument("--small-features", action="store_true")
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
    p.add_argument("--save-samples", default=None, help="save the samples as a .pt file")
    p.add_argument("--json", default=None)
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def evaluate(args: argparse.Namespace) -> dict:
    """Every input is checked before the samples are drawn: output folders, device, the
    Inception weights (unless ``--small-features``), the checkpoint and the real images."""
    check_output_path(args.json, "--json")
    check_output_path(args.save_samples, "--save-samples")
    check_device(args.device)
    if args.num_samples < IS_SPLITS:
        raise ConfigError(
            f"--num-samples must be at least {IS_SPLITS} (the Inception Score "
            f"splits), got {args.num_samples}"
        )
    if not args.small_features:
        resolve_inception_weights(args.inception_weights)  # FileNotFoundError with the fix
    model, info = load_for_eval(
        args.checkpoint, args.device, trust=args.trust_checkpoint, trust_config=args.trust_config
    )
    if info["kind"] != "image":
        raise ConfigError(
            f"sample-quality metrics need an image model; {args.checkpoint} is a "
            f"{info['kind']} model (use survae-eval-loglik, or scripts/eval_loglik.py)"
        )
    num_bins = int(info["num_bins"])
    dm = datamodule_from_checkpoint(
        args.checkpoint,
        trust=args.trust_checkpoint,
        trust_config=args.trust_config,
        root=args.root,
    )
    real = real_images(dm, args.num_samples, args.real_split, num_bins)
    extractor = (
        SmallFeatureExtractor()
        if args.small_features
        else inception_feature_extractor(args.inception_weights, device=args.device)
    ).to(args.device)

    progress = not args.no_progress
    fake = generate(
        model, args.num_samples, args.batch_size, args.temperature, num_bins, args.device, progress
    )
    if args.save_samples:
        torch.save(fake, args.save_samples)

    def batches(images: torch.Tensor, what: str):
        return progress_iter(images.split(args.batch_size), what, enabled=progress)

    fid = compute_fid(
        batches(real, "FID features, real (batches)"),
        batches(fake, "FID features, samples (batches)"),
        extractor,
        args.batch_size,
    )
    score = compute_inception_score(
        batches(fake, "Inception Score (batches)"),
        extractor,
        splits=IS_SPLITS,
        batch_size=args.batch_size,
    )
    result = {
        "checkpoint": str(Path(args.checkpoint)),
        "temperature": args.temperature,
        **{f"fid_{k}" if k != "fid" else k: v for k, v in fid.items()},
        **score,
    }
    print(json.dumps(result, indent=2, default=str))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2, default=str)
    return result


def cli() -> None:
    """The ``survae-eval-sample`` command."""
    main()


if __name__ == "__main__":
    main()
