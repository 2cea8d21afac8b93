"""Crash and resume: SIGKILL `tfmmsearch train` after its first epoch, rerun the same command.

The rerun must pick up from RUN_DIR/backup (BackupAndRestore) instead of starting over: it
says so, runs only the remaining epochs, and its optimizer step count (hence the learning-rate
schedule) carries on from where the killed run stopped.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.training.conftest import cli_train_command, subprocess_env
from tfmmsearch.config import save_config

EPOCHS = 3
RESUMED = re.compile(r"resumed from the backup: continuing at epoch (\d+), step (\d+)")


def backed_up_epoch(backup_dir: Path) -> int:
    """The 0-based epoch of the newest backup, or -1 while there is none (or it is mid-write)."""
    import tensorflow as tf

    try:
        for state in backup_dir.rglob("checkpoint"):
            prefix = tf.train.latest_checkpoint(str(state.parent))
            if prefix:
                reader = tf.train.load_checkpoint(prefix)
                return int(reader.get_tensor("ckpt_saved_epoch/.ATTRIBUTES/VARIABLE_VALUE"))
    except (tf.errors.NotFoundError, tf.errors.DataLossError, KeyError, ValueError):
        pass  # the writer replaced the files under us: look again
    return -1


def kill_after_first_epoch(command: list[str], run_dir: Path, log: Path, timeout: float = 120.0):
    with log.open("w") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT,
                                   env=subprocess_env())
        try:
            deadline = time.monotonic() + timeout
            while backed_up_epoch(run_dir / "backup") < 1:  # a backup taken in epoch 2 or later
                if process.poll() is not None:
                    pytest.fail(f"training exited ({process.returncode}) before it could be killed:"
                                f"\n{log.read_text()[-3000:]}")
                if time.monotonic() > deadline:
                    pytest.fail(f"no backup after epoch 1 within {timeout:.0f} s:\n"
                                f"{log.read_text()[-3000:]}")
                time.sleep(0.05)
            process.send_signal(signal.SIGKILL)
        finally:
            process.kill()
            process.wait()
    assert process.returncode == -signal.SIGKILL


@pytest.mark.slow
def test_killed_run_resumes_from_the_backup_and_completes(tmp_path, tiny_config):
    config = tiny_config(f"training.epochs={EPOCHS}", "training.steps_per_checkpoint=4")
    config_path = tmp_path / "config.yaml"
    save_config(config, config_path)
    run_dir = tmp_path / "run"
    command = cli_train_command(config_path, run_dir)

    kill_after_first_epoch(command, run_dir, tmp_path / "killed.log")
    assert not (run_dir / "metrics.json").exists()
    assert (run_dir / "checkpoints" / "epoch-001.index").is_file()

    rerun = subprocess.run(command, capture_output=True, text=True, env=subprocess_env(),
                           timeout=300)
    output = rerun.stdout + rerun.stderr
    (tmp_path / "rerun.log").write_text(output)
    assert rerun.returncode == 0, output[-3000:]
    resumed = RESUMED.search(output)
    assert resumed, f"the rerun did not resume:\n{output[-3000:]}"
    first_epoch = int(resumed.group(1))
    assert 1 < first_epoch <= EPOCHS

    metrics = json.loads((run_dir / "metrics.json").read_text())
    history = metrics["history"]
    # The whole run's history, the killed process's epochs included (history.json).
    assert len(history["loss"]) == EPOCHS
    killed_epochs = json.loads((run_dir / "history.json").read_text())["epochs"]
    assert sorted(map(int, killed_epochs)) == list(range(1, EPOCHS + 1))
    assert (run_dir / "checkpoints" / f"epoch-{EPOCHS:03d}.index").is_file()
    # The cosine schedule ends at alpha * lr after all steps of all epochs: a rerun that had
    # restarted its step count would still be higher up the curve.
    final_rate = config.training.learning_rate * 0.1
    assert history["learning_rate"][-1] == pytest.approx(final_rate, rel=1e-3)


# --------------------------------------------------------------------------- in process


class SimulatedCrash(RuntimeError):
    pass


def crash_at(monkeypatch, epoch: int | None = None, batch: int | None = None):
    """Makes the next `train` call crash when epoch `epoch` (0-based) or training batch
    `batch` (0-based, first epoch) begins: after everything before it was backed up."""
    from tfmmsearch.training import train as train_module

    class CrashingNotice(train_module.ResumeNotice):
        def on_epoch_begin(self, e, logs=None):
            super().on_epoch_begin(e, logs)
            if e == epoch:
                raise SimulatedCrash(f"epoch {e}")

        def on_train_batch_begin(self, b, logs=None):
            if b == batch:
                raise SimulatedCrash(f"batch {b}")
            super().on_train_batch_begin(b, logs)

    monkeypatch.setattr(train_module, "ResumeNotice", CrashingNotice)


def test_a_resumed_run_keeps_the_whole_history_and_a_finished_one_is_left_alone(
        tmp_path, tiny_config, monkeypatch, caplog):
    from tfmmsearch.config import ConfigError
    from tfmmsearch.training.train import train

    config = tiny_config("training.epochs=2")
    run_dir = tmp_path / "run"
    crash_at(monkeypatch, epoch=1)
    with pytest.raises(SimulatedCrash):
        train(config, run_dir, verbose=0)
    first = json.loads((run_dir / "history.json").read_text())["epochs"]
    assert list(first) == ["1"]
    monkeypatch.undo()

    caplog.set_level("INFO")
    result = train(config, run_dir, verbose=0)
    assert "continuing at epoch 2, step 1" in caplog.text
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["complete"] is True
    assert len(metrics["history"]["loss"]) == 2
    assert metrics["history"]["loss"][0] == pytest.approx(first["1"]["loss"])
    assert metrics["validation"]["val_ndcg@10"] == pytest.approx(
        metrics["history"]["val_ndcg@10"][-1])
    assert result.history == metrics["history"]

    # Rerunning the finished run is a no-op that says so: nothing is rewritten.
    before = {path: path.read_bytes() for path in (run_dir / "metrics.json",
                                                    run_dir / "config.yaml")}
    caplog.clear()
    again = train(config, run_dir, verbose=0)
    assert "already complete" in caplog.text
    assert again.already_complete and not result.already_complete
    assert again.history == metrics["history"]
    assert {path: path.read_bytes() for path in before} == before

    # A changed config is refused, naming the keys, before anything is touched.
    changed = tiny_config("training.epochs=3", "model.embedding_dim=8")
    with pytest.raises(ConfigError) as error:
        train(changed, run_dir, verbose=0)
    assert "training.epochs: 2 -> 3" in str(error.value)
    assert "model.embedding_dim: 16 -> 8" in str(error.value)
    assert "Nothing was changed" in str(error.value)
    assert {path: path.read_bytes() for path in before} == before


def test_a_mid_epoch_resume_says_where_it_resumed(tmp_path, tiny_config, monkeypatch, caplog):
    from tfmmsearch.training.train import train

    config = tiny_config("training.epochs=1", "training.steps_per_checkpoint=2")
    run_dir = tmp_path / "run"
    crash_at(monkeypatch, batch=3)  # batches 0-1 backed up after step 2, crash in step 4
    with pytest.raises(SimulatedCrash):
        train(config, run_dir, verbose=0)
    monkeypatch.undo()
    caplog.set_level("INFO")
    train(config, run_dir, verbose=0)
    assert re.search(r"resumed from the backup: continuing at epoch 1, step 3 of \d+", caplog.text)
