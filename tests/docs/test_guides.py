"""The guides stay in step with the project: the speed guide names every speed option, and the
README sections the guides include start and end where the guides say. (The README's own
examples, which the guides include, are run by tests/reliability/test_own_layers_readme.py.)"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

DOCS = Path(__file__).resolve().parents[2] / "docs"


def test_the_speed_guide_names_every_speed_option():
    config = yaml.safe_load((DOCS.parent / "configs/train.yaml").read_text())
    guide = (DOCS / "guides/speed.md").read_text()
    missing = [k for k in config["speed"] if f"`speed.{k}=" not in guide]
    assert not missing, f"docs/guides/speed.md does not describe speed.{missing}"
    for key in ("threads", "retain_heap"):
        assert f"`{key}`" in guide


INCLUDE = re.compile(r"```\{include\} (\S+)\n((?::[\w-]+: .*\n)*)```")


@pytest.mark.parametrize("page", sorted(str(p.relative_to(DOCS)) for p in DOCS.rglob("*.md")))
def test_included_sections_are_where_the_guides_say(page):
    """A guide that includes a section of the README names its first and next headings; a
    README edit that renames one fails here (and would fail the docs build) instead of
    silently including the wrong text."""
    text = (DOCS / page).read_text()
    for target, options in INCLUDE.findall(text):
        source = ((DOCS / page).parent / target).resolve().read_text()
        for option in re.findall(r":(?:start-after|end-before): (.*)", options):
            marker = option.strip().strip('"')
            assert source.count(marker) == 1, (
                f"{page}: {marker!r} occurs {source.count(marker)} times in {target}"
            )
