"""Tiny training runs shared by the training tests: each is trained once per test session."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import REPO_ROOT, make_tiny_config


@dataclass
class TinyRun:
    """A finished `train()` call: its config, run directory and result."""

    config: object
    run_dir: Path
    result: object


@pytest.fixture(scope="session")
def tiny_work_dir(tmp_path_factory, tiny_hub_cache) -> Path:
    """A data work dir whose synthetic catalog exists before any run starts.

    Runs of the tiny config share it (the feature cache then serves later runs), and worker
    processes started together only read the catalog instead of generating it at once.
    """
    from tfmmsearch.data.prepare import prepare_data

    work_dir = tmp_path_factory.mktemp("tiny_data")
    prepare_data(make_tiny_config(tiny_hub_cache, work_dir), progress=False)
    return work_dir


@pytest.fixture(scope="session")
def tiny_config(tiny_hub_cache, tiny_work_dir):
    """`tiny_config("training.epochs=1", ...)` -> the tiny Config with those overrides."""

    def make(*overrides: str):
        return make_tiny_config(tiny_hub_cache, tiny_work_dir, list(overrides))

    return make


@pytest.fixture(scope="session")
def frozen_run(tmp_path_factory, tiny_config) -> TinyRun:
    """Frozen towers with cached features, 2 epochs."""
    from tfmmsearch.training.train import train

    config = tiny_config()
    run_dir = tmp_path_factory.mktemp("frozen_run")
    return TinyRun(config, run_dir, train(config, run_dir, verbose=0))


# --------------------------------------------------------------------------- helpers


def cli_train_command(config_path: Path, run_dir: Path) -> list[str]:
    """`python -m tfmmsearch.cli train` on a saved config, as a user would run it."""
    return [sys.executable, "-m", "tfmmsearch.cli", "train", "--config", str(config_path),
            "--out", str(run_dir)]


def subprocess_env(**extra: str) -> dict[str, str]:
    """The test environment without TF_CONFIG (unless given), plus `extra`."""
    env = {key: value for key, value in os.environ.items() if key != "TF_CONFIG"}
    env.update(TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1", **extra)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    return env


def read_checkpoint(prefix: Path | str) -> dict[str, np.ndarray]:
    """Every tensor of a TF checkpoint, by its key."""
    import tensorflow as tf

    reader = tf.train.load_checkpoint(str(prefix))
    return {key: reader.get_tensor(key) for key in reader.get_variable_to_shape_map()}
