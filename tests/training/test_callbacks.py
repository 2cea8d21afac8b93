"""Training callbacks on their own, and what a real run leaves for TensorBoard."""

from __future__ import annotations

import logging
import math

import numpy as np
import pytest
import tensorflow as tf

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


def test_learning_rate_logger_reports_the_scheduled_rate():
    schedule = tf.keras.optimizers.schedules.CosineDecay(0.1, decay_steps=8, alpha=0.1)
    model = tf.keras.Sequential([tf.keras.layers.Dense(1, input_shape=(2,))])
    model.compile(optimizer=tf.keras.optimizers.Adam(schedule), loss="mse")
    x, y = np.ones((8, 2), np.float32), np.zeros((8, 1), np.float32)
    history = model.fit(x, y, batch_size=2, epochs=2, verbose=0, callbacks=[LearningRateLogger()])
    expected = [float(schedule(4)), float(schedule(8))]  # 4 steps per epoch
    np.testing.assert_allclose(history.history["learning_rate"], expected, rtol=1e-6)
    assert expected[1] == pytest.approx(0.01)


def test_resume_notice_speaks_only_when_starting_past_epoch_one(caplog):
    caplog.set_level(logging.INFO, logger="tfmmsearch.training.callbacks")
    fresh = ResumeNotice()
    fresh.on_epoch_begin(0)
    fresh.on_epoch_begin(1)
    assert "resumed" not in caplog.text

    resumed = ResumeNotice()
    resumed.on_epoch_begin(2)
    resumed.on_epoch_begin(3)
    messages = [r.getMessage() for r in caplog.records if "resumed" in r.getMessage()]
    assert messages == ["resumed from the backup: continuing at epoch 3"]
