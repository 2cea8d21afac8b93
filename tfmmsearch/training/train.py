"""`tfmmsearch.train(config, run_dir)`: data -> towers -> multi-task fit -> checkpoints + TensorBoard.

A run directory holds everything a run produced and everything needed to resume or export it:
  config.yaml        the exact config (after overrides)
  item_features.json vocabularies and statistics of model.item_features (only with item features)
  backup/            BackupAndRestore state: rerun the same command to resume after a crash
  checkpoints/       weights after every epoch (tf.train.Checkpoint)
  logs/              TensorBoard event files (+ projector/ with item embeddings)
  model/             final weights, read by `tfmmsearch.model.build.load_trained_model`
  history.json       every epoch's logs, kept across resumes
  metrics.json       the whole history and the final validation metrics ("complete": true)
  workers/<task>/model/  a non-chief worker's copy of the final weights (multi-worker runs)

In multi-worker training every worker runs the same callbacks and saves, because saving reads
synchronised variables with collective ops that all workers must join; Keras sends the
non-chief workers' checkpoints and event files to temporary directories it removes itself.

Rerunning `train` on a run directory resumes it (same config only: a changed config is
refused before anything is written) and is a no-op on a finished run.
"""

from __future__ import annotations

import json
import logging
import random
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tensorflow as tf

from tfmmsearch.config import Config, ConfigError, config_to_dict, load_config, save_config
from tfmmsearch.data.log_pairs import CLICK_GRADE, log_grades
from tfmmsearch.data.prepare import PreparedData, prepare_data
from tfmmsearch.data.queries import grade_matrix
from tfmmsearch.evaluation.metrics import RELEVANT_GRADE
from tfmmsearch.model.build import (
    RUN_CONFIG,
    RUN_WEIGHTS,
    build_encoders,
    build_model,
    encoder_dims,
    run_item_features,
)
from tfmmsearch.model.feature_cache import FeatureStore, ItemTable
from tfmmsearch.model.item_features import ATTRIBUTE_INPUT
from tfmmsearch.model.search_model import MultimodalSearchModel
from tfmmsearch.model.warm_start import warm_start as warm_start_from, warm_start_weights
from tfmmsearch.progress import is_terminal
from tfmmsearch.training.callbacks import (
    EpochHistory,
    LearningRateLogger,
    ResumeNotice,
    ValidationRanking,
    write_embedding_projector,
    write_json_atomically,
)
from tfmmsearch.training.datasets import training_dataset
from tfmmsearch.training.sources import training_set
from tfmmsearch.training.streaming import streamed_run_dataset
from tfmmsearch.training.strategy import is_chief, make_strategy, task_name

logger = logging.getLogger(__name__)

METRICS_FILE = "metrics.json"
BACKUP_DIR = "backup"  # BackupAndRestore's state: what a rerun resumes from
WARM_START_FILE = "warm_start.json"  # where a warm-started run's first weights came from
HISTORY_FILE = "history.json"  # per-epoch logs, kept across resumes


@dataclass
class TrainResult:
    run_dir: Path
    history: dict
    validation: dict
    seconds: float
    already_complete: bool = False  # the run was finished before this call: nothing trained


def validation_queries(prepared: PreparedData, config: Config) -> list:
    """The validation queries scored every epoch: a seeded sample when there are many."""
    queries = prepared.queries["validation"]
    limit = config.training.validation_queries
    if limit and len(queries) > limit:
        queries = random.Random(config.training.seed).sample(queries, limit)
    return queries


def validation_targets(prepared: PreparedData, config: Config,
                       products: list) -> tuple[list[str], np.ndarray, int]:
    """(query texts, grades [Q, len(products)], the grade from which a product counts as
    relevant) scored every epoch over the validation split's `products`: attribute queries
    when attributes are a source (grade 2 relevant), else the log's validation days (purchase
    2, click 1, any click relevant; queries with no click on these products are left out)."""
    if config.data.sources.attributes > 0:
        queries = validation_queries(prepared, config)
        return ([q.text for q in queries],
                grade_matrix(queries, products, config.data.attributes), RELEVANT_GRADE)
    judged = log_grades(prepared.search_log.validation)
    grades = judged.matrix([p.product_id for p in products])
    keep = np.flatnonzero(grades.max(axis=1) > 0)
    limit = config.training.validation_queries
    if limit and len(keep) > limit:
        keep = np.sort(np.random.default_rng(config.training.seed).choice(keep, limit,
                                                                          replace=False))
    return [judged.queries[i] for i in keep], grades[keep], CLICK_GRADE


def _validation_scorer(prepared: PreparedData, item_features: dict, items: ItemTable,
                       store: FeatureStore, config: Config):
    """Returns (score_fn, grades, relevant grade) for the validation split: retrieval scores
    of the model."""
    val_ids = set(prepared.splits["validation"])
    positions = np.array([i for i, pid in enumerate(items.product_ids) if pid in val_ids], np.int64)
    by_id = {product.product_id: product for product in prepared.catalog.products}
    products = [by_id[items.product_ids[i]] for i in positions]
    texts, grades, relevant_grade = validation_targets(prepared, config, products)
    if not len(texts):
        raise ValueError("no validation queries: the validation split has no query with a "
                         "relevant product (give data.splits.validation or the log's "
                         "validation days a larger share)")
    query_features = store.query_features(texts, "validation_queries")
    item_batch = _item_batch(items, positions, item_features, config.towers.image.image_size)
    query_batch = {"query_features": query_features} if query_features is not None else \
        {"query": np.array(texts)}

    def score(model: MultimodalSearchModel) -> np.ndarray:
        item_embeddings = _batched(lambda b: model.embed_items(b)["embedding"], item_batch)
        query_embeddings = _batched(model.embed_queries, query_batch)
        return query_embeddings @ item_embeddings.T

    return score, grades, relevant_grade


def _read_images(items: ItemTable, positions, image_size: int) -> np.ndarray:
    from tfmmsearch.data.pipeline import read_image

    return np.stack([read_image(tf.constant(items.image_paths[i]), image_size).numpy()
                     for i in positions])


def _item_batch(items: ItemTable, positions, cached: dict, image_size: int,
                images: np.ndarray | None = None) -> dict:
    """Item-tower inputs for the products at `positions`: cached features where there are any,
    and the raw item-feature strings of a model with item features."""
    batch = {"has_title": items.has_title[positions], "has_image": items.has_image[positions]}
    if items.attribute_columns:
        batch[ATTRIBUTE_INPUT] = items.attribute_values[positions]
    for key, values in cached.items():
        if key in ("title_features", "image_features"):
            batch[key] = values[positions]
    if "title_features" not in batch:
        batch["title"] = np.array([items.titles[i] for i in positions])
    if "image_features" not in batch:
        batch["image"] = images if images is not None else _read_images(items, positions, image_size)
    return batch


def _batched(fn, features: dict, batch_size: int = 512) -> np.ndarray:
    total = len(next(iter(features.values())))
    outputs = []
    for start in range(0, total, batch_size):
        batch = {k: tf.constant(v[start:start + batch_size]) for k, v in features.items()}
        outputs.append(fn(batch).numpy())
    return np.concatenate(outputs)


def _optimizer(config: Config, steps_per_epoch: int) -> tf.keras.optimizers.Optimizer:
    total = max(1, steps_per_epoch * config.training.epochs)
    schedule = tf.keras.optimizers.schedules.CosineDecay(
        config.training.learning_rate, decay_steps=total, alpha=0.1)
    return tf.keras.optimizers.Adam(schedule)


def train(config: Config, run_dir: str | Path, verbose: int | None = None,
          warm_start: str | Path | None = None) -> TrainResult:
    """Trains the configured model into `run_dir`; rerunning the same call resumes from backup.

    `warm_start` (a run directory or an export) gives the starting weights of a new run (see
    model/warm_start.py); a resumed run continues from its own backup instead."""
    start = time.time()
    run_dir = Path(run_dir)
    chief = is_chief()
    if warm_start is not None:
        warm_start_weights(warm_start)  # a missing source fails before anything is written
    finished = check_resumable(run_dir, config, warm_start)  # before anything is written
    if finished is not None:
        return finished
    run_dir.mkdir(parents=True, exist_ok=True)
    if chief and not (run_dir / RUN_CONFIG).is_file():
        save_config(config, run_dir / RUN_CONFIG)
    tf.keras.utils.set_random_seed(config.training.seed)
    if config.training.mixed_precision:
        tf.keras.mixed_precision.set_global_policy("mixed_float16")

    strategy = make_strategy(config.training.strategy)
    prepared = prepare_data(config, progress=chief)
    products = prepared.catalog.products
    # Item-feature vocabularies and statistics: computed from the catalog once (or those of the
    # warm-start source), kept in the run directory (a resumed run reads them back, as
    # reloading and export do).
    item_features = run_item_features(config, run_dir, products, write=chief,
                                      warm_start=warm_start)
    columns = item_features.columns
    training = training_set(config, prepared, run_dir, write=chief)
    examples = training.examples
    streamed = config.training.item_source == "tfds"
    # Items whose features this process holds: every product for the in-memory input, only the
    # validation split's (scored each epoch) when the training items stream from TFDS shards.
    validation_ids = set(prepared.splits["validation"])
    items = ItemTable.from_products(
        [p for p in products if p.product_id in validation_ids] if streamed else products,
        columns)

    with strategy.scope():
        encoders = build_encoders(config)
    store = FeatureStore(config, encoders, items, Path(config.data.work_dir) / "feature_cache")
    cached = store.item_features()

    train_query_features = store.query_features(examples.query_texts, "train_queries")
    batch_size = min(config.training.batch_size, len(examples))
    if streamed:
        dataset, train_inputs = streamed_run_dataset(
            config, prepared, encoders, examples, training.products, train_query_features,
            batch_size=batch_size, cache_dir=store.cache_dir)
    else:
        position = {pid: i for i, pid in enumerate(items.product_ids)}
        train_positions = [position[p.product_id] for p in training.products]
        train_cached = {key: value[train_positions] for key, value in cached.items()}
        if train_query_features is not None:
            train_cached["query_features"] = train_query_features
        train_items = ItemTable.from_products(training.products, columns)
        dataset = training_dataset(examples, train_items, batch_size=batch_size,
                                   seed=config.training.seed,
                                   image_size=config.towers.image.image_size,
                                   cached=train_cached, words=config.model.ranking_lexical)
        train_inputs = sorted(train_cached)
    steps_per_epoch = len(examples) // batch_size
    logger.info("training on %d pairs (%d queries, %d products, items from %s), batch %d, "
                "%d steps/epoch, cached inputs: %s", len(examples), len(examples.query_texts),
                len(training.products), config.training.item_source, batch_size, steps_per_epoch,
                ", ".join(train_inputs) or "none")

    dims = encoder_dims(encoders, config.towers.image.image_size)  # eager: outside the scope
    with strategy.scope():
        model = build_model(config, encoders, dims, item_features)
        model.compile(optimizer=_optimizer(config, steps_per_epoch),
                      jit_compile=config.training.xla or None)
        if warm_start is not None and not (run_dir / BACKUP_DIR).exists():
            model.build_heads()
            warm_start_from(model, warm_start)
    if warm_start is not None and chief:
        write_json_atomically(run_dir / WARM_START_FILE, {"source": str(warm_start)})

    score_fn, grades, relevant_grade = _validation_scorer(prepared, cached, items, store, config)
    validation = ValidationRanking(score_fn, grades, relevant_grade)
    epochs_log = EpochHistory(run_dir / HISTORY_FILE, write=chief)
    callbacks = [
        ResumeNotice(steps_per_epoch),
        tf.keras.callbacks.TerminateOnNaN(),
        validation,
        LearningRateLogger(),
        # After the callbacks that add to the epoch logs, before the backup: an epoch is in
        # history.json before the backup says it is done (a crash between them redoes it).
        epochs_log,
        tf.keras.callbacks.BackupAndRestore(
            str(run_dir / BACKUP_DIR),
            save_freq=config.training.steps_per_checkpoint or "epoch",
            delete_checkpoint=False),
    ]
    if config.training.early_stopping_patience > 0:
        callbacks.append(tf.keras.callbacks.EarlyStopping(
            monitor="val_ndcg@10", mode="max", patience=config.training.early_stopping_patience,
            restore_best_weights=True))
    callbacks += [  # on every worker: Keras redirects non-chief writes to temporary directories
        tf.keras.callbacks.ModelCheckpoint(
            str(run_dir / "checkpoints" / "epoch-{epoch:03d}"), save_weights_only=True),
        tf.keras.callbacks.TensorBoard(str(run_dir / "logs"), histogram_freq=1,
                                       update_freq="epoch"),
    ]
    if verbose is None:
        verbose = 1 if is_terminal() else 2  # Keras's bar, or one line per epoch
    model.fit(dataset, epochs=config.training.epochs, callbacks=callbacks, verbose=verbose)

    # The whole run's history, earlier processes' epochs included (a resumed run).
    history = epochs_log.history()
    final_validation = {key: values[-1] for key, values in history.items()
                        if key.startswith("val_") and values}
    # Every worker saves (collectives); only the chief's copy is the run's model.
    model.save_weights(str(run_dir / (RUN_WEIGHTS if chief else worker_weights_path())))
    if chief:
        _write_projector(run_dir, model, prepared, cached, items, config)
        summary = {"complete": True, "history": history, "validation": final_validation,
                   "train_pairs": len(examples), "steps_per_epoch": steps_per_epoch,
                   "seconds": round(time.time() - start, 1),
                   "warm_start": None if warm_start is None else str(warm_start)}
        write_json_atomically(run_dir / METRICS_FILE, summary)
        logger.info("run finished in %.0f s: weights %s, checkpoints %s, TensorBoard logs %s, "
                    "metrics %s", time.time() - start, run_dir / RUN_WEIGHTS,
                    run_dir / "checkpoints", run_dir / "logs", run_dir / "metrics.json")
        logger.info("watch it with: tensorboard --logdir %s --host 127.0.0.1", run_dir / "logs")
    return TrainResult(run_dir, history, final_validation, time.time() - start)


def check_resumable(run_dir: Path, config: Config,
                    warm_start: str | Path | None = None) -> TrainResult | None:
    """Refuses a rerun whose config (or warm start) differs from the run's (naming what
    changed, changing nothing); returns the finished run's result when it is already
    complete; else None."""
    stored_path = run_dir / RUN_CONFIG
    if not stored_path.is_file():
        return None
    warm_path = run_dir / WARM_START_FILE
    earlier = json.loads(warm_path.read_text())["source"] if warm_path.is_file() else None
    if (warm_path.is_file() or (run_dir / BACKUP_DIR).exists()) and earlier != (
            None if warm_start is None else str(warm_start)):
        raise ConfigError(f"{run_dir} was started with --warm-start {earlier or '(none)'}, not "
                          f"{warm_start or '(none)'}. Nothing was changed. Rerun with the same "
                          f"warm start to resume it, or pass a new --out")
    stored = config_to_dict(load_config(stored_path))
    changed = _changed_keys(stored, config_to_dict(config))
    if changed:
        shown = "; ".join(f"{key}: {old!r} -> {new!r}" for key, old, new in changed[:10])
        raise ConfigError(
            f"{run_dir} was trained with another config ({len(changed)} changed: {shown}). "
            f"Nothing was changed. To resume it, rerun with its own config: tfmmsearch train "
            f"--config {stored_path} --out {run_dir}; to train the new config, pass a new --out")
    metrics_path = run_dir / METRICS_FILE
    if metrics_path.is_file() and Path(str(run_dir / RUN_WEIGHTS) + ".index").is_file():
        metrics = json.loads(metrics_path.read_text())
        if metrics.get("complete"):
            logger.info("%s is already complete (%s); nothing to do. Export it: tfmmsearch "
                        "export --run %s", run_dir, metrics_path, run_dir)
            return TrainResult(run_dir, metrics.get("history", {}), metrics.get("validation", {}),
                               0.0, already_complete=True)
    return None


def _changed_keys(old: dict, new: dict, prefix: str = "") -> list[tuple[str, object, object]]:
    changed = []
    for key in sorted(set(old) | set(new)):
        dotted = f"{prefix}{key}"
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            changed += _changed_keys(a, b, dotted + ".")
        elif a != b:
            changed.append((dotted, a, b))
    return changed


def worker_weights_path() -> str:
    """Where this non-chief worker keeps its copy of the final weights, relative to the run dir."""
    return f"workers/{task_name()}/{RUN_WEIGHTS}"


def _write_projector(run_dir: Path, model, prepared: PreparedData, cached: dict, items: ItemTable,
                     config: Config, limit: int = 500) -> None:
    """Item embeddings of the validation products (with titles and an image sprite)."""
    val_ids = set(prepared.splits["validation"])
    positions = [i for i, pid in enumerate(items.product_ids) if pid in val_ids][:limit]
    images = _read_images(items, positions, config.towers.image.image_size)
    batch = _item_batch(items, positions, cached, config.towers.image.image_size, images)
    embeddings = _batched(lambda b: model.embed_items(b)["embedding"], batch)
    write_embedding_projector(run_dir / "logs", embeddings, [items.titles[i] for i in positions], images)
