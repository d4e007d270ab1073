"""Sweeps and jobs through a real Slurm: the README's sweep and its report, time limits,
preemption, plain ``sbatch --requeue``, DDP over two tasks and a crashing job.

All of them are started at once by the ``runs`` fixture (the cluster runs what fits on its
CPUs; the interruptions happen in background threads once a job trains), then each test checks
its part. A requeued job must finish with the same final weights, bit for bit, as an unbroken
run of the same config outside Slurm.
"""

from __future__ import annotations

import glob
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.cluster

ROOT = Path(__file__).resolve().parents[2]
PARTITION = os.environ.get("SURVAE_SLURM_PARTITION", "debug")

#: a sweep on the cluster, as the README's: one CPU, no GPU, 1 GB per job
SLURM = [
    "hydra/launcher=slurm",
    f"hydra.launcher.partition={PARTITION}",
    "hydra.launcher.gpus_per_node=0",
    "hydra.launcher.cpus_per_task=1",
    "hydra.launcher.mem_gb=1",
    "trainer=cpu",
]
#: console output fit for log files; no figures
QUIET = [
    "callbacks.rich_progress_bar=false",
    "trainer.enable_progress_bar=false",
    "callbacks.samples.every_n_epochs=0",
]


def training(steps: int) -> list[str]:
    """A toy AbsFlow run of ``steps`` optimisation steps in one epoch, with no periodic
    checkpoint (a signal comes before the first one)."""
    return [
        "experiment=abs_flow_corners",
        "seed=0",
        f"data.train_size={128 * steps}",
        "data.val_size=256",
        "data.test_size=256",
        "trainer.max_epochs=1",
        f"trainer.max_steps={steps}",
        "callbacks.checkpoint_every_n_steps=null",
        "callbacks.checkpoint_every_minutes=null",
        *QUIET,
    ]


class Command:
    """A command run in the background, its output in a file (read when it ends)."""

    def __init__(self, args: list[str], cwd: Path, env: dict[str, str], name: str):
        cwd.mkdir(parents=True, exist_ok=True)
        self.cwd, self.log = cwd, cwd / f"{name}.out"
        with open(self.log, "w") as out:
            self.proc = subprocess.Popen(args, cwd=cwd, env=env, stdout=out, stderr=out)

    def wait(self, timeout: float = 900) -> tuple[int, str]:
        """Exit status and output (stdout and stderr together)."""
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise
        return code, self.log.read_text()


def sweep(cwd: Path, env: dict[str, str], *overrides: str, name: str = "sweep") -> Command:
    """``run.py -m`` on the cluster in ``cwd`` (its folders land in ``cwd/multirun``)."""
    args = [sys.executable, str(ROOT / "run.py"), "-m", *SLURM, *overrides]
    return Command(args, cwd, env, name)


def local_run(cwd: Path, env: dict[str, str], *overrides: str) -> Command:
    """``run.py`` here, outside Slurm: the unbroken run a resumed job is compared with."""
    env = {k: v for k, v in env.items() if not k.startswith("SLURM_") or k == "SLURM_CONF"}
    args = [sys.executable, str(ROOT / "run.py"), "trainer=cpu", "logger=csv", *overrides]
    return Command(args, cwd, env, "local")


def job_folders(cwd: Path) -> list[Path]:
    """The job folders of the (only) sweep under ``cwd/multirun``, by job number."""
    folders = [Path(p) for p in glob.glob(str(cwd / "multirun" / "*" / "[0-9]*_*"))]
    return sorted(folders, key=lambda p: int(p.name.split("_", 1)[0]))


def results(folder: Path) -> dict:
    return json.loads((folder / "results.json").read_text())


def final_weights(folder: Path) -> dict[str, torch.Tensor]:
    """The model's weights at the end of training (``last.ckpt``)."""
    ckpt = torch.load(folder / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    return ckpt["state_dict"]


def assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = final_weights(a), final_weights(b)
    assert wa.keys() == wb.keys()
    differ = [k for k in wa if not torch.equal(wa[k], wb[k])]
    assert not differ, f"final weights of {a} and {b} differ in {differ[:5]}"


def summary(output: str) -> dict[int, dict[str, str]]:
    """The sweep's closing table: job number -> {id, state, restarts, metric, folder}."""
    lines = output.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("[survae] sweep:"))
    header = lines[start + 1].split()
    rows = {}
    for line in lines[start + 2 :]:
        cells = line.split(None, len(header) - 1)
        if len(cells) < len(header) or not cells[0].isdigit():
            break
        rows[int(cells[0])] = dict(zip(header[1:], cells[1:]))
    return rows


def wait_for(predicate, what: str, timeout: float = 600, every: float = 1.0):
    """Poll ``predicate`` until it returns something true; that value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def training_started(log: Path) -> bool:
    """Whether a job's log says that its training has started (in the current attempt)."""
    return log.is_file() and "[survae] heap:" in log.read_text().rsplit("Starting with", 1)[-1]


def sweep_job_log(cwd: Path, job: int = 0, task: int = 0) -> Path | None:
    """The submitit log of a sweep's job (of one of its tasks), once the job has started; a
    sweep of one job is a plain job (``<id>``), else an array (``<id>_<job>``)."""
    submitit = cwd / "multirun" / "*" / ".submitit"
    found = glob.glob(str(submitit / f"*_{job}" / f"*_{task}_log.out"))
    if not found and job == 0:
        found = [p for p in glob.glob(str(submitit / "*" / f"*_{task}_log.out"))
                 if "_" not in Path(p).parent.name]  # fmt: skip
    return Path(found[0]) if found else None


def scontrol(env: dict[str, str], *args: str) -> str:
    return subprocess.run(
        ["scontrol", *args], env=env, capture_output=True, text=True, check=True, timeout=60
    ).stdout


def job_field(env: dict[str, str], job_id: str, field: str) -> str:
    out = scontrol(env, "show", "job", "-o", job_id)
    return dict(f.partition("=")[::2] for f in out.split()).get(field, "")


#: seconds of training the time-limit jobs need: more than one attempt of a 1-minute job has
#: (twice that, at the speed measured while the suite's other jobs share the cores: alone, a
#: job runs up to twice as fast and must still outlast its first attempt)
LONG_S = 150
#: steps of the preempted jobs
SHORT = 1500
TINY = [
    "data.train_size=1024",
    "data.val_size=256",
    "data.test_size=256",
    "trainer.max_epochs=2",
    *QUIET,
]


def _in_background(target, *args) -> threading.Thread:
    errors: list[BaseException] = []

    def run():
        try:
            target(*args)
        except BaseException as err:  # noqa: BLE001 -- reported by the test that needs it
            errors.append(err)

    thread = threading.Thread(target=run, daemon=True)
    thread.errors = errors  # type: ignore[attr-defined]
    thread.start()
    return thread


def _requeue_when_training(cwd: Path, env: dict, job: int = 0) -> None:
    """Preempt a sweep's job once it trains: ``scontrol requeue`` (SIGTERM to the job)."""
    log = wait_for(lambda: sweep_job_log(cwd, job), f"job {job} of {cwd.name} to start")
    wait_for(lambda: training_started(log), f"job {job} of {cwd.name} to train", every=0.5)
    time.sleep(2)
    scontrol(env, "requeue", log.parent.name)


def _usr2_while_starting(cwd: Path, env: dict, job: int = 0) -> None:
    """Send the time-limit warning (SIGUSR2) to a sweep's job while its Python starts."""
    log = wait_for(lambda: sweep_job_log(cwd, job), f"job {job} of {cwd.name} to start", every=0.2)
    job_id = log.parent.name
    for _ in range(200):
        if job_field(env, job_id, "JobState") == "RUNNING":
            time.sleep(1)  # the step's Python runs (its own start is not protected)
            done = subprocess.run(["scancel", "--signal=USR2", job_id], env=env, check=False)
            if done.returncode == 0:
                return
        time.sleep(0.2)
    raise AssertionError(f"could not signal job {job_id}")


def _sbatch_requeued(cwd: Path, env: dict) -> str:
    """Plain ``sbatch --requeue run.py`` with ``SURVAE_RUN_STAMP=$SLURM_JOB_ID``, requeued
    with ``scontrol requeue`` once it trains; its job id."""
    cwd.mkdir(parents=True, exist_ok=True)
    overrides = " ".join(["trainer=cpu", "logger=csv", *training(SHORT)])
    script = (
        f"export SURVAE_RUN_STAMP=$SLURM_JOB_ID; exec {sys.executable} {ROOT / 'run.py'} "
        + overrides
    )
    job_id = subprocess.run(
        ["sbatch", "--parsable", "--requeue", "--open-mode=append", "-p", "debug", "-c", "1",
         "--mem=1G", "-o", str(cwd / "slurm-%j.out"), "--wrap", script],
        cwd=cwd, env=env, capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    log = cwd / f"slurm-{job_id}.out"
    wait_for(lambda: log.is_file() and "[survae] heap:" in log.read_text(), "sbatch job to train")
    time.sleep(2)
    scontrol(env, "requeue", job_id)
    return job_id


@pytest.fixture(scope="module")
def runs(slurm, tmp_path_factory):
    """Every run of the suite, started at once."""
    env, base = slurm, tmp_path_factory.mktemp("cluster")
    started = time.monotonic()
    r: dict = {"base": base, "env": env}
    r["ref_short"] = local_run(base / "ref_short", env, *training(SHORT))
    # every step logs: the SIGTERM that kills W&B's service comes while the run logs
    r["preempt"] = sweep(
        base / "preempt", env, "logger=wandb", "trainer.log_every_n_steps=1", *training(SHORT)
    )
    r["preempt_thread"] = _in_background(_requeue_when_training, base / "preempt", env)
    r["sbatch_id"] = []
    r["sbatch_thread"] = _in_background(
        lambda: r["sbatch_id"].append(_sbatch_requeued(base / "sbatch", env))
    )
    r["readme"] = sweep(
        base / "readme", env, "experiment=abs_flow_corners,plain_flow_corners", "seed=0,1", *TINY
    )
    r["usr2_thread"] = _in_background(_usr2_while_starting, base / "readme", env)
    r["crash"] = sweep(
        base / "crash", env, "experiment=abs_flow_corners", "logger=csv", "seed=0,oops", *TINY
    )
    ddp = ["trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2"]
    r["ddp"] = sweep(
        base / "ddp", env, *ddp, "hydra.launcher.tasks_per_node=2", "logger=csv,none",
        *training(SHORT // 2),
    )  # fmt: skip
    r["ddp_thread"] = _in_background(_requeue_when_training, base / "ddp", env)
    # the time-limit jobs train LONG_S seconds at this machine's present speed (a faster
    # machine must not finish before Slurm's warning)
    code, out = r["ref_short"].wait()
    assert code == 0, out[-2000:]
    rate = SHORT / results(_local_folder(base / "ref_short"))["wall_time_s"]
    r["long"] = long = int(min(max(rate * LONG_S, 1000), 60000))
    print(f"\n[cluster] {rate:.0f} steps/s: time-limit jobs of {long} steps")
    r["ref_long"] = local_run(base / "ref_long", env, *training(long))
    r["limit"] = sweep(
        base / "limit", env, "hydra.launcher.timeout_min=1", "logger=wandb,csv", *training(long)
    )
    yield r
    elapsed = time.monotonic() - started
    print(f"\n[cluster] suite: {elapsed:.0f} s")


def test_readme_sweep_every_job_and_the_report(runs):
    code, out = runs["readme"].wait()
    assert code == 0, out[-3000:]
    rows = summary(out)
    assert [row["state"] for row in rows.values()] == ["COMPLETED"] * 4, out[-3000:]
    folders = job_folders(runs["base"] / "readme")
    assert len(folders) == 4
    for folder in folders:
        record = results(folder)
        assert record["finished"] and record["test"] is not None
        # the command that runs this job alone, not submitit's
        assert record["command"].startswith("python ") and "_submit" not in record["command"]
        assert "seed=" in record["command"] and "," not in record["command"].split("seed=")[1]
    sweep_dir = folders[0].parent
    assert not list(sweep_dir.glob(".submitit/*%j*")), "an unexpanded .submitit/%j folder"
    # one W&B folder for the sweep, with every job's run
    assert len(list((sweep_dir / "wandb").glob("offline-run-*"))) >= 4
    report = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "report.py"), str(sweep_dir)],
        capture_output=True, text=True, env=runs["env"], timeout=300,
    )  # fmt: skip
    assert report.returncode == 0, report.stderr[-2000:]
    assert (sweep_dir / "report.md").is_file() and (sweep_dir / "report.png").is_file()
    assert "abs_flow_corners" in (sweep_dir / "report.md").read_text()


def test_a_job_warned_while_it_starts_is_requeued_not_failed(runs):
    _, out = runs["readme"].wait()
    runs["usr2_thread"].join(timeout=600)
    assert not runs["usr2_thread"].errors, runs["usr2_thread"].errors
    row = summary(out)[0]
    assert row["state"] == "COMPLETED" and int(row["restarts"]) >= 1, row


@pytest.mark.parametrize("job", [0, 1], ids=["wandb", "csv"])
def test_time_limit_requeues_and_resumes_bit_identically(runs, job):
    code, out = runs["limit"].wait()
    assert code == 0, out[-3000:]
    assert "Error executing job" not in out
    row = summary(out)[job]
    assert row["state"] == "COMPLETED" and int(row["restarts"]) >= 1, row
    folder = job_folders(runs["base"] / "limit")[job]
    log = sweep_job_log(runs["base"] / "limit", job).read_text()
    # warned before the first periodic checkpoint: saved after the step, requeued, resumed
    assert "SIGUSR2: saving the latest state" in log and "resuming from" in log
    assert results(folder)["finished"] and results(folder)["steps"] == runs["long"]
    ref_code, ref_out = runs["ref_long"].wait()
    assert ref_code == 0, ref_out[-2000:]
    assert_same_weights(folder, _local_folder(runs["base"] / "ref_long"))


def test_preempted_job_resumes_bit_identically_with_wandb(runs):
    code, out = runs["preempt"].wait()
    runs["preempt_thread"].join(timeout=60)
    assert not runs["preempt_thread"].errors, runs["preempt_thread"].errors
    assert code == 0, out[-3000:]
    row = summary(out)[0]
    assert row["state"] == "COMPLETED" and int(row["restarts"]) >= 1, row
    folder = job_folders(runs["base"] / "preempt")[0]
    # the requeued job continued the same W&B run
    wandb_runs = list((folder.parent / "wandb").glob("offline-run-*"))
    run_id = (folder / "wandb-run-id").read_text().strip()
    assert len(wandb_runs) >= 2 and all(p.name.endswith(run_id) for p in wandb_runs)
    runs["ref_short"].wait()
    assert_same_weights(folder, _local_folder(runs["base"] / "ref_short"))


def test_plain_sbatch_requeue_resumes_in_its_folder(runs):
    runs["sbatch_thread"].join(timeout=900)
    assert not runs["sbatch_thread"].errors, runs["sbatch_thread"].errors
    env, (job_id,) = runs["env"], runs["sbatch_id"]
    state = wait_for(
        lambda: (s := job_field(env, job_id, "JobState")) in ("COMPLETED", "FAILED") and s,
        "the sbatch job to end",
        timeout=900,
    )
    assert state == "COMPLETED"
    assert int(job_field(env, job_id, "Restarts")) >= 1
    folder = runs["base"] / "sbatch" / "outputs" / "abs_flow_corners" / job_id
    assert "resuming from" in (runs["base"] / "sbatch" / f"slurm-{job_id}.out").read_text()
    assert results(folder)["finished"]
    runs["ref_short"].wait()
    assert_same_weights(folder, _local_folder(runs["base"] / "ref_short"))


def test_ddp_over_two_tasks_is_requeued_and_resumes(runs):
    code, out = runs["ddp"].wait()
    runs["ddp_thread"].join(timeout=60)
    assert not runs["ddp_thread"].errors, runs["ddp_thread"].errors
    assert code == 0, out[-3000:]
    rows = summary(out)
    assert int(rows[0]["restarts"]) >= 1 and rows[1]["state"] == "COMPLETED", rows
    requeued, unbroken = job_folders(runs["base"] / "ddp")
    for job in (0, 1):  # both tasks trained (one rank each)
        task1 = sweep_job_log(runs["base"] / "ddp", job, task=1)
        assert task1 is not None and "[survae] model:" in task1.read_text()
    assert results(requeued)["finished"]
    assert results(requeued)["steps"] == results(unbroken)["steps"] > 0


def test_ddp_resume_is_bit_identical(runs):
    """Each rank's position in the epoch survives the requeue (survae's sampler shards itself,
    so Lightning does not wrap it in a DistributedSampler of its own)."""
    runs["ddp"].wait()
    requeued, unbroken = job_folders(runs["base"] / "ddp")
    assert_same_weights(requeued, unbroken)


def test_crashing_job_is_named_and_the_others_finish(runs):
    code, out = runs["crash"].wait()
    assert code != 0
    rows = summary(out)
    assert rows[0]["state"] == "COMPLETED" and rows[1]["state"] == "FAILED", rows
    assert "job #1 (" in out and "seed=oops" in out and "_log.out" in out
    assert results(job_folders(runs["base"] / "crash")[0])["finished"]


def _local_folder(cwd: Path) -> Path:
    (folder,) = (cwd / "outputs" / "abs_flow_corners").iterdir()
    return folder


def test_srun_hint_is_silent_outside_slurm_jobs(runs):
    _, out = runs["ref_short"].wait()
    assert "srun` command is available" not in out
