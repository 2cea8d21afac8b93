"""Frozen-encoder feature caching: run a frozen encoder once per item, not once per step.

With frozen BERT and EfficientNet towers, everything that trains sits on top of their
outputs, so those outputs are computed once (batched, with a progress bar) and stored as
.npz files keyed by what produced them. Training then reads vectors instead of running two
deep networks every step: minutes instead of hours on a CPU.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tensorflow as tf

from tfmmsearch.config import Config
from tfmmsearch.data.item_features import attribute_matrix
from tfmmsearch.data.pipeline import IMAGE_DECODING, read_image
from tfmmsearch.data.schema import Product
from tfmmsearch.model.build import cached_inputs
from tfmmsearch.model.search_model import Encoders
from tfmmsearch.progress import progress

logger = logging.getLogger(__name__)


@dataclass
class ItemTable:
    """Per-product raw inputs in catalog order, as plain arrays for tf.data.

    `attribute_values` [N, C] holds the raw strings of the model's item-feature columns
    (`attribute_columns`, model.item_features order; C = 0 without item features), the
    model's `attribute_values` input.
    """

    product_ids: list[str]
    titles: list[str]
    image_paths: list[str]  # "" = no image
    has_title: np.ndarray
    has_image: np.ndarray
    attribute_columns: tuple[str, ...] = ()
    attribute_values: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.attribute_values is None:
            self.attribute_values = np.empty((len(self.product_ids), 0), dtype=object)

    @classmethod
    def from_products(cls, products: list[Product], attribute_columns=()) -> "ItemTable":
        return cls(
            product_ids=[p.product_id for p in products],
            titles=[p.title for p in products],
            image_paths=[str(p.image_path) if p.image_path else "" for p in products],
            has_title=np.array([p.has_title for p in products], bool),
            has_image=np.array([p.has_image for p in products], bool),
            attribute_columns=tuple(attribute_columns),
            attribute_values=attribute_matrix(products, attribute_columns),
        )

    def __len__(self) -> int:
        return len(self.product_ids)


def _batches(total: int, batch_size: int, desc: str):
    return progress(range(0, total, batch_size), desc=desc, unit="batch", leave=False,
                    disable=total <= batch_size)


def inference_call(encoder: tf.keras.Model):
    """The encoder as one traced inference function (training=False): what every batch
    encoding of a frozen encoder runs."""
    return tf.function(lambda batch: encoder(batch, training=False))


def encode_texts(encoder: tf.keras.Model, texts: list[str], batch_size: int = 256,
                 desc: str = "encoding texts") -> np.ndarray:
    """[N, H] encoder outputs for `texts`, computed in batches."""
    outputs = []
    call = inference_call(encoder)
    for start in _batches(len(texts), batch_size, desc):
        outputs.append(call(tf.constant(texts[start:start + batch_size])).numpy())
    return np.concatenate(outputs).astype(np.float32)


def encode_images(encoder: tf.keras.Model, image_paths: list[str], image_size: int,
                  batch_size: int = 32, desc: str = "encoding images") -> np.ndarray:
    """[N, F] features of the images at `image_paths` ("" -> features of a blank image)."""
    dataset = (tf.data.Dataset.from_tensor_slices(tf.constant(image_paths, tf.string))
               .map(lambda path: read_image(path, image_size), num_parallel_calls=tf.data.AUTOTUNE)
               .batch(batch_size).prefetch(tf.data.AUTOTUNE))
    call = inference_call(encoder)
    outputs = []
    with progress(total=len(image_paths), desc=desc, unit="img", leave=False,
                  disable=len(image_paths) <= batch_size) as bar:
        for batch in dataset:
            outputs.append(call(batch).numpy())
            bar.update(int(batch.shape[0]))
    return np.concatenate(outputs).astype(np.float32)


def cache_key(**parts) -> str:
    """A short stable hash of what determines the cached values."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def load_or_compute(cache_dir: Path, name: str, key: str, compute) -> np.ndarray | None:
    """Returns the array stored under (name, key), computing and storing it on a miss
    (`compute` None or False: None on a miss)."""
    path = Path(cache_dir) / f"{name}-{key}.npz"
    if path.is_file():
        with np.load(path, allow_pickle=False) as stored:
            logger.info("read cached %s features from %s", name, path)
            return stored["values"]
    if not compute:
        return None
    start = time.time()
    values = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.stem}.{os.getpid()}.tmp.npz")  # workers may write the same key
    np.savez(tmp, values=values)
    tmp.replace(path)
    logger.info("computed %s features %s in %.1f s -> %s", name, values.shape, time.time() - start, path)
    return values


class FeatureStore:
    """Encoder outputs for a run's products and queries, cached on disk for frozen towers."""

    def __init__(self, config: Config, encoders: Encoders, items: ItemTable, cache_dir: Path):
        self.config, self.encoders, self.items, self.cache_dir = config, encoders, items, cache_dir
        self.cached = cached_inputs(config)  # the one decision of what is cached
        self._catalog_key = cache_key(ids=items.product_ids, titles=items.titles,
                                      images=items.image_paths)

    def feature_key(self, name: str) -> str:
        """The cache key of item feature `name` (title_features / image_features): what
        produced it, over these items. The .npz cache and the TFDS feature shards share it."""
        cfg = self.config.towers
        if name == "title_features":
            return cache_key(catalog=self._catalog_key, pre=cfg.text.preprocessor,
                             enc=cfg.text.encoder, seq=cfg.text.seq_length, pool=cfg.text.pooling)
        if name == "image_features":
            parts = {"handle": cfg.image.handle, "size": cfg.image.image_size,
                     "decoding": IMAGE_DECODING}
            if cfg.image.colour_histogram_bins:  # part of the key only when used: old caches stay valid
                parts["colour_bins"] = cfg.image.colour_histogram_bins
            return cache_key(catalog=self._catalog_key, **parts)
        raise KeyError(f"no cached item feature {name!r} (title_features or image_features)")

    def item_features(self, compute: bool = True) -> dict[str, np.ndarray]:
        """Cached encoder outputs of the items; with compute=False only those already on disk."""
        cfg, out = self.config.towers, {}
        if "title_features" in self.cached:
            out["title_features"] = load_or_compute(
                self.cache_dir, "titles", self.feature_key("title_features"), compute and (
                    lambda: encode_texts(self.encoders.text, self.items.titles, desc="titles")))
        if "image_features" in self.cached:
            out["image_features"] = load_or_compute(
                self.cache_dir, "images", self.feature_key("image_features"), compute and (
                    lambda: encode_images(self.encoders.image, self.items.image_paths,
                                          cfg.image.image_size, desc="images")))
        return {name: values for name, values in out.items() if values is not None}

    def query_features(self, texts: list[str], name: str) -> np.ndarray | None:
        if "query_features" not in self.cached:
            return None
        cfg = self.config.towers
        key = cache_key(texts=texts, pre=cfg.text.preprocessor, enc=cfg.text.encoder,
                        seq=cfg.text.seq_length, pool=cfg.text.pooling,
                        query=[cfg.query.encoder, cfg.query.preprocessor, cfg.query.seq_length])
        return load_or_compute(self.cache_dir, name, key,
                               lambda: encode_texts(self.encoders.query, texts, desc=name))
