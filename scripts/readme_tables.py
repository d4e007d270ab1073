"""Rewrite README.md's generated sections from the configs and the registry, so that its lists
of data sets, models and experiments cannot drift from what exists.

    python scripts/readme_tables.py            # rewrite the sections in README.md
    python scripts/readme_tables.py --check    # exit 1 (and say which) when one is out of date

A generated section lies between ``<!-- BEGIN generated: NAME -->`` and ``<!-- END generated:
NAME -->``; everything outside the markers is left as written. Sections:

* ``config-groups``: the options of every config group (``configs/<group>/*.yaml``), data sets
  grouped by kind (the registered data module's ``kind``);
* ``zoo``: every experiment config, grouped into families by the model config it uses (an
  experiment that inherits another uses that one's), names sharing a stem written as
  ``stem_{a,b}``; an experiment of an unknown family gets a row of its own, never dropped.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"
README = ROOT / "README.md"
COMMAND = "python scripts/readme_tables.py"

#: (family, model configs, note) in the order of the zoo table
FAMILIES: list[tuple[str, tuple[str, ...], str]] = [
    ("SurVAE toy (AbsFlow vs baseline)", ("abs_flow_2d", "abs_unif_2d", "plain_flow_2d"), ""),
    ("SurVAE point sets", ("sort_flow", "permute_flow"), ""),
    ("SurVAE images (max-pooling, slicing)", ("maxpool_flow", "slice_flow"), ""),
    (
        "Glow / RealNVP",
        ("glow", "conditional_glow", "realnvp"),
        "ablation: `model.permutation=reverse\\|shuffle\\|conv1x1 "
        "model.coupling=additive\\|affine`",
    ),
    (
        "Flow++",
        ("flowpp",),
        "ablations: `model.dequantization=uniform`, `model.coupling=affine`, "
        "`model.use_attention=false`",
    ),
    ("Augmented", ("anf", "vflow"), ""),
    (
        "MAF / RealNVP",
        ("maf", "realnvp_tabular", "conditional_maf_power", "conditional_maf_2d"),
        "",
    ),
    ("Neural spline flows", ("nsf", "nsf_2d"), "`nsf_*`: coupling, `nsf_ar_*`: autoregressive"),
    ("NAF / UMNN", ("naf",), "`umnn_*`: NAF with `model.transform=umnn`"),
    ("Circular flows (torus)", ("circular_flow",), ""),
    (
        "Residual Flows / i-ResNet",
        ("residual_flow", "residual_flow_2d"),
        "i-ResNet: `model.logdet=series model.neumann_grad=false`",
    ),
    ("VAE", ("vae", "iaf_vae"), ""),
    (
        "SurVAE library examples",
        ("toy_flow", "toy_aug_flow", "aug_flow", "mnist_vae", "mnist_hvae"),
        "the official `examples/*.py`",
    ),
]
#: the data kinds in the order of the data row, and how the row names them
KINDS = {
    "toy": "2-D",
    "image": "images",
    "points": "point sets",
    "tabular": "tabular",
    "target": "target densities",
}
#: what follows the option list of a group
GROUP_NOTES = {
    "experiment": "the paper zoo (below)",
    "model": ", or a layer list (below)",
    "optim": " (warm-up, exponential decay per epoch or step or cosine annealing "
    "(`schedule=cosine`), hold phase, floor)",
    "trainer": " (any `pytorch_lightning.Trainer` argument can be set)",
}
#: groups shown together in the table's last row (names only, with their options)
MINOR_GROUPS = ("callbacks", "paths", "debug", "hparams_search")


def options(group: str) -> list[str]:
    """The config names of ``configs/<group>/``."""
    return sorted(p.stem for p in (CONFIGS / group).glob("*.yaml"))


def _load(path: Path) -> Mapping:
    return yaml.safe_load(path.read_text()) or {}


def experiment_choice(name: str, group: str, seen: frozenset[str] = frozenset()) -> str | None:
    """The ``group`` config (``model``, ``data``) experiment ``name`` selects, following the
    experiments it inherits from (plain names in its defaults list)."""
    if name in seen:
        return None
    defaults = _load(CONFIGS / "experiment" / f"{name}.yaml").get("defaults") or []
    for entry in defaults:
        if isinstance(entry, Mapping):
            for key, value in entry.items():
                if str(key).lstrip("/").removeprefix("override ").lstrip("/") == group:
                    return str(value)
    for entry in defaults:
        if isinstance(entry, str) and entry != "_self_":
            found = experiment_choice(entry, group, seen | {name})
            if found:
                return found
    return None


def _data_kind(data_config: str) -> str:
    from survae import registry

    name = _load(CONFIGS / "data" / f"{data_config}.yaml").get("name", data_config)
    return str(getattr(registry.get("dataset", name), "kind", "other"))


def _codes(names: Sequence[str]) -> str:
    return f"`{' '.join(names)}`"


def config_groups_table() -> str:
    """The ``| group | options |`` table of every config group."""
    import survae.data  # noqa: F401  (registers the data modules)

    by_kind: dict[str, list[str]] = {}
    for name in options("data"):
        by_kind.setdefault(_data_kind(name), []).append(name)
    order = [*KINDS, *sorted(set(by_kind) - set(KINDS))]
    data = "; ".join(f"{KINDS.get(k, k)}: {_codes(by_kind[k])}" for k in order if k in by_kind)
    lines = ["| group | options |", "|---|---|", f"| `experiment` | {GROUP_NOTES['experiment']} |"]
    lines.append(f"| `data` | {data} |")
    for group in ("model", "optim", "trainer", "logger"):
        lines.append(f"| `{group}` | {_codes(options(group))}{GROUP_NOTES.get(group, '')} |")
    minor = ", ".join(f"`{g}` ({', '.join(f'`{o}`' for o in options(g))})" for g in MINOR_GROUPS)
    lines.append(f"| {minor} | |")
    return "\n".join(lines)


def _compress(names: Sequence[str]) -> str:
    """``maf_power maf_gas`` -> ``maf_{power,gas}`` (names whose stem, their name less their data
    set, is the same), each entry in backticks."""
    stems: dict[tuple[str, str], list[str]] = {}
    for name in names:
        data = experiment_choice(name, "data") or ""
        match = re.fullmatch(rf"(.+)_{re.escape(data)}(_[a-z0-9_]+)?", name) if data else None
        key = (match.group(1), match.group(2) or "") if match else (name, "")
        stems.setdefault(key, []).append(data if match else "")
    out = []
    for (stem, suffix), datas in stems.items():
        if datas == [""]:
            out.append(f"`{stem}`")
        elif len(datas) == 1:
            out.append(f"`{stem}_{datas[0]}{suffix}`")
        else:
            out.append(f"`{stem}_{{{','.join(datas)}}}{suffix}`")
    return ", ".join(out)


def zoo_table() -> str:
    """The paper zoo: one row per family, every experiment config in exactly one row."""
    families: dict[str, list[str]] = {label: [] for label, _, _ in FAMILIES}
    model_family = {m: label for label, models, _ in FAMILIES for m in models}
    for name in options("experiment"):
        model = experiment_choice(name, "model") or "(none)"
        families.setdefault(model_family.get(model, f"other (`model={model}`)"), []).append(name)
    notes = {label: note for label, _, note in FAMILIES}
    lines = ["| family | experiments |", "|---|---|"]
    for label, names in families.items():
        if names:
            note = f" ({notes[label]})" if notes.get(label) else ""
            lines.append(f"| {label} | {_compress(names)}{note} |")
    return "\n".join(lines)


SECTIONS = {"config-groups": config_groups_table, "zoo": zoo_table}


def _markers(name: str) -> tuple[str, str]:
    return f"<!-- BEGIN generated: {name} -->", f"<!-- END generated: {name} -->"


def render(text: str) -> str:
    """``text`` (README.md) with every generated section rewritten."""
    for name, make in SECTIONS.items():
        begin, end = _markers(name)
        pattern = re.compile(re.escape(begin) + r"\n.*?" + re.escape(end), re.DOTALL)
        if not pattern.search(text):
            raise SystemExit(f"readme_tables.py: README.md has no section {begin} ... {end}")
        generated = f"{begin}\n{make()}\n{end}"
        text = pattern.sub(lambda _m, g=generated: g, text)
    return text


def stale_sections(text: str) -> list[str]:
    """The generated sections of ``text`` that differ from what the configs give now."""
    fresh = render(text)
    stale = []
    for name in SECTIONS:
        begin, end = _markers(name)

        def section(t: str, b: str = begin, e: str = end) -> str:
            return t[t.index(b) : t.index(e)]

        if section(text) != section(fresh):
            stale.append(name)
    return stale


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only say whether it is current")
    parser.add_argument("--readme", type=Path, default=README)
    args = parser.parse_args(argv)
    text = args.readme.read_text()
    if args.check:
        stale = stale_sections(text)
        if stale:
            print(f"{args.readme}: out of date ({', '.join(stale)}); run `{COMMAND}`")
            return 1
        print(f"{args.readme}: generated sections are current")
        return 0
    new = render(text)
    if new != text:
        args.readme.write_text(new)
        print(f"{args.readme}: rewrote {', '.join(stale_sections(text)) or 'nothing'}")
    else:
        print(f"{args.readme}: already current")
    return 0


if __name__ == "__main__":
    sys.exit(main())
