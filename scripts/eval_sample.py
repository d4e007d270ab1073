"""Sample quality of an image checkpoint: FID against real images and Inception Score.

    python scripts/eval_sample.py CKPT [--num-samples 10000] [--inception-weights FILE]
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
from survae.evaluation import datamodule_from_checkpoint, load_for_eval
from survae.metrics import (
    SmallFeatureExtractor,
    compute_fid,
    compute_inception_score,
    inception_feature_extractor,
)


@torch.no_grad()
def generate(
    model, num_samples: int, batch_size: int, temperature: float, num_bins: int, device: str
) -> torch.Tensor:
    """uint8 samples ``[N, C, H, W]`` rescaled from ``num_bins`` levels to 0–255."""
    out = []
    for start in range(0, num_samples, batch_size):
        n = min(batch_size, num_samples - start)
        x = model.sample(n, temperature=temperature).float().clamp(0, num_bins - 1)
        out.append((x * (255.0 / (num_bins - 1))).round().to(torch.uint8).cpu())
    return torch.cat(out)


def real_images(dm, num_images: int, split: str, num_bins: int) -> torch.Tensor:
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


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("checkpoint")
    p.add_argument("--num-samples", type=int, default=10_000)
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--real-split", choices=["train", "test"], default="train")
    p.add_argument("--root", default=None, help="data folder (default: as in training)")
    p.add_argument("--inception-weights", default=None)
    p.add_argument("--small-features", action="store_true")
    p.add_argument("--device", default="cpu")
    p.add_argument("--save-samples", default=None, help="save the samples as a .pt file")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)

    model, info = load_for_eval(args.checkpoint, args.device)
    if info["kind"] != "image":
        raise SystemExit(f"sample-quality metrics need an image model; this one is {info['kind']}")
    num_bins = int(info["num_bins"])
    fake = generate(
        model, args.num_samples, args.batch_size, args.temperature, num_bins, args.device
    )
    if args.save_samples:
        torch.save(fake, args.save_samples)
    dm = datamodule_from_checkpoint(args.checkpoint, root=args.root)
    real = real_images(dm, args.num_samples, args.real_split, num_bins)
    extractor = (
        SmallFeatureExtractor()
        if args.small_features
        else inception_feature_extractor(args.inception_weights, device=args.device)
    ).to(args.device)
    result = {
        "checkpoint": str(Path(args.checkpoint)),
        "temperature": args.temperature,
        **{
            f"fid_{k}" if k != "fid" else k: v
            for k, v in compute_fid(real, fake, extractor, args.batch_size).items()
        },
        **compute_inception_score(fake, extractor, batch_size=args.batch_size),
    }
    print(json.dumps({k: v for k, v in result.items()}, indent=2, default=str))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2, default=str)
    return result


if __name__ == "__main__":
    main()
