"""The docstring examples of the package run and print what they show: every module of
``survae`` whose source holds a ``>>>`` example is run with :mod:`doctest`, so an example
added anywhere is checked from then on. (The API reference renders the same examples.)"""

from __future__ import annotations

import doctest
import importlib
from pathlib import Path

import pytest

import survae

PACKAGE = Path(survae.__file__).resolve().parent
MODULES = sorted(
    ".".join(("survae", *p.relative_to(PACKAGE).with_suffix("").parts)).removesuffix(".__init__")
    for p in PACKAGE.rglob("*.py")
    if "configs" not in p.parts and ">>> " in p.read_text()
)
#: the public entry points that must keep an example
REQUIRED = {"survae.registry", "survae.models", "survae.flows", "survae.testing"}


def test_the_entry_points_have_examples():
    assert REQUIRED <= set(MODULES)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name):
    module = importlib.import_module(name)
    flags = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
    result = doctest.testmod(module, optionflags=flags, verbose=False)
    assert result.attempted > 0, f"{name}: no example ran"
    assert result.failed == 0, f"{name}: {result.failed} example(s) failed (output above)"
