"""Train a survae experiment: ``python run.py experiment=NAME [key=value ...]``.

Hydra composes ``configs/train.yaml`` with the chosen groups; the resolved config is handed,
as a plain mapping, to :func:`survae.training.train`. ``python run.py --list-experiments``
prints every experiment with a one-line description.
"""

from __future__ import annotations

import sys
from pathlib import Path

import survae  # noqa: F401  (first: makes torchvision importable on CPU-only torch builds)

CONFIG_DIR = str(Path(__file__).resolve().parent / "configs")


def list_experiments() -> list[tuple[str, str]]:
    """``(name, description)`` for every ``configs/experiment/*.yaml``; the description is the
    file's first comment line."""
    rows = []
    for path in sorted(Path(CONFIG_DIR, "experiment").glob("*.yaml")):
        first = next((ln for ln in path.read_text().splitlines() if ln.startswith("#")), "#")
        desc = first.lstrip("#").strip()
        if desc.startswith("@package"):
            lines = [ln for ln in path.read_text().splitlines() if ln.startswith("#")]
            desc = lines[1].lstrip("#").strip() if len(lines) > 1 else ""
        rows.append((path.stem, desc))
    return rows


def _hydra_main():
    import hydra
    from omegaconf import DictConfig, OmegaConf

    @hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="train")
    def main(cfg: DictConfig) -> float | None:
        from survae.training import train

        OmegaConf.resolve(cfg)
        results = train(OmegaConf.to_container(cfg, resolve=True))
        value = results.get("test", {}).get(f"test/{results['metric']}")
        return None if value is None else float(value)  # returned for sweepers (Optuna)

    return main


def main() -> None:
    if "--list-experiments" in sys.argv:
        rows = list_experiments()
        width = max((len(n) for n, _ in rows), default=0)
        for name, desc in rows:
            print(f"{name:<{width}}  {desc}")
        return
    _hydra_main()()


if __name__ == "__main__":
    main()
