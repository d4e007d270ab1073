"""Test log-likelihood of a checkpoint with an importance-weighted bound.

    python scripts/eval_loglik.py CKPT [OPTIONS]      # = survae-eval-loglik CKPT [OPTIONS]

The command lives in :mod:`survae.app.eval_loglik` (installed as ``survae-eval-loglik``, also
``survae eval-loglik``); this file runs it from a checkout, its messages prefixed
``eval_loglik.py:``.
"""

from __future__ import annotations

import survae  # noqa: F401  (first: torchvision shim)
from survae.app import eval_loglik


def main(argv: list[str] | None = None) -> dict:
    """Run ``survae-eval-loglik`` and return its result record."""
    return eval_loglik.main(argv, prog="eval_loglik.py")


if __name__ == "__main__":
    main()
