"""Chooses the tf.distribute strategy named in the config.

`default` is the no-op strategy (one device), `mirrored` uses every local GPU (or the CPU),
`multi_worker_mirrored` reads the cluster from TF_CONFIG, one process per worker. The same
training code runs under all three; only the global batch is split differently.
"""

from __future__ import annotations

import json
import logging
import os

import tensorflow as tf

logger = logging.getLogger(__name__)


def make_strategy(name: str) -> tf.distribute.Strategy:
    if name == "default":
        strategy = tf.distribute.get_strategy()
    elif name == "mirrored":
        strategy = tf.distribute.MirroredStrategy()
    elif name == "multi_worker_mirrored":
        if "TF_CONFIG" not in os.environ:
            raise ValueError("training.strategy=multi_worker_mirrored needs TF_CONFIG in the environment "
                             "(cluster workers and this process's task index)")
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
    else:
        raise ValueError(f"training.strategy: unknown strategy {name!r}")
    logger.info("distribution strategy %s with %d replica(s)", name, strategy.num_replicas_in_sync)
    return strategy


def is_chief() -> bool:
    """Whether this process writes shared outputs (summaries, exports) in multi-worker training.

    The chief is the `chief` task if the cluster has one, else worker 0; a process without
    TF_CONFIG is always the chief.
    """
    config = json.loads(os.environ.get("TF_CONFIG", "{}"))
    task = config.get("task")
    if not task:
        return True
    if "chief" in config.get("cluster", {}):
        return task.get("type") == "chief"
    return task.get("type") == "worker" and int(task.get("index", 0)) == 0


def task_name() -> str:
    """This process's cluster task as `type-index`, e.g. `worker-1`; `chief-0` if no TF_CONFIG."""
    task = json.loads(os.environ.get("TF_CONFIG", "{}")).get("task") or {}
    return f"{task.get('type', 'chief')}-{int(task.get('index', 0))}"
