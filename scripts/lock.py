"""Write ``requirements-lock.txt``: the exact versions of the tested environment.

    .venv/bin/python scripts/lock.py            # or: make lock

Takes ``pip freeze --all --exclude-editable`` of the running interpreter's environment and keeps the
packages survae needs with its ``dev`` and ``cluster`` extras (the dependency closure read from
the installed packages' metadata), so tools installed by hand are left out. Local version labels
are dropped (``torch==2.13.0+cpu`` → ``torch==2.13.0``): the pin then matches the CPU build and
the CUDA build of the same release. ``make install-locked`` installs from the file.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]
EXTRAS = ("dev", "cluster")


def canonical(name: str) -> str:
    """PEP 503 normalised project name."""
    return re.sub(r"[-_.]+", "-", name).lower()


def closure(project: str = "survae", extras: tuple[str, ...] = EXTRAS) -> set[str]:
    """Canonical names of every installed package ``project[extras]`` needs, transitively."""
    env = default_environment()
    needed: set[str] = set()
    todo: list[tuple[str, tuple[str, ...]]] = [(project, extras)]
    while todo:
        name, wanted = todo.pop()
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        for text in dist.requires or []:
            req = Requirement(text)
            if req.marker is not None and not any(
                req.marker.evaluate({**env, "extra": e}) for e in ("", *wanted)
            ):
                continue
            key = canonical(req.name)
            if key not in needed:
                needed.add(key)
                todo.append((req.name, tuple(req.extras)))
    return needed


def lock_text(freeze: str, needed: set[str]) -> str:
    """The lock file's text from ``pip freeze`` output, restricted to ``needed``."""
    pins = []
    for line in freeze.splitlines():
        match = re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;]+)", line.strip())
        if match and canonical(match[1]) in needed:
            pins.append(f"{match[1]}=={match[2].split('+')[0]}")
    header = [
        "# survae's tested environment: exact versions of every package it needs with the",
        "# [dev,cluster] extras. Made by `make lock` (scripts/lock.py): `pip freeze --all",
        "# --exclude-editable` of .venv, restricted to survae's dependency closure, local version",
        "# labels dropped (torch==X matches X+cpu and the CUDA build). Install with",
        "# `make install-locked`.",
        f"# Python {sys.version.split()[0]} on {sys.platform}.",
    ]
    return "\n".join([*header, *sorted(pins, key=str.lower)]) + "\n"


def main(argv: list[str] | None = None) -> Path:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--output", type=Path, default=ROOT / "requirements-lock.txt")
    args = p.parse_args(argv)
    freeze = subprocess.run(
        [sys.executable, "-m", "pip", "freeze", "--all", "--exclude-editable"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    args.output.write_text(lock_text(freeze, closure()))
    print(f"wrote {args.output}")
    return args.output


if __name__ == "__main__":
    main()
