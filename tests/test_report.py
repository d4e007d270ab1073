"""scripts/report.py turns run records into a table against the targets."""

import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _report():
    spec = importlib.util.spec_from_file_location("report", ROOT / "scripts" / "report.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_table_from_results_and_csv(tmp_path):
    run = tmp_path / "outputs" / "glow_cifar10" / "r1"
    run.mkdir(parents=True)
    (run / "results.json").write_text(
        json.dumps(
            {
                "experiment": "glow_cifar10",
                "metric": "bpd",
                "test": 3.5,
                "exact": False,
                "steps": 1000,
                "epochs": 2,
                "wall_time_s": 120.0,
                "hardware": "CPU",
                "date": "2026-01-01",
            }
        )
    )
    csv_dir = tmp_path / "outputs" / "maf_power" / "r2" / "csv"
    csv_dir.mkdir(parents=True)
    (csv_dir / "hparams.yaml").write_text("task_name: maf_power\n")
    (csv_dir / "metrics.csv").write_text("epoch,step,test/nll,test/exact\n3,300,-0.04,1.0\n")
    text = _report().main([str(tmp_path / "outputs")])
    rows = {line.split("|")[1].strip(): line for line in text.splitlines()[2:]}
    glow = [c.strip() for c in rows["glow_cifar10"].split("|")]
    assert glow[2:7] == ["bpd", "3.500", "bound", "3.35 bpd", "0.150"]
    maf = [c.strip() for c in rows["maf_power"].split("|")]
    # nll -0.04 means ll 0.04; published MAF (5) ll 0.14 -> difference -0.1
    assert maf[3] == "-0.040" and maf[4] == "exact" and maf[6] == "-0.100"
