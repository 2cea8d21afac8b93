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
RESUMED = re.compile(r"resumed from the backup: continuing at epoch (\d+)")


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
    assert len(history["loss"]) == EPOCHS - first_epoch + 1  # only the remaining epochs ran
    assert (run_dir / "checkpoints" / f"epoch-{EPOCHS:03d}.index").is_file()
    # The cosine schedule ends at alpha * lr after all steps of all epochs: a rerun that had
    # restarted its step count would still be higher up the curve.
    final_rate = config.training.learning_rate * 0.1
    assert history["learning_rate"][-1] == pytest.approx(final_rate, rel=1e-3)
