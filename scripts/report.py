"""Markdown table of this project's runs: seeds averaged, compared with the published targets,
every failed, diverged or incomplete run listed with its state and reason.

    python scripts/report.py [FOLDERS ...] [OPTIONS]     # = survae-report [FOLDERS ...] [OPTIONS]

The command lives in :mod:`survae.app.report` (installed as ``survae-report``, also
``survae report``); this file runs it from a checkout, its messages prefixed ``report.py:``.
"""

from __future__ import annotations

import survae  # noqa: F401  (first: torchvision shim)
from survae.app import report


def main(argv: list[str] | None = None) -> str:
    """Run ``survae-report`` and return the table it printed."""
    return report.main(argv, prog="report.py")


if __name__ == "__main__":
    main()
