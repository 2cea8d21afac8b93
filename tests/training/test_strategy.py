"""Strategy selection by config name, and who the chief is in a TF_CONFIG cluster."""

from __future__ import annotations

import json

import pytest
import tensorflow as tf

from tfmmsearch.training.strategy import is_chief, make_strategy, task_name

WORKERS = ["127.0.0.1:1111", "127.0.0.1:2222"]


def set_tf_config(monkeypatch, task: dict | None, chief: bool = False) -> None:
    cluster = {"worker": WORKERS}
    if chief:
        cluster["chief"] = ["127.0.0.1:3333"]
    value = {"cluster": cluster}
    if task is not None:
        value["task"] = task
    monkeypatch.setenv("TF_CONFIG", json.dumps(value))


def test_default_is_the_single_device_strategy():
    strategy = make_strategy("default")
    assert strategy is tf.distribute.get_strategy()
    assert strategy.num_replicas_in_sync == 1
    assert not tf.distribute.has_strategy()


def test_mirrored_uses_the_local_devices():
    strategy = make_strategy("mirrored")
    assert isinstance(strategy, tf.distribute.MirroredStrategy)
    assert strategy.num_replicas_in_sync >= 1


def test_multi_worker_without_tf_config_is_a_clear_error(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(ValueError, match="multi_worker_mirrored needs TF_CONFIG"):
        make_strategy("multi_worker_mirrored")


def test_unknown_strategy_names_the_value():
    with pytest.raises(ValueError, match="'tpu'"):
        make_strategy("tpu")


def test_without_tf_config_this_process_is_the_chief(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    assert is_chief()
    assert task_name() == "chief-0"


@pytest.mark.parametrize("task, has_chief, chief", [
    ({"type": "worker", "index": 0}, False, True),   # no chief task: worker 0 leads
    ({"type": "worker", "index": 1}, False, False),
    ({"type": "chief", "index": 0}, True, True),
    ({"type": "worker", "index": 0}, True, False),   # a chief task exists: worker 0 follows
    ({"type": "evaluator", "index": 0}, False, False),
    (None, False, True),                             # cluster only, no task: a local run
])
def test_is_chief(monkeypatch, task, has_chief, chief):
    set_tf_config(monkeypatch, task, chief=has_chief)
    assert is_chief() is chief


def test_task_name_names_type_and_index(monkeypatch):
    set_tf_config(monkeypatch, {"type": "worker", "index": 1})
    assert task_name() == "worker-1"
