"""Training callbacks on their own, and what a real run leaves for TensorBoard."""

from __future__ import annotations

import json
import logging
import math
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from tests.serving.ports import free_port, stop_process
from tests.training.conftest import read_checkpoint
from tfmmsearch.training.callbacks import (
    LearningRateLogger,
    ResumeNotice,
    ValidationRanking,
    write_embedding_projector,
)

# --------------------------------------------------------------------------- TensorBoard of a run

PER_TASK_LOSSES = {"epoch_retrieval_loss", "epoch_alignment_loss", "epoch_ranking_loss"}


def event_tags(log_dir) -> dict[str, dict[str, list]]:
    """plugin name -> tag -> values (scalars as floats), over all event files in log_dir."""
    tags: dict[str, dict[str, list]] = {}
    for path in sorted(log_dir.glob("events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            for value in event.summary.value:
                plugin = value.metadata.plugin_data.plugin_name
                data = tf.make_ndarray(value.tensor) if value.HasField("tensor") else None
                tags.setdefault(plugin, {}).setdefault(value.tag, []).append(data)
    return tags


def test_run_logs_losses_metrics_rates_and_modality_weights(frozen_run):
    epochs = frozen_run.config.training.epochs
    history = frozen_run.result.history
    train = event_tags(frozen_run.run_dir / "logs" / "train")
    scalars = train["scalars"]
    expected = PER_TASK_LOSSES | {"epoch_loss", "epoch_learning_rate", "epoch_text_weight",
                                  "epoch_image_weight", "epoch_temperature"}
    assert expected <= set(scalars)
    for tag in expected:
        assert len(scalars[tag]) == epochs, tag
        np.testing.assert_allclose([float(v) for v in scalars[tag]],
                                   history[tag.removeprefix("epoch_")], rtol=1e-5)
    # Modality weights are a softmax over two modalities: they sum to one.
    np.testing.assert_allclose(np.add(scalars["epoch_text_weight"], scalars["epoch_image_weight"]),
                               1.0, atol=1e-4)

    # Keras writes val_* logs to the validation run, without the prefix: val_ndcg@10 is
    # TensorBoard's epoch_ndcg@10 in run "validation".
    validation = event_tags(frozen_run.run_dir / "logs" / "validation")["scalars"]
    assert {"epoch_ndcg@10", "epoch_recall@100", "epoch_mrr"} <= set(validation)
    np.testing.assert_allclose([float(v) for v in validation["epoch_ndcg@10"]],
                               history["val_ndcg@10"], rtol=1e-5)


def test_run_logs_weight_histograms(frozen_run):
    histograms = event_tags(frozen_run.run_dir / "logs" / "train")["histograms"]
    kernels = [tag for tag in histograms if "kernel" in tag]
    assert any(tag.startswith("ranking_head/") for tag in kernels)
    assert any("fusion" in tag for tag in histograms)
    assert len(kernels) >= 4
    for tag, values in histograms.items():
        assert values and len(values) % frozen_run.config.training.epochs == 0, tag  # every epoch
        assert all(np.isfinite(value).all() for value in values), tag


def test_each_weight_has_its_own_histogram_tag(frozen_run):
    histograms = event_tags(frozen_run.run_dir / "logs" / "train")["histograms"]
    for tag, values in histograms.items():
        assert len(values) == frozen_run.config.training.epochs, tag


def test_run_writes_the_embedding_projector(frozen_run):
    projector = frozen_run.run_dir / "logs" / "projector"
    for name in ("projector_config.pbtxt", "metadata.tsv", "sprite.png"):
        assert (projector / name).is_file(), name
    # A run of its own, so `tensorboard --logdir RUN_DIR/logs` (what `train` prints) shows it.
    assert list(projector.glob("events.out.tfevents.*"))
    config = (projector / "projector_config.pbtxt").read_text()
    assert 'metadata_path: "metadata.tsv"' in config and 'image_path: "sprite.png"' in config
    rows = len((projector / "metadata.tsv").read_text(encoding="utf-8").splitlines())
    embeddings = read_checkpoint(tf.train.latest_checkpoint(str(projector)))[
        "embedding/.ATTRIBUTES/VARIABLE_VALUE"]
    assert embeddings.shape == (rows, frozen_run.config.model.embedding_dim)
    sprite = tf.io.decode_png((projector / "sprite.png").read_bytes()).numpy()
    side = math.ceil(math.sqrt(rows)) * 32
    assert sprite.shape == (side, side, 3)


# --------------------------------------------------------------------------- unit


def test_write_embedding_projector_without_images(tmp_path):
    embeddings = np.arange(6, dtype=np.float32).reshape(3, 2)
    out = write_embedding_projector(tmp_path, embeddings, ["a\tb", "", "line\nbreak"])
    assert out == tmp_path / "projector"
    assert (out / "metadata.tsv").read_text().splitlines() == ["a b", "(no title)", "line break"]
    assert not (out / "sprite.png").exists()
    assert "sprite" not in (out / "projector_config.pbtxt").read_text()
    stored = read_checkpoint(tf.train.latest_checkpoint(str(out)))
    np.testing.assert_array_equal(stored["embedding/.ATTRIBUTES/VARIABLE_VALUE"], embeddings)


def write_small_projector(logs, count: int = 10, dim: int = 6):
    """A projector for `count` random embeddings, titles and 12x12 images under `logs`."""
    rng = np.random.default_rng(7)
    embeddings = rng.normal(size=(count, dim)).astype(np.float32)
    titles = [f"item {i}" for i in range(count)]
    images = rng.uniform(size=(count, 12, 12, 3)).astype(np.float32)
    return write_embedding_projector(logs, embeddings, titles, images), embeddings


def test_projector_is_a_run_that_tensorboard_finds_under_the_parent_logdir(tmp_path):
    from google.protobuf import text_format
    from tensorboard.backend.event_processing import plugin_event_multiplexer
    from tensorboard.plugins.projector import ProjectorConfig

    logs = tmp_path / "logs"
    out, embeddings = write_small_projector(logs)
    assert out == logs / "projector"
    # TensorBoard's runs are directories with event files: `--logdir logs` lists "projector".
    assert list(out.glob("events.out.tfevents.*"))
    multiplexer = plugin_event_multiplexer.EventMultiplexer()
    multiplexer.AddRunsFromDirectory(str(logs))
    assert "projector" in multiplexer.Runs()

    config = text_format.Parse((out / "projector_config.pbtxt").read_text(), ProjectorConfig())
    # No checkpoint path in the config: the plugin takes the latest checkpoint in the run dir
    # (a relative path would be resolved against TensorBoard's working directory).
    assert not config.model_checkpoint_path
    [embedding] = config.embeddings
    # Asset paths are resolved relative to the config's directory: they must stay inside it.
    for name in (embedding.metadata_path, embedding.sprite.image_path):
        assert name and not Path(name).is_absolute()
        assert (out / name).is_file(), name
    assert (out / embedding.metadata_path).read_text().splitlines() == [f"item {i}" for i in range(10)]
    assert list(embedding.sprite.single_image_dim) == [32, 32]
    sprite = tf.io.decode_png((out / embedding.sprite.image_path).read_bytes()).numpy()
    assert sprite.shape == (4 * 32, 4 * 32, 3)  # ceil(sqrt(10)) thumbnails a side

    checkpoint = tf.train.latest_checkpoint(str(out))
    assert checkpoint and Path(checkpoint).parent == out
    stored = read_checkpoint(checkpoint)
    assert stored[embedding.tensor_name].shape == (10, 6)
    np.testing.assert_array_equal(stored[embedding.tensor_name], embeddings)


def test_writing_the_projector_again_keeps_one_events_file(tmp_path):
    out, _ = write_small_projector(tmp_path)
    out, _ = write_small_projector(tmp_path)
    assert len(list(out.glob("events.out.tfevents.*"))) == 1


def _get(url: str):
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.read()


@pytest.mark.slow
def test_tensorboard_serves_the_projector_under_the_printed_logdir(tmp_path):
    """`tensorboard --logdir RUN_DIR/logs` (what `train` prints): projector run, titles, sprite."""
    logs = tmp_path / "logs"
    with tf.summary.create_file_writer(str(logs / "train")).as_default():
        tf.summary.scalar("epoch_loss", 1.0, step=0)
    write_small_projector(logs)
    port = free_port()
    base = f"http://127.0.0.1:{port}/data/plugin/projector"
    server_log = tmp_path / "tensorboard.log"
    with open(server_log, "wb") as log_file:
        server = subprocess.Popen(
            [sys.executable, "-m", "tensorboard.main", "--logdir", str(logs), "--host", "127.0.0.1",
             "--port", str(port), "--reload_interval", "1"],
            stdout=log_file, stderr=subprocess.STDOUT)
    try:
        runs, deadline = [], time.monotonic() + 90
        while "projector" not in runs and time.monotonic() < deadline:
            assert server.poll() is None, server_log.read_text(errors="replace")
            try:
                runs = json.loads(_get(base + "/runs"))
            except (urllib.error.URLError, ConnectionError):
                pass
            time.sleep(0.5)
        assert runs == ["projector"]  # train/ is a run too, but without embeddings
        info = json.loads(_get(base + "/info?run=projector"))
        [embedding] = info["embeddings"]
        assert embedding["tensorShape"] == [10, 6]
        assert embedding["metadataPath"] == "metadata.tsv"
        assert embedding["sprite"]["imagePath"] == "sprite.png"
        name = urllib.parse.quote(embedding["tensorName"])
        titles = _get(f"{base}/metadata?run=projector&name={name}").decode().splitlines()
        assert titles == [f"item {i}" for i in range(10)]
        sprite = _get(f"{base}/sprite_image?run=projector&name={name}")
        assert tf.io.decode_png(sprite).shape == (128, 128, 3)
        tensor = np.frombuffer(_get(f"{base}/tensor?run=projector&name={name}"), np.float32)
        assert tensor.shape == (60,)
    finally:
        stop_process(server)


def test_validation_ranking_adds_metrics_to_the_logs():
    grades = np.array([[2, 0, 1, 0], [0, 2, 0, 0]], np.int8)
    perfect = ValidationRanking(lambda model: grades.astype(np.float32), grades)
    logs = {"loss": 1.0}
    perfect.on_epoch_end(0, logs)
    assert logs["val_ndcg@10"] == pytest.approx(1.0)
    assert logs["val_mrr"] == pytest.approx(1.0)
    assert perfect.history == [{k: v for k, v in logs.items() if k.startswith("val_")}]

    reversed_scores = ValidationRanking(lambda model: -grades.astype(np.float32), grades)
    logs = {}
    reversed_scores.on_epoch_end(0, logs)
    assert logs["val_ndcg@10"] < 0.7
    assert logs["val_mrr"] < 1.0


def test_validation_on_clicks_counts_grade_1_as_relevant():
    """Log validation grades clicks 1 and purchases 2: a query with clicks only still has a
    relevant product for Recall and MRR."""
    grades = np.array([[1, 0, 0], [0, 2, 1]], np.int8)
    scores = grades.astype(np.float32)
    purchases_only, clicks = {}, {}
    ValidationRanking(lambda model: scores, grades).on_epoch_end(0, purchases_only)
    ValidationRanking(lambda model: scores, grades, relevant_grade=1).on_epoch_end(0, clicks)
    assert purchases_only["val_mrr"] == pytest.approx(0.5)  # the clicks-only query counts 0
    assert clicks["val_mrr"] == pytest.approx(1.0)
    assert clicks["val_recall@100"] == pytest.approx(1.0)


def test_learning_rate_logger_reports_the_scheduled_rate():
    schedule = tf.keras.optimizers.schedules.CosineDecay(0.1, decay_steps=8, alpha=0.1)
    model = tf.keras.Sequential([tf.keras.layers.Dense(1, input_shape=(2,))])
    model.compile(optimizer=tf.keras.optimizers.Adam(schedule), loss="mse")
    x, y = np.ones((8, 2), np.float32), np.zeros((8, 1), np.float32)
    history = model.fit(x, y, batch_size=2, epochs=2, verbose=0, callbacks=[LearningRateLogger()])
    expected = [float(schedule(4)), float(schedule(8))]  # 4 steps per epoch
    np.testing.assert_allclose(history.history["learning_rate"], expected, rtol=1e-6)
    assert expected[1] == pytest.approx(0.01)


def test_resume_notice_speaks_only_when_starting_past_the_first_step(caplog):
    caplog.set_level(logging.INFO, logger="tfmmsearch.training.callbacks")
    fresh = ResumeNotice(10)
    fresh.on_epoch_begin(0)
    fresh.on_train_batch_begin(0)
    fresh.on_epoch_begin(1)
    fresh.on_train_batch_begin(0)
    assert "resumed" not in caplog.text

    resumed = ResumeNotice(10)  # restored at the start of epoch 3
    resumed.on_epoch_begin(2)
    resumed.on_train_batch_begin(0)
    resumed.on_epoch_begin(3)
    resumed.on_train_batch_begin(0)
    mid_epoch = ResumeNotice(10)  # restored after step 4 of epoch 1: Keras starts at batch 4
    mid_epoch.on_epoch_begin(0)
    mid_epoch.on_train_batch_begin(4)
    messages = [r.getMessage() for r in caplog.records if "resumed" in r.getMessage()]
    assert messages == ["resumed from the backup: continuing at epoch 3, step 1 of 10",
                        "resumed from the backup: continuing at epoch 1, step 5 of 10"]
