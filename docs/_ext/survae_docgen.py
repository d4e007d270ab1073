"""Pages generated from the project's own files at build time.

* the layer catalogue: one page per name in ``survae.registry`` (every kind), with the object's
  docstring (its likelihood contribution), its config keys (from the signature) and a YAML example;
* the paper zoo: every ``configs/experiment/*.yaml`` with its published target
  (``experiments/targets.yaml``) and its recorded run (``experiments/runs/*/results.json``);
* the API reference: one page per public module of the ``survae`` package.

``generate(docs_dir)`` writes them; as a Sphinx extension it runs when the builder starts, so a
layer or experiment added anywhere in the project appears without editing the docs.
"""

from __future__ import annotations

import importlib
import inspect
import json
import pkgutil
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
GENERATED = ("catalogue", "api", "zoo.md")

KIND_TITLES = {
    "layer": "Layers",
    "network": "Networks",
    "distribution": "Distributions",
    "architecture": "Architectures",
    "dataset": "Data sets",
    "target": "Targets",
}
KIND_INTROS = {
    "layer": "Transforms a model is built from. Each maps data to latent with ``forward(x) -> "
    "(z, ldj)``; the docstring gives ``ldj``, the layer's likelihood contribution.",
    "network": "Networks inside couplings and autoregressive layers (the ``net`` key of a layer).",
    "distribution": "Base distributions (the ``base`` key of a model) and the conditional "
    "distributions used inside surjections and VAEs.",
    "architecture": "Builders that compose registered layers into a paper's model "
    "(``architecture`` in ``configs/model/*.yaml``).",
    "dataset": "Data sets (``configs/data/*.yaml``, ``data=NAME`` on the command line).",
    "target": "Unnormalised target densities for reverse-KL / alpha-divergence training "
    "(``data=target data.target.name=NAME``).",
}
#: where each kind sits in a config, for the YAML example
YAML_PLACE = {
    "layer": "layers:\n  - {entry}",
    "network": "# the network of a coupling or autoregressive layer\nnet: {entry}",
    "distribution": "base: {entry}",
    "architecture": "# configs/model/my_model.yaml  ->  python run.py model=my_model\n{block}",
    "dataset": "# configs/data/my_data.yaml  ->  python run.py data=my_data\n{block}",
    "target": "# data=target: what the flow is trained towards\ntarget: {entry}",
}
#: the paper each experiment reproduces, by experiment-name prefix (first match wins), and the
#: paper's official code ("" where none is linked)
PAPERS: list[tuple[tuple[str, ...], str, str]] = [
    (("abs_flow", "plain_flow", "maxpool_flow", "slice_flow", "sort_flow", "permute_flow",
      "official_example"),
     "SurVAE Flows (Nielsen et al. 2020)", "https://github.com/didriknielsen/survae_flows"),
    (("glow",), "Glow (Kingma & Dhariwal 2018)", "https://github.com/openai/glow"),
    (("flowpp",), "Flow++ (Ho et al. 2019)", "https://github.com/aravindsrinivas/flowpp"),
    (("realnvp",), "Real NVP (Dinh et al. 2017)",
     "https://github.com/tensorflow/models/tree/archive/research/real_nvp"),
    (("vflow",), "VFlow (Chen et al. 2020)", "https://github.com/thu-ml/vflow"),
    (("anf",), "Augmented normalizing flows (Huang et al. 2020)", ""),
    (("maf",), "MAF (Papamakarios et al. 2017)", "https://github.com/gpapamak/maf"),
    (("nsf",), "Neural spline flows (Durkan et al. 2019)", "https://github.com/bayesiains/nsf"),
    (("naf",), "Neural autoregressive flows (Huang et al. 2018)", "https://github.com/CW-Huang/NAF"),
    (("umnn",), "UMNN (Wehenkel & Louppe 2019)", "https://github.com/AWehenkel/UMNN"),
    (("iaf",), "IAF (Kingma et al. 2016)", "https://github.com/openai/iaf"),
    (("vae",), "VAE (Kingma & Welling 2014)", ""),
    (("circular_flow",), "Normalizing flows on tori and spheres (Rezende et al. 2020)", ""),
    (("residual_flow",), "Residual Flows (Chen et al. 2019)",
     "https://github.com/rtqichen/residual-flows"),
]  # fmt: skip
OTHER_PAPER = ("Other experiments", "")
METRIC_UNITS = {
    "bpd": "bits/dim (lower is better)",
    "ppll": "per-point log-likelihood, nats (higher is better)",
    "ll": "test log-likelihood, nats (higher is better)",
    "nll": "test negative log-likelihood, nats (lower is better)",
    "ll_logit_space": "log-likelihood in logit space, nats (not comparable with bits/dim)",
}
#: modules left out of the API reference: the package's entry point and compiled-kernel sources
API_SKIP = re.compile(r"(^|\.)_|\.csrc(\.|$)|^survae\.configs")


def _rst_title(text: str, char: str = "=") -> str:
    return f"{text}\n{char * len(text)}\n"


def own_docstring(obj: Any) -> str:
    """The docstring written for ``obj`` itself (not one inherited from a base class)."""
    doc = obj.__dict__.get("__doc__") if inspect.isclass(obj) else obj.__doc__
    return inspect.cleandoc(doc) if isinstance(doc, str) and doc.strip() else ""


def config_keys(obj: Any) -> list[tuple[str, str, str]]:
    """(key, type, default) of each keyword ``obj`` takes; default ``"required"`` if none."""
    try:
        sig = inspect.signature(obj)
    except (TypeError, ValueError):
        return []
    keys = []
    for p in sig.parameters.values():
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) or p.name == "self":
            continue
        ann = p.annotation
        ann = (
            ""
            if ann is p.empty
            else (ann if isinstance(ann, str) else inspect.formatannotation(ann))
        )
        default = "required" if p.default is p.empty else repr(p.default)
        keys.append((p.name, ann, default))
    return keys


def _yaml_value(name: str, ann: str) -> str:
    """A placeholder for a required key, from its name and type."""
    if "int" in ann:
        return "2" if "channel" in name or "feature" in name or "dim" in name else "1"
    if "float" in ann:
        return "1.0"
    if "bool" in ann:
        return "true"
    return "???"  # Hydra's marker for a value that must be given


def yaml_example(kind: str, name: str, keys: list[tuple[str, str, str]]) -> str:
    """A minimal config naming ``name`` with its required keys."""
    required = [(k, _yaml_value(k, t)) for k, t, d in keys if d == "required"]
    if kind in ("architecture", "dataset"):
        head = "architecture" if kind == "architecture" else "name"
        block = "\n".join([f"{head}: {name}"] + [f"{k}: {v}" for k, v in required])
        return YAML_PLACE[kind].format(block=block)
    entry = "{" + ", ".join([f"name: {name}"] + [f"{k}: {v}" for k, v in required]) + "}"
    return YAML_PLACE[kind].format(entry=entry)


def catalogue_page(kind: str, name: str, obj: Any) -> str:
    target = f"{obj.__module__}.{obj.__qualname__}"
    directive = "autoclass" if inspect.isclass(obj) else "autofunction"
    keys = config_keys(obj)
    lines = [
        f".. _{kind}-{name}:\n",
        _rst_title(name),
        f"Registered {kind} ``{name}``: :py:obj:`{target}`.\n",
        f".. {directive}:: {target}",
        "   :no-index:\n",
        _rst_title("Config keys", "-"),
    ]
    if keys:
        lines += [
            ".. list-table::",
            "   :header-rows: 1\n",
            "   * - key",
            "     - type",
            "     - default",
        ]
        for key, ann, default in keys:
            lines.append(f"   * - ``{key}``")
            lines.append(f"     - ``{ann}``" if ann else "     -")
            lines.append(f"     - ``{default}``" if default != "required" else "     - required")
        lines.append("")
        lines.append("Keys that the enclosing model knows (channel counts, shapes) are filled in "
                     "by the builder; a config gives the rest.\n")  # fmt: skip
    else:
        lines.append("No keys.\n")
    lines += [_rst_title("Example", "-"), ".. code-block:: yaml\n"]
    lines += ["   " + line for line in yaml_example(kind, name, keys).splitlines()]
    return "\n".join(lines) + "\n"


def registry_entries() -> dict[str, dict[str, Any]]:
    """kind -> {name: registered object}, after importing everything that registers."""
    import survae  # noqa: F401  (registers layers, networks, distributions, architectures)
    from survae import registry

    return {
        kind: {n: registry.get(kind, n) for n in registry.available(kind)}
        for kind in registry.KINDS
    }


def first_sentence(text: str, stops: str = ".") -> str:
    """``text`` up to its first full stop (or other ``stops`` character) outside brackets and
    ````literals````, on one line; abbreviations such as "et al." do not end it."""
    text = " ".join(text.split())
    depth, literal = 0, False
    for i, ch in enumerate(text):
        if text.startswith("``", i):
            literal = not literal
        if literal:
            continue
        depth += {"(": 1, ")": -1}.get(ch, 0)
        at_end = text[i + 1 : i + 2] in ("", " ") and not text[:i].endswith((" al", "e.g", "i.e"))
        if depth == 0 and (ch == "." and at_end or ch in stops.replace(".", "")):
            return text[:i]
    return text


def write_catalogue(out: Path) -> dict[str, list[str]]:
    """One page per registered name under ``out/<kind>/``, and an index with a table per kind
    (name and the first sentence of its docstring); returns kind -> names written."""
    written: dict[str, list[str]] = {}
    index = [_rst_title("Layer catalogue"),
             "Every name a config can use, generated from ``survae.registry``.\n"]  # fmt: skip
    for kind, entries in registry_entries().items():
        (out / kind).mkdir(parents=True, exist_ok=True)
        index += [_rst_title(KIND_TITLES[kind], "-"), KIND_INTROS[kind] + "\n",
                  ".. list-table::", "   :widths: 30 70\n"]  # fmt: skip
        for name, obj in entries.items():
            _write(out / kind / f"{name}.rst", catalogue_page(kind, name, obj))
            summary = first_sentence(own_docstring(obj).split("\n\n")[0])
            index += [f"   * - :doc:`{name} <{kind}/{name}>`", f"     - {summary}"]
        index += ["", ".. toctree::", "   :hidden:\n"] + [f"   {kind}/{n}" for n in entries]
        index.append("")
        written[kind] = list(entries)
    _write(out / "index.rst", "\n".join(index))
    return written


def experiment_summary(path: Path) -> str:
    """The first clause of an experiment config's leading comment (what the model is)."""
    words: list[str] = []
    for line in path.read_text().splitlines():
        if not line.startswith("#"):
            break
        if "@package" not in line:
            words.append(line.lstrip("#").strip())
    return first_sentence(" ".join(words), stops=".:;")


def paper_of(name: str, tags: Sequence[str] = ()) -> tuple[str, str]:
    """(paper, official code URL) of experiment ``name``: by its name's prefix, else by a tag
    (``official_example``: the official SurVAE library's examples)."""
    for prefixes, paper, url in PAPERS:
        if any(name == p or name.startswith(p + "_") for p in prefixes):
            return paper, url
    for prefixes, paper, url in PAPERS:
        if set(prefixes) & set(tags):
            return paper, url
    return OTHER_PAPER


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def zoo_row(name: str, target: dict[str, Any], record: Path, summary: str, paper: str) -> str:
    """One experiment's table row: name, published value and source, recorded value, model."""
    published, source = "", target.get("source", "")
    # under the paper's heading, "Glow (Kingma & Dhariwal 2018), Table 2" and "Glow, Table 2"
    # are "Table 2"; "MAF, Table 1" under Real NVP's heading stays
    short = paper.split(" (")[0]
    cite = paper[len(short) :].strip()
    if cite and cite in source:
        source = source.split(cite, 1)[1].lstrip(", ")
    for alias in (short, "".join(w[0] for w in short.split()).upper()):
        source = source.removeprefix(f"{alias}, ")
    if target:
        bound = "" if target.get("exact") else " (bound)"
        published = f"{target['value']} {target['metric']}{bound}"
    recorded = ""
    if record.is_file():
        r = json.loads(record.read_text())
        recorded = f"{r['test']:.3f} {r.get('metric', '')}"
        if r.get("steps") is not None:
            recorded += f" ({r['steps']} steps)"
    cells = [f"`{name}`", published, source, recorded, summary]
    return "| " + " | ".join(_cell(c) for c in cells) + " |"


ZOO_INTRO = """# Paper zoo

Every experiment in `configs/experiment/`, by paper, generated from the configs, the published
targets (`experiments/targets.yaml`) and the recorded runs (`experiments/runs/*/results.json`;
the budget and hardware of each are in `experiments/results.md`). Each one runs with

```bash
python run.py experiment=NAME
```

A recorded run on a short budget is not comparable with the published number: see
[recorded results](results.md). An empty cell means no published number (the toy experiments'
papers show density plots) or no recorded run. Units:

"""


def zoo_page(root: Path = ROOT) -> str:
    """The paper zoo: a section per paper (with its official code), a row per experiment."""
    targets = yaml.safe_load((root / "experiments/targets.yaml").read_text()) or {}
    sections: dict[tuple[str, str], list[str]] = {(p, u): [] for _, p, u in PAPERS}
    figures = []
    for path in sorted((root / "configs/experiment").glob("*.yaml")):
        name = path.stem
        record = root / "experiments/runs" / name / "results.json"
        paper = paper_of(name, (yaml.safe_load(path.read_text()) or {}).get("tags") or [])
        row = zoo_row(name, targets.get(name) or {}, record, experiment_summary(path), paper[0])
        sections.setdefault(paper, []).append(row)
        figures += [(name, f) for f in sorted((root / "experiments/figures").glob(f"{name}*.png"))]
    parts = [ZOO_INTRO + "\n".join(f"- `{m}`: {u}" for m, u in METRIC_UNITS.items()) + "\n"]
    for (paper, url), rows in sections.items():
        if not rows:
            continue
        code = f"Official code: <{url}>" if url else "No official code is linked here."
        parts.append(
            f"## {paper}\n\n{code}\n\n| experiment | published | source | recorded | model |\n"
            "|---|---|---|---|---|\n" + "\n".join(rows) + "\n"
        )
    parts.append("## Figures of the recorded runs\n")
    parts += [
        f"```{{figure}} ../experiments/figures/{fig.name}\n:width: 45%\n:alt: {name}\n\n"
        f"`{name}`: recorded run\n```\n"
        for name, fig in figures
    ]
    return "\n".join(parts)


def _public_modules() -> list[str]:
    import survae

    names = ["survae"]
    for info in pkgutil.walk_packages(survae.__path__, "survae."):
        if not API_SKIP.search(info.name):
            names.append(info.name)
    return sorted(names)


def write_api(out: Path) -> list[str]:
    """One automodule page per public module; returns the module names."""
    out.mkdir(parents=True, exist_ok=True)
    modules = []
    for name in _public_modules():
        try:
            importlib.import_module(name)
        except Exception as err:  # noqa: BLE001  (an optional dependency a module needs)
            raise RuntimeError(f"API reference: cannot import {name}: {err}") from err
        modules.append(name)
        body = [_rst_title(name), f".. automodule:: {name}", "   :members:",
                "   :show-inheritance:", "   :ignore-module-all:\n"]  # fmt: skip
        _write(out / f"{name}.rst", "\n".join(body))
    index = [_rst_title("API reference"),
             "Every public module of the package, from its docstrings.\n",
             ".. toctree::", "   :maxdepth: 1\n"] + [f"   {m}" for m in modules]  # fmt: skip
    _write(out / "index.rst", "\n".join(index) + "\n")
    return modules


def _write(path: Path, text: str) -> None:
    """Write only when the text changed, so Sphinx rebuilds only what changed."""
    if not path.is_file() or path.read_text() != text:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def _prune(folder: Path, keep: set[Path]) -> None:
    """Remove generated pages of names that are no longer registered."""
    for path in folder.rglob("*.rst"):
        if path not in keep:
            path.unlink()


def generate(docs_dir: Path) -> None:
    catalogue = docs_dir / "catalogue"
    written = write_catalogue(catalogue)
    keep = {catalogue / "index.rst"} | {
        catalogue / k / f"{n}.rst" for k, ns in written.items() for n in ns
    }
    _prune(catalogue, keep)
    modules = write_api(docs_dir / "api")
    _prune(
        docs_dir / "api",
        {docs_dir / "api" / f"{m}.rst" for m in modules} | {docs_dir / "api/index.rst"},
    )
    _write(docs_dir / "zoo.md", zoo_page())
    results = (ROOT / "experiments/results.md").read_text()
    _write(docs_dir / "results.md", results.replace("](figures/", "](../experiments/figures/"))


def _on_builder_inited(app: Any) -> None:
    generate(Path(app.srcdir))


def setup(app: Any) -> dict[str, Any]:
    app.connect("builder-inited", _on_builder_inited)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
