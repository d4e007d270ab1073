"""Sample quality of an image checkpoint: FID against real images and Inception Score.

    python scripts/eval_sample.py CKPT [OPTIONS]      # = survae-eval-sample CKPT [OPTIONS]

The command lives in :mod:`survae.app.eval_sample` (installed as ``survae-eval-sample``, also
``survae eval-sample``); this file runs it from a checkout, its messages prefixed
``eval_sample.py:``.
"""

from __future__ import annotations

import survae  # noqa: F401  (first: torchvision shim)
from survae.app import eval_sample


def main(argv: list[str] | None = None) -> dict:
    """Run ``survae-eval-sample`` and return its result record."""
    return eval_sample.main(argv, prog="eval_sample.py")


if __name__ == "__main__":
    main()
