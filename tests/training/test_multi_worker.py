"""Multi-worker training: two `tfmmsearch train` processes on 127.0.0.1 with TF_CONFIG.

Both workers run the same command on the same run directory, as on a cluster with a shared
filesystem. They must both finish, the chief must own the run's outputs, and the weights a
non-chief worker saves must equal the chief's bit for bit (synchronous data parallelism).
"""

from __future__ import annotations

import json
import socket
import subprocess

import numpy as np
import pytest

from tests.training.conftest import cli_train_command, read_checkpoint, subprocess_env
from tfmmsearch.config import save_config
from tfmmsearch.model.build import RUN_WEIGHTS

WORKERS = 2


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def tf_config(ports: list[int], index: int) -> str:
    return json.dumps({"cluster": {"worker": [f"127.0.0.1:{port}" for port in ports]},
                       "task": {"type": "worker", "index": index}})


@pytest.mark.slow
def test_two_workers_train_in_sync(tmp_path, tiny_config):
    config = tiny_config("training.strategy=multi_worker_mirrored",
                         "data.queries.max_positives_per_query=1")
    config_path = tmp_path / "config.yaml"
    save_config(config, config_path)
    run_dir = tmp_path / "run"
    ports = free_ports(WORKERS)
    logs = [tmp_path / f"worker-{index}.log" for index in range(WORKERS)]
    processes = []
    for index, log in enumerate(logs):
        with log.open("w") as out:
            processes.append(subprocess.Popen(
                cli_train_command(config_path, run_dir), stdout=out, stderr=subprocess.STDOUT,
                env=subprocess_env(TF_CONFIG=tf_config(ports, index))))
    try:
        codes = [process.wait(timeout=300) for process in processes]
    finally:
        for process in processes:
            process.kill()
            process.wait()
    outputs = [log.read_text() for log in logs]
    for index, (code, output) in enumerate(zip(codes, outputs)):
        assert code == 0, f"worker {index} exited with {code}:\n{output[-4000:]}"
        assert f"with {WORKERS} replica(s)" in output

    # The chief (worker 0) owns the run's outputs; worker 1 only its copy of the final weights.
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert len(metrics["history"]["loss"]) == config.training.epochs
    assert (run_dir / "config.yaml").is_file()
    for epoch in range(1, config.training.epochs + 1):
        assert (run_dir / "checkpoints" / f"epoch-{epoch:03d}.index").is_file()
    assert [path.name for path in (run_dir / "workers").iterdir()] == ["worker-1"]
    assert not [path for path in run_dir.rglob("workertemp_*")], "temporary worker dirs left"

    chief = read_checkpoint(run_dir / RUN_WEIGHTS)
    worker = read_checkpoint(run_dir / "workers" / "worker-1" / RUN_WEIGHTS)
    assert chief.keys() == worker.keys()
    variables = [key for key in chief if key.endswith("VARIABLE_VALUE")]
    assert len(variables) > 10
    for key in chief:
        np.testing.assert_array_equal(chief[key], worker[key], err_msg=key)
    # ...and they are trained weights: the last epoch still changed them.
    first_epoch = read_checkpoint(run_dir / "checkpoints" / "epoch-001")
    changed = [key for key in variables if "ranking_head" in key or "tower" in key
               if key in first_epoch and not np.array_equal(first_epoch[key], chief[key])]
    assert changed, "the weights did not change after epoch 1"
