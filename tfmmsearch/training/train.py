"""`tfmmsearch.train(config, run_dir)`: data -> towers -> multi-task fit -> checkpoints + TensorBoard.

A run directory holds everything a run produced and everything needed to resume or export it:
  config.yaml        the exact config (after overrides)
  backup/            BackupAndRestore state: rerun the same command to resume after a crash
  checkpoints/       weights after every epoch (tf.train.Checkpoint)
  logs/              TensorBoard event files (+ projector/ with item embeddings)
  model/             final weights, read by `load_trained_model` and the exporter
  metrics.json       per-epoch history and the final validation metrics
  workers/<task>/model/  a non-chief worker's copy of the final weights (multi-worker runs)

In multi-worker training every worker runs the same callbacks and saves, because saving reads
synchronised variables with collective ops that all workers must join; Keras sends the
non-chief workers' checkpoints and event files to temporary directories it removes itself.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tensorflow as tf

from tfmmsearch.config import Config, ConfigError, load_config, save_config
from tfmmsearch.data.pipeline import IMAGE_DECODING
from tfmmsearch.data.prepare import PreparedData, prepare_data
from tfmmsearch.data.queries import grade_matrix
from tfmmsearch.model.encoders import build_image_encoder, build_text_encoder
from tfmmsearch.model.search_model import Encoders, MultimodalSearchModel
from tfmmsearch.training.callbacks import (
    LearningRateLogger,
    ResumeNotice,
    ValidationRanking,
    write_embedding_projector,
)
from tfmmsearch.training.datasets import training_dataset
from tfmmsearch.training.examples import AttributeIds, build_examples
from tfmmsearch.training.feature_cache import (
    ItemTable,
    cache_key,
    encode_images,
    encode_texts,
    load_or_compute,
)
from tfmmsearch.training.strategy import is_chief, make_strategy, task_name

logger = logging.getLogger(__name__)

FINAL_WEIGHTS = "model/weights"


@dataclass
class TrainResult:
    run_dir: Path
    history: dict
    validation: dict
    seconds: float


@dataclass
class Towers:
    """The encoders of a run plus which of them are frozen (their outputs can be cached)."""

    encoders: Encoders
    text_frozen: bool
    image_frozen: bool

    @property
    def query_frozen(self) -> bool:
        return self.text_frozen  # the query tower shares the text encoder unless configured apart


def build_towers(config: Config) -> Towers:
    towers = config.towers
    cache_dir = towers.hub_cache_dir or None
    text = build_text_encoder(towers.text, cache_dir)
    query_seq = towers.query.seq_length or towers.text.seq_length
    if towers.query.share_text_encoder and query_seq == towers.text.seq_length:
        query = text
    elif towers.query.share_text_encoder and towers.text.trainable != "frozen":
        raise ConfigError("towers.query.seq_length must equal towers.text.seq_length (or be 0) "
                          "when the query tower shares a trainable text encoder")
    else:
        query_config = dataclasses.replace(towers.text, seq_length=query_seq)
        query = build_text_encoder(query_config, cache_dir, name="query_encoder",
                                   preprocessor=towers.query.preprocessor or None,
                                   encoder=towers.query.encoder or None)
    image = build_image_encoder(towers.image, cache_dir)
    return Towers(Encoders(text=text, image=image, query=query),
                  text_frozen=towers.text.trainable == "frozen",
                  image_frozen=not towers.image.trainable)


def _dims(encoders: Encoders, image_size: int) -> tuple[int, int, int]:
    text_dim = int(encoders.text(tf.constant(["x"])).shape[-1])
    image_dim = int(encoders.image(tf.zeros([1, image_size, image_size, 3])).shape[-1])
    query_dim = int(encoders.query(tf.constant(["x"])).shape[-1])
    return text_dim, image_dim, query_dim


class FeatureStore:
    """Encoder outputs for a run's products and queries, cached on disk for frozen towers."""

    def __init__(self, config: Config, towers: Towers, items: ItemTable, cache_dir: Path):
        self.config, self.towers, self.items, self.cache_dir = config, towers, items, cache_dir
        self.cached = cached_inputs(config, towers)  # the one decision of what is cached
        self._catalog_key = cache_key(ids=items.product_ids, titles=items.titles,
                                      images=items.image_paths)

    def item_features(self) -> dict[str, np.ndarray]:
        cfg, out = self.config.towers, {}
        if "title_features" in self.cached:
            key = cache_key(catalog=self._catalog_key, pre=cfg.text.preprocessor,
                            enc=cfg.text.encoder, seq=cfg.text.seq_length, pool=cfg.text.pooling)
            out["title_features"] = load_or_compute(
                self.cache_dir, "titles", key,
                lambda: encode_texts(self.towers.encoders.text, self.items.titles, desc="titles"))
        if "image_features" in self.cached:
            parts = {"handle": cfg.image.handle, "size": cfg.image.image_size,
                     "decoding": IMAGE_DECODING}
            if cfg.image.colour_histogram_bins:  # part of the key only when used: old caches stay valid
                parts["colour_bins"] = cfg.image.colour_histogram_bins
            key = cache_key(catalog=self._catalog_key, **parts)
            out["image_features"] = load_or_compute(
                self.cache_dir, "images", key,
                lambda: encode_images(self.towers.encoders.image, self.items.image_paths,
                                      cfg.image.image_size, desc="images"))
        return out

    def query_features(self, texts: list[str], name: str) -> np.ndarray | None:
        if "query_features" not in self.cached:
            return None
        cfg = self.config.towers
        key = cache_key(texts=texts, pre=cfg.text.preprocessor, enc=cfg.text.encoder,
                        seq=cfg.text.seq_length, pool=cfg.text.pooling,
                        query=[cfg.query.encoder, cfg.query.preprocessor, cfg.query.seq_length])
        return load_or_compute(self.cache_dir, name, key,
                               lambda: encode_texts(self.towers.encoders.query, texts, desc=name))


def validation_queries(prepared: PreparedData, config: Config) -> list:
    """The validation queries scored every epoch: a seeded sample when there are many."""
    queries = prepared.queries["validation"]
    limit = config.training.validation_queries
    if limit and len(queries) > limit:
        queries = random.Random(config.training.seed).sample(queries, limit)
    return queries


def _validation_scorer(prepared: PreparedData, queries: list, item_features: dict, items: ItemTable,
                       query_features: np.ndarray | None, config: Config):
    """Returns (score_fn, grades) for the validation split: retrieval scores of the model."""
    val_ids = set(prepared.splits["validation"])
    positions = np.array([i for i, pid in enumerate(items.product_ids) if pid in val_ids], np.int64)
    products = [prepared.catalog.products[i] for i in positions]
    grades = grade_matrix(queries, products, config.data.attributes)
    item_batch = _item_batch(items, positions, item_features, config.towers.image.image_size)
    query_batch = {"query_features": query_features} if query_features is not None else \
        {"query": np.array([q.text for q in queries])}

    def score(model: MultimodalSearchModel) -> np.ndarray:
        item_embeddings = _batched(lambda b: model.embed_items(b)["embedding"], item_batch)
        query_embeddings = _batched(model.embed_queries, query_batch)
        return query_embeddings @ item_embeddings.T

    return score, grades


def _read_images(items: ItemTable, positions, image_size: int) -> np.ndarray:
    from tfmmsearch.data.pipeline import read_image

    return np.stack([read_image(tf.constant(items.image_paths[i]), image_size).numpy()
                     for i in positions])


def _item_batch(items: ItemTable, positions, cached: dict, image_size: int,
                images: np.ndarray | None = None) -> dict:
    """Item-tower inputs for the products at `positions`: cached features where there are any."""
    batch = {"has_title": items.has_title[positions], "has_image": items.has_image[positions]}
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


def cached_inputs(config: Config, towers: Towers) -> set[str]:
    """Which model inputs come from cached encoder outputs (frozen towers with caching on)."""
    if not config.training.cache_frozen_features:
        return set()
    keys = set()
    if towers.text_frozen:
        keys.add("title_features")
    if towers.image_frozen:
        keys.add("image_features")
    if towers.query_frozen:
        keys.add("query_features")
    return keys


def build_model(config: Config, towers: Towers, cached,
                dims: tuple[int, int, int] | None = None) -> MultimodalSearchModel:
    """The search model; encoders are attached only for inputs that are not cached.

    `dims` (text, image, query encoder widths) lets a caller under a distribution strategy
    measure them outside its scope: an eager TF-Hub call in a multi-worker cross-replica
    context fails.
    """
    text_dim, image_dim, query_dim = dims or _dims(towers.encoders, config.towers.image.image_size)
    encoders = Encoders(
        text=None if "title_features" in cached else towers.encoders.text,
        image=None if "image_features" in cached else towers.encoders.image,
        query=None if "query_features" in cached else towers.encoders.query)
    return MultimodalSearchModel(config.model, text_dim, image_dim, query_dim, encoders,
                                 name="multimodal_search")


def train(config: Config, run_dir: str | Path, verbose: int | None = None) -> TrainResult:
    """Trains the configured model into `run_dir`; rerunning the same call resumes from backup."""
    start = time.time()
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    chief = is_chief()
    if chief:
        save_config(config, run_dir / "config.yaml")
    tf.keras.utils.set_random_seed(config.training.seed)
    if config.training.mixed_precision:
        tf.keras.mixed_precision.set_global_policy("mixed_float16")

    strategy = make_strategy(config.training.strategy)
    prepared = prepare_data(config, progress=chief)
    products = prepared.catalog.products
    items = ItemTable.from_products(products)
    train_ids = set(prepared.splits["train"])
    train_positions = [i for i, p in enumerate(products) if p.product_id in train_ids]

    with strategy.scope():
        towers = build_towers(config)
    store = FeatureStore(config, towers, items, Path(config.data.work_dir) / "feature_cache")
    cached = store.item_features()

    attribute_ids = AttributeIds.from_products(products, config.data.attributes)
    train_products = [products[i] for i in train_positions]
    examples = build_examples(prepared.queries["train"], train_products, config.data.attributes,
                              max_per_query=config.data.queries.max_positives_per_query,
                              seed=config.training.seed, attribute_ids=attribute_ids)
    train_query_features = store.query_features(examples.query_texts, "train_queries")
    train_cached = {key: value[train_positions] for key, value in cached.items()}
    if train_query_features is not None:
        train_cached["query_features"] = train_query_features
    train_items = ItemTable.from_products(train_products)
    batch_size = min(config.training.batch_size, len(examples))
    dataset = training_dataset(examples, train_items, batch_size=batch_size,
                               seed=config.training.seed, image_size=config.towers.image.image_size,
                               cached=train_cached, words=config.model.ranking_lexical)
    steps_per_epoch = len(examples) // batch_size
    logger.info("training on %d pairs (%d queries, %d products), batch %d, %d steps/epoch, "
                "cached inputs: %s", len(examples), len(examples.query_texts), len(train_products),
                batch_size, steps_per_epoch, ", ".join(sorted(train_cached)) or "none")

    dims = _dims(towers.encoders, config.towers.image.image_size)  # eager: outside the scope
    with strategy.scope():
        model = build_model(config, towers, train_cached, dims)
        model.compile(optimizer=_optimizer(config, steps_per_epoch),
                      jit_compile=config.training.xla or None)

    val_queries = validation_queries(prepared, config)
    val_query_features = store.query_features([q.text for q in val_queries], "validation_queries")
    score_fn, grades = _validation_scorer(prepared, val_queries, cached, items, val_query_features,
                                          config)
    validation = ValidationRanking(score_fn, grades)
    callbacks = [
        ResumeNotice(),
        tf.keras.callbacks.BackupAndRestore(
            str(run_dir / "backup"),
            save_freq=config.training.steps_per_checkpoint or "epoch",
            delete_checkpoint=False),
        tf.keras.callbacks.TerminateOnNaN(),
        validation,
        LearningRateLogger(),
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
        verbose = 1 if sys.stderr.isatty() else 2
    history = model.fit(dataset, epochs=config.training.epochs, callbacks=callbacks,
                        verbose=verbose)

    final_validation = validation.history[-1] if validation.history else {}
    # Every worker saves (collectives); only the chief's copy is the run's model.
    model.save_weights(str(run_dir / (FINAL_WEIGHTS if chief else worker_weights_path())))
    if chief:
        _write_projector(run_dir, model, prepared, cached, items, config)
        summary = {"history": _jsonable(history.history), "validation": final_validation,
                   "train_pairs": len(examples), "steps_per_epoch": steps_per_epoch,
                   "seconds": round(time.time() - start, 1)}
        (run_dir / "metrics.json").write_text(json.dumps(summary, indent=2))
        logger.info("run finished in %.0f s: weights %s, checkpoints %s, TensorBoard logs %s, "
                    "metrics %s", time.time() - start, run_dir / FINAL_WEIGHTS,
                    run_dir / "checkpoints", run_dir / "logs", run_dir / "metrics.json")
        logger.info("watch it with: tensorboard --logdir %s --host 127.0.0.1", run_dir / "logs")
    return TrainResult(run_dir, _jsonable(history.history), final_validation, time.time() - start)


def worker_weights_path() -> str:
    """Where this non-chief worker keeps its copy of the final weights, relative to the run dir."""
    return f"workers/{task_name()}/{FINAL_WEIGHTS}"


def _jsonable(history: dict) -> dict:
    return {key: [float(v) for v in values] for key, values in history.items()}


def _write_projector(run_dir: Path, model, prepared: PreparedData, cached: dict, items: ItemTable,
                     config: Config, limit: int = 500) -> None:
    """Item embeddings of the validation products (with titles and an image sprite)."""
    val_ids = set(prepared.splits["validation"])
    positions = [i for i, pid in enumerate(items.product_ids) if pid in val_ids][:limit]
    images = _read_images(items, positions, config.towers.image.image_size)
    batch = _item_batch(items, positions, cached, config.towers.image.image_size, images)
    embeddings = _batched(lambda b: model.embed_items(b)["embedding"], batch)
    write_embedding_projector(run_dir / "logs", embeddings, [items.titles[i] for i in positions], images)


def load_run_config(run_dir: str | Path) -> Config:
    return load_config(Path(run_dir) / "config.yaml")


def load_trained_model(run_dir: str | Path, config: Config | None = None
                       ) -> tuple[Config, Towers, MultimodalSearchModel]:
    """Rebuilds a run's towers and model from its config.yaml and restores the final weights."""
    run_dir = Path(run_dir)
    weights = run_dir / FINAL_WEIGHTS
    if not Path(str(weights) + ".index").is_file():
        raise FileNotFoundError(f"{run_dir} has no trained weights ({weights}.index); "
                                f"train first: tfmmsearch train --out {run_dir}")
    config = config or load_run_config(run_dir)
    towers = build_towers(config)
    model = build_model(config, towers, cached_inputs(config, towers))
    model.build_heads()
    status = model.load_weights(str(weights))
    status.assert_existing_objects_matched()  # every variable of the model must come back
    status.expect_partial()  # optimizer slots and metric states are not needed
    return config, towers, model
