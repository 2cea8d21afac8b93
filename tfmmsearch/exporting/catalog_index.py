"""The index arrays of a catalog, computed by a trained model (what `export` stores).

Items go through the model's own `embed_items`, the function training and the serving graph
use. Products whose frozen-encoder features training already cached (same id, title and
image, same encoders: the cache keys of `FeatureStore`) reuse them, so exporting a run over
its own catalog runs no deep encoder at all; the rest are encoded from raw titles and image
bytes, exactly as the exported `index_outputs` signature would.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import tensorflow as tf

from tfmmsearch.config import Config
from tfmmsearch.contract import ATTRIBUTES_FIELD, LEXICAL_FIELD, index_field_widths
from tfmmsearch.data.item_features import attribute_matrix
from tfmmsearch.data.schema import Product
from tfmmsearch.model.feature_cache import FeatureStore, ItemTable
from tfmmsearch.model.item_features import ATTRIBUTE_INPUT
from tfmmsearch.model.lexical import MAX_TITLE_WORDS, word_ids
from tfmmsearch.progress import progress

logger = logging.getLogger(__name__)


def _training_catalog(config: Config) -> list[Product]:
    """The products training cached features for (the run's catalog), or [] if unreadable."""
    from tfmmsearch.data.catalog import read_catalog
    from tfmmsearch.data.prepare import resolve_catalog_dir

    try:
        return read_catalog(resolve_catalog_dir(config), on_bad_row=config.data.on_bad_row,
                            check_images=False).products
    except (OSError, ValueError):
        return []


def cached_item_features(model, config: Config, products: list[Product]
                         ) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Cached frozen-encoder features for `products` where training stored them.

    Returns ({input name: [N, F] rows}, hit [N] bool); rows of products without a hit are
    zeros. Nothing is computed here.
    """
    hit = np.zeros(len(products), bool)
    features: dict[str, np.ndarray] = {}
    for source in (products, _training_catalog(config)):
        if not source:
            continue
        store = FeatureStore(config, model.encoders, ItemTable.from_products(source),
                             Path(config.data.work_dir) / "feature_cache")
        stored = store.item_features(compute=False)
        if not stored or set(stored) != store.cached - {"query_features"}:
            continue  # nothing, or only part of what the model would read, is cached
        row_of = {(p.product_id, p.title, str(p.image_path or "")): i for i, p in enumerate(source)}
        rows = np.array([row_of.get((p.product_id, p.title, str(p.image_path or "")), -1)
                         for p in products])
        hit = rows >= 0
        features = {name: np.where(hit[:, None], values[np.maximum(rows, 0)], 0.0).astype(np.float32)
                    for name, values in stored.items()}
        break
    return features, hit


def model_index_arrays(model, config: Config, products: list[Product], batch_size: int = 64
                       ) -> dict[str, np.ndarray]:
    """INDEX_FIELDS (+ title words for a lexical head, attribute vectors for a model with item
    features) of `products`, via `model.embed_items`."""
    start = time.time()
    cached, hit = cached_item_features(model, config, products)
    embed = tf.function(lambda batch: model.embed_items(batch), reduce_retracing=True)
    dim = model.config.embedding_dim
    widths = dict(index_field_widths(dim))
    columns = tuple(model.item_feature_columns)
    if columns:
        widths[ATTRIBUTES_FIELD] = dim
    outputs = {field: np.zeros((len(products), width), np.float32)
               for field, width in widths.items()}
    groups = [np.flatnonzero(hit), np.flatnonzero(~hit)] if cached else [np.arange(len(products))]
    with progress(total=len(products), desc="indexing", unit="item", leave=False,
                  disable=len(products) <= batch_size) as bar:
        for positions, use_cache in zip(groups, (bool(cached), False)):
            for first in range(0, len(positions), batch_size):
                chunk = positions[first:first + batch_size]
                batch = _item_batch([products[i] for i in chunk],
                                    {k: v[chunk] for k, v in cached.items()} if use_cache else {},
                                    columns)
                result = embed(batch)
                for field in widths:
                    outputs[field][chunk] = result[field].numpy()
                bar.update(len(chunk))
    outputs[LEXICAL_FIELD] = word_ids(tf.constant([p.title for p in products], tf.string),
                                      MAX_TITLE_WORDS).numpy()
    logger.info("indexed %d items in %.1f s (%d from cached encoder features, %d encoded)",
                len(products), time.time() - start, int(hit.sum()) if cached else 0,
                len(products) - (int(hit.sum()) if cached else 0))
    return outputs


def _item_batch(products: list[Product], cached: dict[str, np.ndarray],
                columns: tuple[str, ...] = ()) -> dict[str, tf.Tensor]:
    """Model inputs for these products: cached features where given, raw inputs otherwise;
    the raw strings of the model's item-feature `columns`."""
    batch = {"has_title": tf.constant([p.has_title for p in products], tf.bool),
             "has_image": tf.constant([p.has_image for p in products], tf.bool)}
    if columns:
        batch[ATTRIBUTE_INPUT] = tf.constant(attribute_matrix(products, columns).tolist(),
                                             tf.string)
    batch.update({name: tf.constant(values) for name, values in cached.items()})
    if "title_features" not in batch:
        batch["title"] = tf.constant([p.title for p in products], tf.string)
    if "image_features" not in batch:
        batch["image_bytes"] = tf.constant(
            [p.image_bytes() for p in products], tf.string)
    return batch
