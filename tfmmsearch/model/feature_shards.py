"""Frozen-encoder features of a prepared TFDS split, as TFRecord shards beside the split.

`FeatureStore` keeps each feature array in one .npz that is loaded whole, which caps a
catalog at what fits in memory. For the streaming training input (`training.item_source:
tfds`) the same features (same encoders, same cache keys) are written once per split as

    <cache_dir>/shards-<key>/<split>-00000-of-0000N.tfrecord    records in the split's order:
                                                                 {product_id, title_features,
                                                                  image_features} (cached ones)
    <cache_dir>/shards-<key>/features.json                       split, count, dims, files

computed by streaming over the split in batches, so no more than one batch of features is
ever in memory. The directory is built under a temporary name and renamed into place, so a
crash leaves no half cache (and of two workers writing the same key, the first rename wins).
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tensorflow as tf

from tfmmsearch.model.feature_cache import FeatureStore, cache_key, inference_call
from tfmmsearch.progress import progress

logger = logging.getLogger(__name__)

ITEM_FEATURES = ("title_features", "image_features")  # in record order
SHARD_ITEMS = 4096  # records per shard: ~50 MB at 3,104 image features
MANIFEST = "features.json"


class FeatureShardError(ValueError):
    """Feature shards that do not match the split they are read with."""


@dataclass(frozen=True)
class FeatureShards:
    """A complete shard directory: `dataset()` reads its records back in the split's order."""

    directory: Path
    split: str
    count: int
    dims: dict[str, int]  # feature name -> width
    files: tuple[str, ...]

    @classmethod
    def read(cls, directory: str | Path) -> "FeatureShards":
        directory = Path(directory)
        path = directory / MANIFEST
        try:
            manifest = json.loads(path.read_text(encoding="utf-8"))
            shards = cls(directory, str(manifest["split"]), int(manifest["count"]),
                         {str(k): int(v) for k, v in manifest["dims"].items()},
                         tuple(str(f) for f in manifest["files"]))
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
            raise FeatureShardError(f"{path}: not a readable feature-shard manifest ({error}); "
                                    f"delete {directory} to have it written again") from error
        missing = [name for name in shards.files if not (directory / name).is_file()]
        if missing:
            raise FeatureShardError(f"{path} lists shard files that are missing: "
                                    f"{', '.join(missing)}; delete {directory} to rewrite it")
        return shards

    def dataset(self) -> tf.data.Dataset:
        """Parsed records {product_id, <feature>: float32 [width]}, in the split's order."""
        spec = {"product_id": tf.io.FixedLenFeature([], tf.string)}
        spec.update({name: tf.io.FixedLenFeature([width], tf.float32)
                     for name, width in self.dims.items()})
        files = [str(self.directory / name) for name in self.files]
        return tf.data.TFRecordDataset(files).map(
            lambda record: tf.io.parse_single_example(record, spec),
            num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


def shard_file_name(split: str, index: int, total: int) -> str:
    return f"{split}-{index:05d}-of-{total:05d}.tfrecord"


def _record(product_id: str, features: dict[str, np.ndarray]) -> bytes:
    feature = {"product_id": tf.train.Feature(bytes_list=tf.train.BytesList(
        value=[product_id.encode("utf-8")]))}
    for name, values in features.items():
        feature[name] = tf.train.Feature(float_list=tf.train.FloatList(value=values))
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def item_feature_shards(store: FeatureStore, source, split: str, *,
                        items_per_shard: int = SHARD_ITEMS,
                        batch_size: int = 64) -> FeatureShards | None:
    """The store's cached item features over a prepared TFDS split, written on a miss.

    `store.items` must be the split's products in its prepared order (checked while writing);
    `source` is the TFDS builder or its data_dir. None when the run caches no item feature.
    """
    from tfmmsearch.data.pipeline import tfds_split_dataset
    from tfmmsearch.data.tfds_catalog import FINGERPRINT_KEY, open_catalog_dataset, split_size

    names = [name for name in ITEM_FEATURES if name in store.cached]
    if not names:
        return None
    if items_per_shard < 1:
        raise ValueError(f"items_per_shard must be at least 1, got {items_per_shard}")
    builder = open_catalog_dataset(source)
    count = split_size(builder, split)
    expected = store.items.product_ids
    if count != len(expected):
        raise FeatureShardError(
            f"split {split!r} in {builder.data_dir} holds {count} products, the run's {split} "
            f"split {len(expected)}: prepare the TFDS dataset again")
    key = cache_key(split=split, tfds=builder.info.metadata.get(FINGERPRINT_KEY, ""),
                    **{name: store.feature_key(name) for name in names})
    directory = Path(store.cache_dir) / f"shards-{key}"
    if directory.is_dir():
        shards = FeatureShards.read(directory)
        if shards.count != count or shards.split != split or sorted(shards.dims) != sorted(names):
            raise FeatureShardError(
                f"{directory / MANIFEST} describes {shards.count} {shards.split!r} records of "
                f"{sorted(shards.dims)}, not {count} {split!r} records of {names}; delete "
                f"{directory} to rewrite it")
        logger.info("reusing %s feature shards of split %s from %s", "+".join(names), split,
                    directory)
        return shards

    start = time.time()
    total = math.ceil(count / items_per_shard)
    files = tuple(shard_file_name(split, index, total) for index in range(total))
    temporary = directory.with_name(f".{directory.name}.{os.getpid()}.tmp")
    shutil.rmtree(temporary, ignore_errors=True)  # this process's leftover from a crash
    temporary.mkdir(parents=True)
    encoders = {"title_features": (store.encoders.text, "title"),
                "image_features": (store.encoders.image, "image")}
    calls = {name: inference_call(encoders[name][0]) for name in names}
    dims: dict[str, int] = {}
    written, writer = 0, None
    try:
        items = tfds_split_dataset(builder, split, image_size=store.config.towers.image.image_size,
                                   batch_size=batch_size)
        with progress(total=count, desc=f"{split} features", unit="item", leave=False) as bar:
            for batch in items:
                ids = [value.decode("utf-8") for value in batch["product_id"].numpy()]
                if ids != expected[written:written + len(ids)]:
                    raise FeatureShardError(
                        f"split {split!r} in {builder.data_dir} is not in the run's order near "
                        f"position {written} (product_id {ids[0]!r}, expected "
                        f"{expected[written]!r}): prepare the TFDS dataset again")
                outputs = {name: np.asarray(calls[name](batch[encoders[name][1]]), np.float32)
                           for name in names}
                dims = {name: int(values.shape[-1]) for name, values in outputs.items()}
                for row, product_id in enumerate(ids):
                    if written % items_per_shard == 0:
                        if writer is not None:
                            writer.close()
                        name = files[written // items_per_shard]
                        writer = tf.io.TFRecordWriter(str(temporary / name))
                    writer.write(_record(product_id, {n: v[row] for n, v in outputs.items()}))
                    written += 1
                bar.update(len(ids))
        if writer is not None:
            writer.close()
            writer = None
        if written != count:
            raise FeatureShardError(f"split {split!r} in {builder.data_dir} gave {written} "
                                    f"records, its metadata says {count}")
        (temporary / MANIFEST).write_text(json.dumps(
            {"split": split, "count": count, "dims": dims, "files": list(files),
             "key": key}, indent=1), encoding="utf-8")
        try:
            temporary.rename(directory)
        except OSError:
            if not directory.is_dir():
                raise
            logger.info("another process wrote %s first; using its shards", directory)
    finally:
        if writer is not None:
            writer.close()
        shutil.rmtree(temporary, ignore_errors=True)
    logger.info("wrote %s feature shards of split %s (%d items, %d shards) in %.1f s -> %s",
                "+".join(names), split, count, total, time.time() - start, directory)
    return FeatureShards.read(directory)
