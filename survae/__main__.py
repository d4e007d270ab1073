"""``python -m survae`` / the ``survae`` command.

``survae --version`` prints the versions of survae, Python, PyTorch and Lightning (what a bug
report needs); ``survae COMMAND ...`` runs one of :data:`COMMANDS` (the same as its
``survae-COMMAND`` console script); any other arguments run the training app exactly as
``survae-run`` does.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

#: ``survae COMMAND``: the module in survae.app whose ``main(argv, prog)`` runs it
COMMANDS = {"report": "report", "eval-loglik": "eval_loglik", "eval-sample": "eval_sample"}


def version_text() -> str:
    """One line: survae's version and those of the libraries its results depend on."""
    import platform
    from importlib import metadata

    from survae import __version__

    parts = [f"survae {__version__}", f"Python {platform.python_version()}"]
    for dist, label in (("torch", "torch"), ("pytorch-lightning", "lightning")):
        try:
            parts.append(f"{label} {metadata.version(dist)}")
        except metadata.PackageNotFoundError:
            parts.append(f"{label} (not installed)")
    return ", ".join(parts)


def main(argv: Sequence[str] | None = None) -> None:
    """``--version``/``-V`` prints :func:`version_text`; a name of :data:`COMMANDS` runs that
    command with the other arguments; anything else goes to the training app
    (:func:`survae.app.cli.main`)."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] in ("--version", "-V"):
        print(version_text())
        return
    if args and args[0] in COMMANDS:
        import importlib

        module = importlib.import_module(f"survae.app.{COMMANDS[args[0]]}")
        module.main(args[1:], prog=f"survae {args[0]}")
        return
    from survae.app import cli

    cli.main(args)


if __name__ == "__main__":
    main()
