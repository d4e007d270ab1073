"""The ``survae-run`` command (and ``python run.py``): train an experiment from Hydra configs.

``survae-run experiment=NAME [key=value ...]`` composes ``configs/train.yaml`` with the chosen
groups and hands the resolved config, as a plain mapping, to :func:`survae.training.train`.
``survae-run resume=RUN_FOLDER [key=value ...]`` continues a run in its own folder from its
saved config and ``last.ckpt``. ``survae-run --list-experiments`` prints every experiment.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import survae  # noqa: F401  (first: makes torchvision importable on CPU-only torch builds)
from survae.app.failures import (
    exit_with_error,
    full_traceback_wanted,
    is_user_error,
    remove_if_nothing_ran,
)
from survae.app.run_log import tee_output
from survae.config_check import ConfigError

#: ``--debug`` or ``HYDRA_FULL_ERROR=1``: errors keep their traceback
_FULL_TRACEBACK = False


def config_dir() -> str:
    """The folder holding ``train.yaml``: the checkout's ``configs/`` or the installed copy."""
    here = Path(__file__).resolve().parents[1]  # the package folder (survae/)
    # the package's own copy first (in a checkout a link to ../configs), so a stray
    # site-packages/configs of another distribution is never picked up
    for candidate in (here / "configs", here.parent / "configs"):
        if (candidate / "train.yaml").is_file():
            return str(candidate)
    raise FileNotFoundError(
        f"survae's configs were not found next to {here} (looked for configs/train.yaml); "
        "reinstall survae (pip install .) or run from a source checkout"
    )


def list_experiments() -> list[tuple[str, str]]:
    """``(name, description)`` for every ``experiment/*.yaml``; the description is the first
    sentence of the file's first comment paragraph (after the ``@package`` directive), whole
    even where it runs over several comment lines."""
    rows = []
    for path in sorted(Path(config_dir(), "experiment").glob("*.yaml")):
        paragraph: list[str] = []
        for line in path.read_text().splitlines():
            text = line[1:].strip() if line.startswith("#") else None
            if text is not None and text.startswith("@package"):
                continue
            if not text:  # a blank comment line or the config itself ends the paragraph
                if paragraph:
                    break
                continue
            paragraph.append(text)
        rows.append((path.stem, first_sentence(" ".join(paragraph))))
    return rows


#: abbreviations whose full stop does not end a sentence
_ABBREVIATIONS = ("e.g.", "i.e.", "et al.", "cf.", "vs.", "Sec.", "Fig.", "Eq.", "App.", "Tab.")


def first_sentence(text: str) -> str:
    """``text`` up to the first full stop that ends a sentence: followed by a space or the
    end, outside parentheses and brackets, not an abbreviation (:data:`_ABBREVIATIONS`)."""
    depth = 0
    for i, char in enumerate(text):
        if char in "([{":
            depth += 1
        elif char in ")]}":
            depth = max(depth - 1, 0)
        elif char == "." and depth == 0 and (i + 1 == len(text) or text[i + 1] == " "):
            if not text[: i + 1].endswith(_ABBREVIATIONS):
                return text[: i + 1]
    return text


def sweep_objective(results: dict[str, Any], objective: str = "val_best") -> float | None:
    """The value returned to sweepers: the validation metric (best or last), never test."""
    from survae.training.validation import OBJECTIVES

    if objective not in OBJECTIVES:
        raise ConfigError(f"objective: {objective!r} is not valid; valid: {', '.join(OBJECTIVES)}")
    value = results.get("val", {}).get("best" if objective == "val_best" else "last")
    return None if value is None else float(value)


class SweepJobError(RuntimeError):
    """A sweep's job ended without a result, or with an error (:mod:`survae.app.launcher`)."""


#: how this command was started (``python run.py``, ``survae-run``); sweep jobs inherit it
PROG_ENV = "SURVAE_PROG"


def exit_if_interrupted(results: dict[str, Any]) -> None:
    """After a signal stopped training (latest state saved), exit with the shell's code for
    it; Slurm's time-limit signals first requeue the job (:func:`survae.training.slurm.requeue`)."""
    signame = results.get("interrupted")
    if not signame:
        return
    if signame in ("SIGUSR1", "SIGUSR2"):
        from survae.training import slurm

        slurm.requeue(str(signame))
    sys.exit(128 + int(getattr(signal, str(signame))))


def reproducible_command(overrides: Sequence[str]) -> str:
    """The command line that runs this job alone: the program and the job's own overrides (a
    sweep job's values, not the sweep's lists, nor the launcher that ran it)."""
    prog = os.environ.get(PROG_ENV) or "python run.py"
    return " ".join([prog, *(shlex.quote(str(o)) for o in overrides)])


def _job_config(cfg: Any) -> dict[str, Any]:
    """The run's config as a plain mapping, with how to run it again and, in a sweep, the W&B
    folder all of the sweep's jobs share (``wandb leet <sweep>`` lists them together)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode
    from omegaconf import OmegaConf

    container = OmegaConf.to_container(cfg, resolve=True)
    hydra_cfg = HydraConfig.get()
    run_info = container.setdefault("run_info", {}) or {}
    run_info["command"] = reproducible_command(list(hydra_cfg.overrides.task))
    container["run_info"] = run_info
    logger = container.get("logger") or {}
    if hydra_cfg.mode == RunMode.MULTIRUN and logger.get("type") == "wandb":
        logger.setdefault("dir", os.path.abspath(str(hydra_cfg.sweep.dir)))
    return container


def _hydra_main():
    import hydra
    from omegaconf import DictConfig

    from survae.training import resolvers

    resolvers.register()

    @hydra.main(version_base="1.3", config_path=config_dir(), config_name="train")
    def main(cfg: DictConfig) -> float | None:
        from survae.training import train

        with one_line_errors_in_single_runs(cfg), tee_output(_job_log()):
            container = _job_config(cfg)
            results = train(container)
        exit_if_interrupted(results)
        return sweep_objective(results, str(container.get("objective", "val_best")))

    return main


def _job_log() -> Path:
    """Hydra's log file of this job (``<run folder>/cli.log``), which also gets what the run
    prints (:func:`survae.app.run_log.tee_output`)."""
    from hydra.core.hydra_config import HydraConfig

    hydra_cfg = HydraConfig.get()
    return Path(hydra_cfg.runtime.output_dir) / f"{hydra_cfg.job.name}.log"


@contextlib.contextmanager
def one_line_errors_in_single_runs(cfg: Any = None) -> Iterator[None]:
    """In a single (not multirun) Hydra job, a configuration error ends the process with its
    one line (Hydra would print "Error executing job" and the traceback); in a sweep it fails
    the job, so the sweeper records the failed trial and goes on, and the job's folder gets a
    results.json saying so (state failed, the reason) for the sweep's report."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    try:
        yield
    except Exception as err:
        if _FULL_TRACEBACK or not is_user_error(err):
            raise
        if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
            _record_sweep_job_failure(cfg, err)
            raise
        if HydraConfig.initialized():
            remove_if_nothing_ran(HydraConfig.get().runtime.output_dir)
        exit_with_error(err)


def _record_sweep_job_failure(cfg: Any, err: BaseException) -> None:
    """results.json (state failed) in a sweep job's folder that a configuration error stopped
    before the run owned it; a folder with a record already keeps it."""
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf

    from survae.training.run_record import write_failure_record

    hydra_cfg = HydraConfig.get()
    try:
        plain = OmegaConf.to_container(cfg, resolve=True) if cfg is not None else {}
    except Exception:  # the config itself does not resolve: what Hydra knows of the job
        plain = {"task_name": hydra_cfg.job.name}
    if not isinstance(plain, dict):
        plain = {}
    plain.setdefault("run_info", {"overrides": list(hydra_cfg.overrides.task)})
    write_failure_record(hydra_cfg.runtime.output_dir, plain, err, trained=False)


def _resume_main(argv: Sequence[str]) -> None:
    """``resume=RUN_FOLDER`` (or a lone ``ckpt_path=``): the run's saved config, the command
    line's overrides on top, continued in the same folder from its latest checkpoint."""
    from survae.training import train
    from survae.training.resume import resume_config

    cfg, changes = resume_config(argv)
    cfg.setdefault("run_info", {})["command"] = reproducible_command(argv)
    with tee_output(Path(cfg["paths"]["output_dir"]) / "cli.log"):  # the run's log goes on
        if changes:
            print(f"[survae] overrides on top of the saved config: {', '.join(changes)}")
        results = train(cfg)
    exit_if_interrupted(results)


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of ``survae-run`` and ``run.py``: a configuration or environment error is
    one line on stderr with exit status 2 (``--debug`` or ``HYDRA_FULL_ERROR=1``: the
    traceback; :mod:`survae.app.failures`)."""
    global _FULL_TRACEBACK
    argv = list(sys.argv[1:] if argv is None else argv)
    _FULL_TRACEBACK = full_traceback_wanted(argv)
    argv = [a for a in argv if a != "--debug"]
    try:
        _dispatch(argv)
    except BrokenPipeError:  # `run.py --help | head`: the reader has gone, nothing to say
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except SweepJobError as err:  # the sweep's table is printed; one line says what failed
        if _FULL_TRACEBACK:
            raise
        print(f"Error: {err}", file=sys.stderr, flush=True)
        sys.exit(1)
    except Exception as err:
        if _FULL_TRACEBACK or not is_user_error(err):
            raise
        exit_with_error(err)


def _dispatch(argv: list[str]) -> None:
    if "--list-experiments" in argv:
        rows = list_experiments()
        width = max((len(n) for n, _ in rows), default=0)
        try:
            print("\n".join(f"{name:<{width}}  {desc}" for name, desc in rows), flush=True)
        except BrokenPipeError:  # `survae-run --list-experiments | head`
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return
    if "--version" in argv or "-V" in argv:
        from survae.__main__ import version_text

        print(version_text())  # the same line as `survae --version`
        return
    from survae.training.resume import wants_resume

    if wants_resume(argv):
        _resume_main(argv)
        return
    # Hydra re-raises instead of printing its own report, so main() can print one line
    os.environ["HYDRA_FULL_ERROR"] = "1"
    prog = os.path.basename(sys.argv[0])
    os.environ[PROG_ENV] = prog if prog.startswith("survae") else f"python {sys.argv[0]}"
    sys.argv = [sys.argv[0], *argv]
    _hydra_main()()
