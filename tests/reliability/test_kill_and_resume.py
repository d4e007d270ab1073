"""Faults a multi-day run meets, on a real ``run.py`` subprocess with a tiny toy model:
SIGKILL mid-epoch, mid-checkpoint-write and between an epoch's last step checkpoint and its
epoch-end save, SIGTERM (preemption), two launches in the same
second, a shared folder. Resumed runs must end with bit-identical weights to unbroken ones."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parents[1] / "training"))
from conftest import QUIET, ROOT, cli_process, tiny_data  # noqa: E402  (tests/training/conftest.py)

from survae.checkpoints import load_checkpoint  # noqa: E402

#: 512 training points in batches of 64: 8 steps an epoch
TINY = [
    "experiment=plain_flow_checkerboard",
    *tiny_data(512),
    *QUIET,
    "callbacks.checkpoint_every_n_steps=3",
    "callbacks.checkpoint_every_minutes=null",
]
STEPS_PER_EPOCH = 8
#: the runs import the fault module below: resuming them imports it again only when told to
TRUSTED = "trust_config=true"

#: a user module (imported with ``imports=[...]``) that kills its own process at a chosen
#: training step, or in the middle of writing a checkpoint; inert without its variables
FAULTS = textwrap.dedent(
    """
    import os, signal

    import torch

    import survae.training.checkpoint as checkpoint
    from survae.training.module import FlowModule

    KILL_AT = int(os.environ.get("FAULT_KILL_AT_STEP", "-1"))
    KILL_IN_WRITE = int(os.environ.get("FAULT_KILL_IN_WRITE_AT_STEP", "-1"))
    TERM_AT = int(os.environ.get("FAULT_TERM_AT_STEP", "-1"))
    _step = FlowModule.training_step


    def training_step(self, batch, batch_idx):
        if self.global_step == KILL_AT:
            os.kill(os.getpid(), signal.SIGKILL)
        if self.global_step == TERM_AT:
            os.kill(os.getpid(), signal.SIGTERM)
        return _step(self, batch, batch_idx)


    FlowModule.training_step = training_step
    _save = torch.save


    def save(obj, f, *args, **kwargs):
        step = obj.get("global_step", -1) if isinstance(obj, dict) else -1
        if step == KILL_IN_WRITE:
            f.write(b"half a checkpoint")
            f.flush()
            os.kill(os.getpid(), signal.SIGKILL)
        return _save(obj, f, *args, **kwargs)


    checkpoint.torch.save = save
    KILL_IN_VAL = int(os.environ.get("FAULT_KILL_IN_VALIDATION_AT_STEP", "-1"))
    _validate = FlowModule.validation_step


    def validation_step(self, batch, batch_idx):
        if self.trainer.state.fn == "fit" and self.global_step == KILL_IN_VAL:
            os.kill(os.getpid(), signal.SIGKILL)
        return _validate(self, batch, batch_idx)


    FlowModule.validation_step = validation_step
    """
)


def _run(args: list[str], tmp_path: Path, env: dict | None = None) -> subprocess.Popen:
    (tmp_path / "faults.py").write_text(FAULTS)
    return cli_process(args, tmp_path, {"PYTHONPATH": str(tmp_path), **(env or {})})


def _finish(proc: subprocess.Popen, timeout: int = 300) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def _weights(run_dir: Path) -> dict[str, torch.Tensor]:
    ckpt = load_checkpoint(run_dir / "checkpoints" / "last.ckpt")
    state = {k: v for k, v in ckpt["state_dict"].items() if k.startswith("model.")}
    for i, opt in enumerate(ckpt["optimizer_states"]):
        for pid, s in opt["state"].items():
            state.update({f"optim{i}.{pid}.{k}": v for k, v in s.items() if torch.is_tensor(v)})
    return state


def _assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = _weights(a), _weights(b)
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), f"{k} differs between the unbroken and resumed runs"


def _step_of(run_dir: Path) -> int:
    return int(load_checkpoint(run_dir / "checkpoints" / "last.ckpt")["global_step"])


@pytest.mark.parametrize(
    ("stop", "kill_at"),
    [("trainer.max_steps=30", 13), ("trainer.max_epochs=4", 21)],
    ids=["max_steps", "max_epochs"],
)
def test_sigkill_mid_epoch_then_resume_is_bit_identical(tmp_path, stop, kill_at):
    base = [*TINY, stop, "imports=[faults]", "test=false"]
    straight = _run([*base, f"hydra.run.dir={tmp_path}/straight"], tmp_path)
    killed = _run(
        [*base, f"hydra.run.dir={tmp_path}/killed"],
        tmp_path,
        env={"FAULT_KILL_AT_STEP": str(kill_at)},
    )
    code, _, err = _finish(killed)
    assert code == -signal.SIGKILL, err[-2000:]
    saved = _step_of(tmp_path / "killed")
    # the latest state lost at most checkpoint_every_n_steps steps, and is mid-epoch
    assert kill_at - 3 <= saved <= kill_at and saved % STEPS_PER_EPOCH != 0
    assert not (tmp_path / "killed" / "results.json").exists()

    resumed = _run([f"resume={tmp_path}/killed", TRUSTED], tmp_path)
    code, out, err = _finish(resumed)
    assert code == 0, err[-3000:]
    assert "resuming from" in out
    code, _, err = _finish(straight)
    assert code == 0, err[-3000:]
    _assert_same_weights(tmp_path / "straight", tmp_path / "killed")
    record = json.loads((tmp_path / "killed" / "results.json").read_text())
    assert record["finished"] and record["steps"] == _step_of(tmp_path / "straight")


@pytest.mark.parametrize(
    ("stop", "kills"),
    [("trainer.max_epochs=3", (8, 16)), ("trainer.max_steps=24", (8,))],
    ids=["max_epochs", "max_steps"],
)
def test_sigkill_between_last_batch_and_epoch_end_saves_resumes_bit_identical(
    tmp_path, stop, kills
):
    """A step checkpoint on an epoch's last batch, then SIGKILL in that epoch's validation
    (before the epoch-end save): the resumed run goes on into the next epoch with the loop
    state, weights and optimizer state of an unbroken run (killed again one epoch later, it
    still trains each epoch once)."""
    base = [*TINY, stop, "callbacks.checkpoint_every_n_steps=4", "imports=[faults]", "test=false"]
    straight = _run([*base, f"hydra.run.dir={tmp_path}/straight"], tmp_path)
    run_dir = tmp_path / "killed"
    for i, step in enumerate(kills):
        args = [f"resume={run_dir}", TRUSTED] if i else [*base, f"hydra.run.dir={run_dir}"]
        code, _, err = _finish(_run(args, tmp_path, env=_kill_in_validation(step)))
        assert code == -signal.SIGKILL, err[-2000:]
        ckpt = load_checkpoint(run_dir / "checkpoints" / "last.ckpt")
        assert ckpt["global_step"] == step and ckpt["data_position"]["epoch_done"]
        assert ckpt["epoch_closed"]  # the step checkpoint of the last batch, as closed
    code, _, err = _finish(_run([f"resume={run_dir}", TRUSTED], tmp_path))
    assert code == 0, err[-3000:]
    code, _, err = _finish(straight)
    assert code == 0, err[-3000:]
    _assert_same_weights(tmp_path / "straight", run_dir)
    runs = (tmp_path / "straight", run_dir)
    loops = [load_checkpoint(d / "checkpoints" / "last.ckpt")["loops"]["fit_loop"] for d in runs]
    assert loops[0] == loops[1]
    records = [json.loads((d / "results.json").read_text()) for d in runs]
    assert records[0]["steps"] == records[1]["steps"] == 24
    assert records[0]["epochs"] == records[1]["epochs"]


def _kill_in_validation(step: int) -> dict[str, str]:
    return {"FAULT_KILL_IN_VALIDATION_AT_STEP": str(step)}


def test_sigkill_mid_checkpoint_write_keeps_the_previous_one_and_cleans_up(tmp_path):
    base = [*TINY, "trainer.max_steps=20", "imports=[faults]", "test=false"]
    run_dir = tmp_path / "run"
    proc = _run(
        [*base, f"hydra.run.dir={run_dir}"], tmp_path, env={"FAULT_KILL_IN_WRITE_AT_STEP": "9"}
    )
    code, _, err = _finish(proc)
    assert code == -signal.SIGKILL, err[-2000:]
    orphans = list((run_dir / "checkpoints").glob(".tmp-*.ckpt"))
    assert orphans, "the killed write should have left its temporary file"
    assert _step_of(run_dir) == 8  # the previous last.ckpt (epoch end) is intact and loadable

    code, out, err = _finish(_run([f"resume={run_dir}", TRUSTED], tmp_path))
    assert code == 0, err[-3000:]
    assert "left by a checkpoint write that was killed" in out
    assert not list((run_dir / "checkpoints").glob(".tmp-*"))
    straight = _run([*base, f"hydra.run.dir={tmp_path}/straight"], tmp_path)
    assert _finish(straight)[0] == 0
    _assert_same_weights(tmp_path / "straight", run_dir)


def test_sigterm_saves_latest_state_exits_cleanly_and_resumes_exactly(tmp_path):
    base = [*TINY, "trainer.max_steps=20", "imports=[faults]", "test=false"]
    run_dir = tmp_path / "run"
    code, out, err = _finish(
        _run([*base, f"hydra.run.dir={run_dir}"], tmp_path, env={"FAULT_TERM_AT_STEP": "10"})
    )
    assert code == 128 + signal.SIGTERM, err[-3000:]
    assert "stopped by SIGTERM" in out
    # the command to continue works as printed: this interpreter and this checkout's run.py
    assert f"continue with: {sys.executable} {ROOT / 'run.py'} resume={run_dir}" in out
    assert "Traceback" not in err
    assert _step_of(run_dir) == 11  # saved right after the step during which it arrived
    record = json.loads((run_dir / "results.json").read_text())
    assert record["finished"] is False and record["interrupted"] == "SIGTERM"

    assert _finish(_run([f"resume={run_dir}", TRUSTED], tmp_path))[0] == 0
    assert _finish(_run([*base, f"hydra.run.dir={tmp_path}/straight"], tmp_path))[0] == 0
    _assert_same_weights(tmp_path / "straight", run_dir)


def test_two_runs_started_in_the_same_second_keep_both_records(tmp_path):
    args = [*TINY, "trainer.max_steps=4", "seed=0"]
    procs = [_run(args, tmp_path), _run([*args[:-1], "seed=1"], tmp_path)]
    for proc in procs:
        code, _, err = _finish(proc)
        assert code == 0, err[-3000:]
    records = sorted((tmp_path / "outputs").rglob("results.json"))
    assert len(records) == 2, records
    assert {json.loads(r.read_text())["seed"] for r in records} == {0, 1}
    assert all(r.parent.parent.name == "plain_flow_checkerboard" for r in records)


def test_a_second_run_in_a_busy_folder_is_refused(tmp_path):
    run_dir = tmp_path / "shared"
    first = _run([*TINY, "trainer.max_epochs=100000", f"hydra.run.dir={run_dir}"], tmp_path)
    deadline = time.time() + 120
    while not (run_dir / ".survae-run.lock").exists() and time.time() < deadline:
        time.sleep(0.2)
    second = _run([*TINY, "trainer.max_steps=4", f"hydra.run.dir={run_dir}"], tmp_path)
    code, _, err = _finish(second)
    first.send_signal(signal.SIGTERM)
    _finish(first)
    assert code != 0
    assert f"run folder {run_dir} is in use by process {first.pid}" in err


def test_sampler_resume_position_continues_the_interrupted_order():
    from survae.data.base import EpochShuffleSampler

    straight = EpochShuffleSampler(40, seed=3)
    straight.set_epoch(2)
    epoch2 = list(straight)
    straight.set_epoch(3)
    epoch3 = list(straight)

    mid = EpochShuffleSampler(40, seed=3)
    mid.resume_at(2, 16)
    mid.set_epoch(7)  # Lightning's counter is ignored once the position is known
    assert list(mid) == epoch2[16:] and mid.current_epoch == 2
    assert list(mid) == epoch3

    done = EpochShuffleSampler(40, seed=3)
    done.resume_at(2, 40, epoch_done=True)
    assert list(done) == epoch3


def test_augmentation_of_a_resumed_epoch_repeats_the_unbroken_one():
    """Augmented batches depend on the run seed and the batch, not on how far the global
    generator has moved: a loader resumed mid-epoch (or with other workers) yields exactly the
    batches an unbroken one yields."""
    from torch.utils.data import DataLoader

    from survae.data.augment import RandomFlipTranslate
    from survae.data.base import ArrayDataset, EpochShuffleSampler, collate

    images = torch.randint(0, 256, (64, 1, 4, 4), dtype=torch.uint8)
    data = ArrayDataset(images, transform=RandomFlipTranslate(flip=True, translate=1, seed=5))

    def batches(sampler: EpochShuffleSampler) -> list[torch.Tensor]:
        return list(DataLoader(data, batch_size=8, sampler=sampler, collate_fn=collate))

    straight = EpochShuffleSampler(64, seed=5)
    straight.set_epoch(1)
    torch.manual_seed(0)
    unbroken = batches(straight)
    resumed = EpochShuffleSampler(64, seed=5)
    resumed.resume_at(1, 3 * 8)
    torch.manual_seed(123)  # the global generator is elsewhere after a restart
    assert all(torch.equal(a, b) for a, b in zip(unbroken[3:], batches(resumed), strict=True))
    first = data.__getitems__(list(range(8)))
    assert not torch.equal(first, images[:8])  # it does augment
    assert torch.equal(first, data.__getitems__(list(range(8))))  # a function of the batch
    other_seed = ArrayDataset(images, transform=RandomFlipTranslate(translate=1, seed=6))
    assert not torch.equal(other_seed.__getitems__(list(range(8))), first)
