"""Sphinx configuration of the survae documentation (``make docs``)."""

import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
sys.path[:0] = [str(DOCS.parent), str(DOCS / "_ext")]

import survae  # noqa: E402

project = "survae"
author = "the survae developers"
copyright = "survae developers, MIT licence"
release = version = survae.__version__

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx-mathjax-offline",  # MathJax copied into _static: the site needs no network
    "survae_docgen",  # catalogue, zoo and API pages from the registry, configs and runs
]
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
exclude_patterns = ["_build"]
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence"]
myst_heading_anchors = 3
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_inherit_docstrings = False  # no Lightning/torch docstrings on overridden methods
napoleon_numpy_docstring = False
html_theme = "furo"
html_title = f"survae {release}"
html_static_path = ["_static"]
html_favicon = "_static/favicon.svg"  # also keeps browsers from asking for /favicon.ico
suppress_warnings = ["myst.header"]
