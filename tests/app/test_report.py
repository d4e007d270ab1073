"""survae-report (survae.app.report, scripts/report.py): run records grouped over seeds, marked
runs kept apart from published targets, failed, diverged and incomplete runs listed with their
state and reason, older records, sweep folders with their table and plot."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
TARGETS = str(ROOT / "experiments" / "targets.yaml")


class _Report:
    """survae.app.report with the checkout's published targets (tests run from any folder)."""

    def __getattr__(self, name: str):
        from survae.app import report

        return getattr(report, name)

    def main(self, argv: list[str]) -> str:
        from survae.app import report

        return report.main([*argv, "--targets", TARGETS])


def _report() -> _Report:
    return _Report()


def _script():
    spec = importlib.util.spec_from_file_location("report", ROOT / "scripts" / "report.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _write_run(folder: Path, overrides: list[str] | None = None, **record) -> Path:
    """A run folder with results.json (and Hydra's overrides.yaml when ``overrides`` given)."""
    folder.mkdir(parents=True)
    rec = {"experiment": "glow_cifar10", "metric": "bpd", "exact": False, "steps": 100,
           "epochs": 1, "wall_time_s": 60.0, "hardware": "CPU", **record}  # fmt: skip
    (folder / "results.json").write_text(json.dumps(rec))
    if overrides is not None:
        (folder / ".hydra").mkdir()
        (folder / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    return folder


def _rows(text: str) -> list[list[str]]:
    """Table cells per data row (header and separator dropped)."""
    return [[c.strip() for c in line.split("|")[1:-1]] for line in text.splitlines()[2:]]


COLUMNS = ["experiment", "overrides", "metric", "n", "ours", "exact", "published", "difference",
           "val", "steps", "epochs", "wall", "hardware", "notes"]  # fmt: skip


def _by_column(text: str) -> list[dict[str, str]]:
    return [dict(zip(COLUMNS, row, strict=True)) for row in _rows(text)]


def test_table_from_results_and_csv(tmp_path):
    _write_run(tmp_path / "outputs" / "glow_cifar10" / "r1", test=3.5, epochs=2, steps=1000)
    csv_dir = tmp_path / "outputs" / "maf_power" / "r2" / "csv"
    csv_dir.mkdir(parents=True)
    (csv_dir / "hparams.yaml").write_text("task_name: maf_power\n")
    (csv_dir / "metrics.csv").write_text("epoch,step,test/nll,test/exact\n3,300,-0.04,1.0\n")
    rows = {r["experiment"]: r for r in _by_column(_report().main([str(tmp_path / "outputs")]))}
    glow = rows["glow_cifar10"]
    assert [glow[k] for k in ("metric", "n", "ours", "exact", "published", "difference")] == [
        "bpd", "1", "3.500", "bound", "3.35 bpd", "0.150"
    ]  # fmt: skip
    assert glow["steps"] == "1000" and glow["notes"] == "–"
    maf = rows["maf_power"]
    # nll -0.04 means ll 0.04; published MAF (5) ll 0.14 -> difference -0.1
    assert maf["ours"] == "-0.040" and maf["exact"] == "exact" and maf["difference"] == "-0.100"


def test_seeds_are_averaged_with_their_spread_and_count(tmp_path):
    out = tmp_path / "outputs"
    for seed, value in enumerate([3.0, 3.2, 3.4]):
        _write_run(out / f"s{seed}", overrides=[f"seed={seed}"], test=value, seed=seed,
                   val=value + 0.1)  # fmt: skip
    _write_run(out / "lr", overrides=["optim.lr=0.01", "seed=0"], test=4.0, seed=0)
    rows = _by_column(_report().main([str(out)]))
    assert len(rows) == 2
    plain = next(r for r in rows if r["overrides"] == "–")
    # mean 3.2, sample std sqrt(((-.2)^2 + 0 + .2^2) / 2) = 0.2
    assert plain["n"] == "3" and plain["ours"] == "3.200 ± 0.200"
    assert plain["difference"] == f"{3.2 - 3.35:.3f}" and plain["val"] == "3.300"
    lr = next(r for r in rows if r["overrides"] == "optim.lr=0.01")
    assert lr["n"] == "1" and lr["ours"] == "4.000"


@pytest.mark.parametrize(
    ("record", "note"),
    [
        ({"fake_data": True, "data_name": "cifar10"}, "fake data"),
        ({"debug": True}, "debug"),
        ({"finished": False}, "unfinished"),
        ({"command": "run.py experiment=glow_cifar10 debug=fast_dev_run"}, "debug"),  # older
    ],
)
def test_marked_runs_are_kept_apart_and_never_compared(tmp_path, record, note):
    out = tmp_path / "outputs"
    _write_run(out / "good", test=3.4, seed=0)
    _write_run(out / "marked", test=9.9, seed=1, **record)
    rows = _by_column(_report().main([str(out)]))
    assert len(rows) == 2, "a marked run must not be averaged with the others"
    good = next(r for r in rows if r["notes"] == "–")
    marked = next(r for r in rows if r["notes"] != "–")
    assert good["ours"] == "3.400" and good["difference"] == "0.050"
    assert marked["ours"] == "9.900" and note in marked["notes"]
    assert "not compared" in marked["notes"]
    assert marked["published"] == "–"
    assert marked["difference"] == ("stand-in data" if note == "fake data" else "–")


def test_older_record_reads_overrides_from_hydra(tmp_path):
    out = tmp_path / "outputs"
    _write_run(out / "a", overrides=["model.coupling=additive", "seed=1"], test=3.6)
    # display-only keys (progress bars) do not split runs; an empty list means "not recorded"
    _write_run(out / "b", overrides=["model.coupling=additive", "seed=2",
                                     "trainer.enable_progress_bar=false"], test=3.8)  # fmt: skip
    _write_run(out / "c", overrides=["model.coupling=additive", "seed=3"], test=3.7)
    rec = json.loads((out / "c" / "results.json").read_text())
    (out / "c" / "results.json").write_text(json.dumps({**rec, "overrides": []}))
    (row,) = _by_column(_report().main([str(out)]))
    assert row["overrides"] == "model.coupling=additive" and row["n"] == "3"
    assert row["ours"] == f"3.700 ± {math.sqrt(0.01):.3f}"


def test_unfinished_csv_log_reports_val(tmp_path):
    csv_dir = tmp_path / "outputs" / "glow_cifar10" / "r" / "csv"
    csv_dir.mkdir(parents=True)
    (csv_dir / "hparams.yaml").write_text("task_name: glow_cifar10\n")
    (csv_dir / "metrics.csv").write_text("epoch,step,val/bpd,val/exact\n0,50,4.2,0.0\n")
    (row,) = _by_column(_report().main([str(tmp_path / "outputs")]))
    assert row["ours"] == "4.200 (val)" and "unfinished" in row["notes"]
    assert row["difference"] == "–"


def _sweep(tmp_path: Path) -> Path:
    sweep = tmp_path / "multirun" / "optuna_2026-01-01_12-00-00"
    sweep.mkdir(parents=True)
    (sweep / "multirun.yaml").write_text("hydra: {}\n")
    job = 0
    for lr, values in (("0.001", [3.0, 3.2]), ("0.01", [3.5, 3.7]), ("0.1", [5.0, 5.0])):
        for seed, value in enumerate(values):
            _write_run(sweep / f"{job}_glow_cifar10", overrides=[f"optim.lr={lr}", f"seed={seed}"],
                       test=value, seed=seed)  # fmt: skip
            job += 1
    return sweep


def test_sweep_folder_gets_a_table_and_a_plot(tmp_path):
    report = _report()
    sweep = _sweep(tmp_path)
    assert report.is_sweep_folder(sweep)
    text = report.main([str(sweep)])
    rows = {r["overrides"]: r for r in _by_column(text)}
    assert set(rows) == {"optim.lr=0.001", "optim.lr=0.01", "optim.lr=0.1"}
    assert rows["optim.lr=0.001"]["ours"] == f"3.100 ± {math.sqrt(0.02):.3f}"
    assert rows["optim.lr=0.1"]["ours"] == "5.000 ± 0.000" and rows["optim.lr=0.1"]["n"] == "2"
    assert (sweep / "report.md").read_text().strip() == text.strip()
    from PIL import Image

    with Image.open(sweep / "report.png") as image:
        assert image.width >= 600 and image.height >= 400
    assert report.swept_keys(report.group_runs(report.collect_local([sweep]))) == ["optim.lr"]


def test_plot_goes_where_asked(tmp_path):
    sweep = _sweep(tmp_path)
    plot, md = tmp_path / "figs" / "lr.png", tmp_path / "t.md"
    _report().main([str(sweep), "--plot", str(plot), "--markdown", str(md)])
    assert plot.is_file() and md.read_text().startswith("| experiment |")
    assert not (sweep / "report.png").exists()


def test_missing_folder_is_named_and_an_empty_one_says_so(tmp_path, capsys):
    with pytest.raises(SystemExit, match="no such folder: .*nowhere"):
        _report().main([str(tmp_path / "nowhere")])
    _report().main([str(tmp_path)])
    assert f"(no runs found under {tmp_path})" in capsys.readouterr().out


def test_stand_in_data_is_recorded_from_its_marker_and_never_compared(tmp_path):
    """Stand-in files (as from ``python -m survae.data.fake power``) trained on with
    ``experiment=maf_power``: results.json says ``fake_data: true`` (from the marker, the data
    set is called "power") and the report prints "stand-in data" instead of a difference."""
    import os
    import subprocess
    import sys

    from survae.data.fake import write_fake_dataset

    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline"}
    write_fake_dataset("power", tmp_path / "data", num=200)  # the command line: test_data_fake
    run = [sys.executable, str(ROOT / "run.py"), "experiment=maf_power", "data.root=data",
           "trainer.max_steps=2", "logger=none", "callbacks.rich_progress_bar=false",
           "trainer.enable_progress_bar=false"]  # fmt: skip
    proc = subprocess.run(run, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (results,) = (tmp_path / "outputs").rglob("results.json")
    record = json.loads(results.read_text())
    assert record["data_name"] == "power" and record["fake_data"] is True
    assert record["fake_data_marker"] == str((tmp_path / "data/power/SURVAE_FAKE_DATA").resolve())
    (row,) = _by_column(_report().main([str(tmp_path / "outputs")]))
    assert row["difference"] == "stand-in data" and row["published"] == "–"
    assert "fake data" in row["notes"]
    # an older record (recorded false) is caught by the marker in its data folder too
    results.write_text(json.dumps({**record, "fake_data": False}))
    (row,) = _by_column(_report().main([str(tmp_path / "outputs")]))
    assert row["difference"] == "stand-in data"


# ------------------------------------------------------------------ runs that gave no result
def _job(sweep: Path, num: int, lr: str, seed: int, **record) -> Path:
    """Job folder ``<num>_glow_cifar10`` of a sweep as Hydra and survae write it: Hydra's
    config and overrides, survae's run_config.yaml, and results.json when ``record`` is given."""
    folder = sweep / f"{num}_glow_cifar10"
    (folder / ".hydra").mkdir(parents=True)
    overrides = [f"optim.lr={lr}", f"seed={seed}"]
    (folder / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    config = {"task_name": "glow_cifar10", "seed": seed, "data": {"name": "cifar10"}}
    (folder / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config))
    (folder / "run_config.yaml").write_text(yaml.safe_dump(config))
    if record:
        rec = {"experiment": "glow_cifar10", "metric": "bpd", "exact": False, "seed": seed,
               "overrides": overrides, "steps": 100, **record}  # fmt: skip
        (folder / "results.json").write_text(json.dumps(rec))
    return folder


def _sweep_with_casualties(tmp_path: Path) -> Path:
    sweep = tmp_path / "multirun" / "sweep"
    sweep.mkdir(parents=True)
    (sweep / "multirun.yaml").write_text("hydra: {}\n")
    for seed, value in enumerate([3.0, 3.2, 3.4]):
        _job(sweep, seed, "0.001", seed, state="finished", test=value, val=value + 0.1)
    _job(sweep, 3, "0.001", 3, state="diverged", reason="loss is NaN at step 40 (layer 3)",
         test=None, val=5.5, steps=40)  # fmt: skip
    _job(sweep, 4, "0.1", 0, state="failed", reason="ConfigError: optim.lr must be > 0")
    job = _job(sweep, 5, "0.1", 1)  # killed before its end: no results.json
    (job / "cli.log").write_text("[survae] model: 10 parameters\nEpoch 0: step 12, loss 3.1\n\n")
    offline = job / "wandb" / "offline-run-20260101_000000-abc" / "files"
    offline.mkdir(parents=True)  # recent W&B versions write no wandb-summary.json offline
    (offline / "output.log").write_text("epoch 0\n")
    return sweep


def _left_out(text: str) -> list[dict[str, str]]:
    lines = text.split("Runs left out of the table", 1)[1].splitlines()[4:]
    cols = ["experiment", "overrides", "seed", "state", "reason", "val", "steps", "folder"]
    return [dict(zip(cols, [c.strip() for c in line.split("|")[1:-1]], strict=True))
            for line in lines if line.startswith("|")]  # fmt: skip


def test_sweep_lists_failed_diverged_and_incomplete_runs_with_state_and_reason(tmp_path):
    sweep = _sweep_with_casualties(tmp_path)
    text = _report().main([str(sweep)])
    table_part = text.split("\n\n")[0]
    rows = {r["overrides"]: r for r in _by_column(table_part)}
    ok = rows["optim.lr=0.001"]
    assert ok["n"] == "3" and ok["ours"] == "3.200 ± 0.200"  # the diverged seed is not averaged
    assert "n = 3 of 4: diverged 1 left out (listed below)" in ok["notes"]
    bad = rows["optim.lr=0.1"]
    assert bad["n"] == "0" and bad["ours"] == "–"
    assert "n = 0 of 2: failed 1, incomplete 1 left out" in bad["notes"]
    listed = {r["seed"] + r["overrides"]: r for r in _left_out(text)}
    assert set(listed) == {"3optim.lr=0.001", "0optim.lr=0.1", "1optim.lr=0.1"}
    diverged = listed["3optim.lr=0.001"]
    assert diverged["state"] == "diverged" and "NaN at step 40" in diverged["reason"]
    assert diverged["val"] == "5.500" and diverged["folder"].endswith("3_glow_cifar10")
    assert listed["0optim.lr=0.1"]["state"] == "failed"
    assert "optim.lr must be > 0" in listed["0optim.lr=0.1"]["reason"]
    incomplete = listed["1optim.lr=0.1"]
    assert incomplete["state"] == "incomplete" and "no results.json" in incomplete["reason"]
    assert incomplete["reason"].endswith("its log ends: Epoch 0: step 12, loss 3.1")
    assert (sweep / "report.md").read_text().strip() == text.strip()


def test_every_run_on_its_own_row_with_its_state(tmp_path):
    text = _report().main([str(_sweep_with_casualties(tmp_path)), "--all"])
    rows = _by_column(text.split("\n\n")[0])
    assert len(rows) == 6
    diverged = next(r for r in rows if "diverged" in r["notes"])
    assert diverged["ours"] == "5.500 (val)" and "loss is NaN" in diverged["notes"]
    assert diverged["difference"] == "–"


def test_a_run_whose_lock_is_held_is_running(tmp_path):
    import os
    import socket

    from survae.app.run_records import LOCK_FILE
    from survae.training.run_folder import LOCK_FILE as TRAINING_LOCK

    assert LOCK_FILE == TRAINING_LOCK
    job = _job(tmp_path / "multirun" / "s", 0, "0.001", 0)
    owner = {"pid": os.getpid(), "host": socket.gethostname(), "started": "2026-01-01T00:00:00"}
    (job / LOCK_FILE).write_text(json.dumps(owner))
    (rec,) = _report().collect_local([tmp_path / "multirun"])
    assert rec["state"] == "running" and str(os.getpid()) in rec["reason"]


def test_records_without_state_are_finished_or_interrupted():
    from survae.app.run_records import run_state

    assert run_state({}) == "finished" and run_state({"finished": True}) == "finished"
    assert run_state({"finished": False, "interrupted": "SIGTERM"}) == "interrupted"
    assert run_state({"state": "diverged", "finished": False}) == "diverged"


def test_the_script_and_the_command_print_the_same_report(tmp_path):
    """scripts/report.py (a checkout) and ``python -m survae report`` (what ``survae report``
    and ``survae-report`` run) print the same table and the runs left out."""
    import os
    import subprocess
    import sys

    sweep = _sweep_with_casualties(tmp_path)
    out = tmp_path / "r.md"
    proc = subprocess.run(
        [sys.executable, "-m", "survae", "report", str(sweep), "--markdown", str(out)],
        capture_output=True, text=True, timeout=120, cwd=ROOT,
        env={**os.environ, "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "| diverged | loss is NaN at step 40 (layer 3) |" in proc.stdout
    assert _script().main([str(sweep), "--markdown", str(tmp_path / "s.md")]) == (
        out.read_text().strip()
    )
    with pytest.raises(SystemExit, match="^report.py: no such folder"):
        _script().main([str(tmp_path / "nowhere")])


def test_a_real_sweep_with_a_diverged_job_lists_it(tmp_path):
    """``run.py -m`` with one job whose learning rate makes the loss non-finite at once: the
    report of the sweep folder counts the good job, leaves the diverged one out and lists it
    (state diverged, the step) from the run folder survae wrote."""
    import os
    import subprocess
    import sys

    sweep = tmp_path / "sweep"
    args = [sys.executable, str(ROOT / "run.py"), "-m", "experiment=plain_flow_corners",
            "optim.lr=1e-3,1e5", "seed=0", "trainer.max_steps=4", "data.train_size=256",
            "data.val_size=64", "data.test_size=64", "logger=none",
            "callbacks.samples.every_n_epochs=0", "callbacks.rich_progress_bar=false",
            "trainer.enable_progress_bar=false", f"hydra.sweep.dir={sweep}"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline"}
    env.pop("SURVAE_RUN_STAMP", None)
    subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    text = _report().main([str(sweep)])
    rows = {
        next(o for o in r["overrides"].split() if o.startswith("optim.lr=")): r
        for r in _by_column(text.split("\n\n")[0])
    }
    assert rows["optim.lr=0.001"]["n"] == "1" and rows["optim.lr=0.001"]["notes"] == "–"
    assert rows["optim.lr=100000.0"]["n"] == "0"
    assert "diverged 1 left out" in rows["optim.lr=100000.0"]["notes"]
    (listed,) = _left_out(text)
    assert listed["state"] == "diverged" and "step 1" in listed["reason"]
    assert listed["folder"].endswith("1_plain_flow_corners")
