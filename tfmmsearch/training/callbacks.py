"""Training callbacks: validation ranking metrics, learning rate, resume notice, embedding projector.

Callbacks that add values to `logs` run before TensorBoard in the callback list, so
everything they add (val_ndcg@10, learning_rate) lands in the event files too.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Callable

import numpy as np
import tensorflow as tf

logger = logging.getLogger(__name__)


class ValidationRanking(tf.keras.callbacks.Callback):
    """NDCG@10 / Recall@100 / MRR of retrieval over the validation split, once per epoch.

    `score_fn(model) -> [Q, P]` scores validation queries against validation products; the
    grades are fixed. Early stopping watches `val_ndcg@10`.
    """

    def __init__(self, score_fn: Callable[[tf.keras.Model], np.ndarray], grades: np.ndarray,
                 relevant_grade: int = 2):
        super().__init__()
        self.score_fn = score_fn
        self.grades = grades
        self.relevant_grade = relevant_grade  # Recall / MRR count grades from this one up
        self.history: list[dict] = []

    def on_epoch_end(self, epoch, logs=None):
        from tfmmsearch.evaluation.metrics import retrieval_metrics

        metrics = retrieval_metrics(self.score_fn(self.model), self.grades,
                                    relevant_grade=self.relevant_grade)
        values = {f"val_{name}": float(value) for name, value in metrics.items()}
        self.history.append(values)
        if logs is not None:
            logs.update(values)
        logger.info("epoch %d validation: %s", epoch + 1,
                    ", ".join(f"{k} {v:.4f}" for k, v in values.items()))


class LearningRateLogger(tf.keras.callbacks.Callback):
    """Puts the optimizer's current learning rate into the epoch logs.

    With a schedule that is the schedule at the optimizer's step count, the value Keras's
    TensorBoard callback writes, so metrics.json and TensorBoard agree. (`optimizer.learning_rate`
    would give the rate of the previous step: tf_keras keeps the schedule in `_learning_rate`.)
    """

    def on_epoch_end(self, epoch, logs=None):
        optimizer = self.model.optimizer
        rate = getattr(optimizer, "_learning_rate", optimizer.learning_rate)
        if isinstance(rate, tf.keras.optimizers.schedules.LearningRateSchedule):
            rate = rate(optimizer.iterations)
        if logs is not None:
            logs["learning_rate"] = float(tf.keras.backend.get_value(rate))


class ResumeNotice(tf.keras.callbacks.Callback):
    """Says so when training starts past its first step (restored by BackupAndRestore)."""

    def __init__(self, steps_per_epoch: int | None = None):
        super().__init__()
        self.steps_per_epoch = steps_per_epoch
        self.epoch: int | None = None
        self.resumed_at: tuple[int, int] | None = None  # (epoch, step), 1-based
        self._first_batch_seen = False

    def on_epoch_begin(self, epoch, logs=None):
        if self.epoch is None and epoch > 0:
            self.resumed_at = (epoch + 1, 1)
        self.epoch = epoch

    def on_train_batch_begin(self, batch, logs=None):
        if self._first_batch_seen:
            return
        self._first_batch_seen = True
        if batch > 0:  # a mid-epoch backup: Keras skips the steps already trained
            self.resumed_at = (self.epoch + 1, batch + 1)
        if self.resumed_at is not None:
            epoch, step = self.resumed_at
            of = f" of {self.steps_per_epoch}" if self.steps_per_epoch else ""
            logger.info("resumed from the backup: continuing at epoch %d, step %d%s",
                        epoch, step, of)


class EpochHistory(tf.keras.callbacks.Callback):
    """Every epoch's logs in a JSON file that survives resumes, so a run's history is whole.

    An epoch trained again after a crash replaces its earlier entry.
    """

    def __init__(self, path: Path, write: bool = True):
        super().__init__()
        self.path, self.write = Path(path), write
        self.epochs: dict[int, dict] = {}
        if self.path.is_file():
            stored = json.loads(self.path.read_text())
            self.epochs = {int(epoch): logs for epoch, logs in stored.get("epochs", {}).items()}

    def on_epoch_end(self, epoch, logs=None):
        self.epochs[epoch + 1] = {key: float(value) for key, value in (logs or {}).items()}
        if self.write:
            write_json_atomically(self.path, {"epochs": {str(e): v for e, v in
                                                         sorted(self.epochs.items())}})

    def history(self) -> dict[str, list[float]]:
        """{metric: [value per epoch]} in epoch order, like Keras's History.history."""
        merged: dict[str, list[float]] = {}
        for _, logs in sorted(self.epochs.items()):
            for key, value in logs.items():
                merged.setdefault(key, []).append(value)
        return merged


def write_json_atomically(path: Path, value) -> None:
    """Writes JSON through a temporary file, so a crash never leaves a half-written file."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(value, indent=2))
    os.replace(tmp, path)


def write_embedding_projector(log_dir: Path, embeddings: np.ndarray, titles: list[str],
                              images: np.ndarray | None = None, name: str = "item_embeddings") -> Path:
    """Writes item embeddings, titles and an image sprite for TensorBoard's projector.

    Everything goes to `log_dir/projector/`, which is made a TensorBoard run of its own (an
    events file) so that `tensorboard --logdir log_dir` lists it next to train/ and validation/:
    TensorBoard only reads runs, directories holding event files, and the projector plugin looks
    for `projector_config.pbtxt` and the latest checkpoint in each run's directory. The config's
    metadata and sprite paths are file names, which the plugin resolves relative to the
    directory of the config; the checkpoint is left out of the config (a relative
    `model_checkpoint_path` would be resolved against TensorBoard's working directory) and the
    plugin takes the latest one in the run directory instead.
    """
    from tensorboard.plugins import projector

    log_dir = Path(log_dir)
    projector_dir = log_dir / "projector"
    projector_dir.mkdir(parents=True, exist_ok=True)
    with open(projector_dir / "metadata.tsv", "w", encoding="utf-8") as handle:
        for title in titles:
            handle.write((title.replace("\t", " ").replace("\n", " ") or "(no title)") + "\n")
    variable = tf.Variable(embeddings, name=name)
    checkpoint = tf.train.Checkpoint(embedding=variable)
    checkpoint.save(str(projector_dir / "embedding.ckpt"))
    config = projector.ProjectorConfig()
    embedding = config.embeddings.add()
    embedding.tensor_name = "embedding/.ATTRIBUTES/VARIABLE_VALUE"
    embedding.metadata_path = "metadata.tsv"
    if images is not None and len(images):
        sprite_path, size = _write_sprite(projector_dir, images)
        embedding.sprite.image_path = sprite_path.name
        embedding.sprite.single_image_dim.extend([size, size])
    projector.visualize_embeddings(str(projector_dir), config)
    _mark_as_run(projector_dir)
    return projector_dir


def _mark_as_run(directory: Path) -> None:
    """Gives `directory` an (empty) events file, unless it has one, so TensorBoard lists it as a run."""
    if any(directory.glob("events.out.tfevents.*")):
        return
    writer = tf.summary.create_file_writer(str(directory))
    writer.flush()
    writer.close()


def _write_sprite(directory: Path, images: np.ndarray, thumb: int = 32) -> tuple[Path, int]:
    """Tiles images (float [N, S, S, 3] in [0, 1]) into one square PNG sprite."""
    count = len(images)
    side = int(np.ceil(np.sqrt(count)))
    thumbs = tf.image.resize(tf.constant(images, tf.float32), [thumb, thumb]).numpy()
    sprite = np.ones((side * thumb, side * thumb, 3), np.float32)
    for i, image in enumerate(thumbs):
        row, col = divmod(i, side)
        sprite[row * thumb:(row + 1) * thumb, col * thumb:(col + 1) * thumb] = image
    path = directory / "sprite.png"
    png = tf.io.encode_png(tf.cast(np.clip(sprite, 0, 1) * 255, tf.uint8))
    path.write_bytes(png.numpy())
    return path, thumb
