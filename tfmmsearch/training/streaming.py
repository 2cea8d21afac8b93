"""Training input streamed from the prepared TFDS train split (`training.item_source: tfds`).

`datasets.training_dataset` holds every item's title, image path and cached features as
in-graph tables, so the catalog must fit in memory. Here items are read in order from the
TFDS shards (`tfds_catalog.prepare_catalog_dataset`), zipped with the frozen-encoder feature
shards written beside them (`model.feature_shards`), and each item is expanded into its
(query, item) pairs. Only small per-item and per-query tables stay in memory: the indices of
each item's training pairs, attribute ids, sampling probabilities, the query texts or query
features, and the raw item-feature strings of a model with item features. Pairs are shuffled
through a bounded buffer (items first, then pairs), so memory stays flat however large the
catalog; one pass over the split is one epoch and gives
every training pair exactly once, like the in-memory path.

Elements carry the same keys, dtypes and shapes as `training_dataset`'s.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import tensorflow as tf

from tfmmsearch.config import Config
from tfmmsearch.contract import has_text_tensor
from tfmmsearch.data.item_features import attribute_matrix
from tfmmsearch.data.pipeline import stored_image
from tfmmsearch.data.prepare import PreparedData
from tfmmsearch.data.schema import Product
from tfmmsearch.model.feature_cache import FeatureStore, ItemTable
from tfmmsearch.model.feature_shards import FeatureShards, item_feature_shards
from tfmmsearch.model.item_features import ATTRIBUTE_INPUT
from tfmmsearch.model.lexical import MAX_QUERY_WORDS, MAX_TITLE_WORDS, word_ids
from tfmmsearch.model.search_model import Encoders
from tfmmsearch.training.datasets import pair_columns, pair_labels
from tfmmsearch.training.examples import TrainingExamples

TRAIN_SPLIT = "train"
# Bounded shuffles: items (with their features and JPEG bytes) before they are expanded into
# pairs, then pairs (images are decoded after this buffer, so it holds bytes, not pixels).
ITEM_SHUFFLE_BUFFER = 1024
PAIR_SHUFFLE_BUFFER = 4096


def tfds_dir(config: Config) -> Path:
    """Where a run's TFDS shards live: data.work_dir/tfds."""
    return Path(config.data.work_dir) / "tfds"


def prepare_item_source(prepared: PreparedData, config: Config):
    """Writes the prepared splits as TFDS shards (reused while catalog and splits are the same);
    returns the builder. JPEG files are stored byte for byte, so their pixels match the files'
    (other formats are stored re-encoded as JPEG). Workers of a multi-worker run each call
    this: the first preparation of a directory must not race (prepare it before starting
    them); a prepared one is only read."""
    from tfmmsearch.data.tfds_catalog import prepare_catalog_dataset

    return prepare_catalog_dataset(prepared.catalog, prepared.splits, tfds_dir(config))


def streaming_training_dataset(examples: TrainingExamples, product_ids: Sequence[str], source,
                               split_ids: Sequence[str] | None = None, *, batch_size: int,
                               seed: int, image_size: int,
                               splits: Sequence[str] = (TRAIN_SPLIT,),
                               shards: Sequence[FeatureShards] | None = None,
                               query_features: np.ndarray | None = None, shuffle: bool = True,
                               words: bool = False, drop_remainder: bool = True,
                               attribute_values: np.ndarray | None = None,
                               item_buffer: int = ITEM_SHUFFLE_BUFFER,
                               pair_buffer: int = PAIR_SHUFFLE_BUFFER) -> tf.data.Dataset:
    """Batches of pair features streamed from TFDS `splits` of `source` (builder or dir),
    read one after another (search-log pairs touch every split's products).

    `product_ids` are the products `examples.product_index` points into; `split_ids` the
    splits' ids in prepared order, split after split (default: `product_ids`). `shards`, one
    per split, give title/image features in place of titles/pixels; `query_features`
    [len(query_texts), H] replace query strings; `words` adds hashed query and title words;
    `attribute_values` [len(split_ids), C] (split_ids order) are the items' raw item-feature
    strings, kept in memory beside the other per-item tables (a model with item features).
    The splits' order is checked against `split_ids`, and the shards' against the splits, in
    the graph.
    """
    from tfmmsearch.data.tfds_catalog import load_catalog_split, open_catalog_dataset, split_size

    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    builder = open_catalog_dataset(source)
    split_ids = list(product_ids if split_ids is None else split_ids)
    splits = list(splits)
    named = "+".join(splits)
    sizes = [split_size(builder, split) for split in splits]
    count = sum(sizes)
    if count != len(split_ids):
        raise ValueError(f"split {named!r} in {builder.data_dir} holds {count} products, "
                         f"{len(split_ids)} were expected: prepare the TFDS dataset again")
    if shards is not None:
        shards = list(shards)
        if len(shards) != len(splits):
            raise ValueError(f"{len(shards)} feature shards for {len(splits)} splits")
        for shard, split, size in zip(shards, splits, sizes):
            if shard.split != split or shard.count != size:
                raise ValueError(f"feature shards {shard.directory} hold {shard.count} "
                                 f"{shard.split!r} records, not the {size} items of split "
                                 f"{split!r}")
    if examples.has_negatives:
        raise ValueError("streamed items cannot carry each pair's hard negative (it is another "
                         "item of the stream): train with training.item_source: memory, or set "
                         "data.search_log.skipped_as_negatives: false")
    if attribute_values is not None and len(attribute_values) != count:
        raise ValueError(f"attribute_values has {len(attribute_values)} rows for {count} items")
    if query_features is not None and len(query_features) != len(examples.query_texts):
        raise ValueError(f"query_features has {len(query_features)} rows, examples "
                         f"{len(examples.query_texts)} query texts")

    # Invert the pairs to per-item lists: item (split position) -> its pairs' example indices.
    position = {product_id: index for index, product_id in enumerate(split_ids)}
    item_of_product = np.array([position.get(pid, -1) for pid in product_ids], np.int64)
    used = np.unique(examples.product_index)
    absent = used[item_of_product[used] < 0]
    if len(absent):
        raise ValueError(f"product_id {product_ids[absent[0]]!r} has training pairs but is not "
                         f"in split {named!r} of {builder.data_dir}")
    item_of_pair = item_of_product[examples.product_index]
    pair_order = np.argsort(item_of_pair, kind="stable").astype(np.int64)
    lengths = np.bincount(item_of_pair, minlength=count).astype(np.int64)
    starts = np.cumsum(lengths) - lengths
    known = item_of_product >= 0
    attributes = np.full((count, examples.item_attributes.shape[1]), -1, np.int32)
    attributes[item_of_product[known]] = examples.item_attributes[known]

    expected_ids = tf.constant(split_ids, tf.string, shape=[count])
    item_table = {"start": tf.constant(starts), "length": tf.constant(lengths),
                  "item_attributes": tf.constant(attributes)}
    if attribute_values is not None and attribute_values.shape[1]:
        item_table[ATTRIBUTE_INPUT] = tf.constant(attribute_values.tolist(), tf.string)
    pair_order = tf.constant(pair_order)
    pair_table = {key: tf.constant(values) for key, values in pair_columns(examples).items()
                  if key not in ("product_index", "negative_index")}
    query_table = {"query_attributes": tf.constant(examples.query_attributes)}
    if query_features is not None:
        query_table["query_features"] = tf.constant(query_features)
    else:
        query_table["query"] = tf.constant(examples.query_texts, tf.string)
    if words:
        query_table["query_words"] = word_ids(examples.query_texts, MAX_QUERY_WORDS)
    cached = set(shards[0].dims) if shards else set()

    def to_item(index, example, features=None) -> dict:
        checks = [tf.debugging.assert_equal(
            example["product_id"], tf.gather(expected_ids, index),
            message=f"split {named!r} in {builder.data_dir} is not in the order of the product "
                    f"ids this run expects: prepare the TFDS dataset again")]
        if features is not None:
            checks.append(tf.debugging.assert_equal(
                features["product_id"], example["product_id"],
                message=f"feature shards {', '.join(str(s.directory) for s in shards)} are not "
                        f"in the order of split {named!r} in {builder.data_dir}: delete them to "
                        f"have them rewritten"))
        item = {"product_id": example["product_id"],
                "has_title": has_text_tensor(example["title"]),
                "has_image": example["has_image"]}
        item.update({key: tf.gather(values, index) for key, values in item_table.items()})
        for name in ("title_features", "image_features"):
            if name in cached:
                item[name] = features[name]
        if "title_features" not in cached:
            item["title"] = example["title"]
        if "image_features" not in cached:
            item["image_bytes"] = example["image"]  # decoded after the shuffles, per pair
        if words:
            item["title_words"] = word_ids(example["title"][None], MAX_TITLE_WORDS)[0]
        with tf.control_dependencies(checks):
            return {key: tf.identity(value) for key, value in item.items()}

    def pairs_of(item) -> tf.data.Dataset:
        item = dict(item)
        start, length = item.pop("start"), item.pop("length")
        pairs = tf.slice(pair_order, tf.reshape(start, [1]), tf.reshape(length, [1]))
        return tf.data.Dataset.zip((tf.data.Dataset.from_tensors(item).repeat(length),
                                    tf.data.Dataset.from_tensor_slices(pairs)))

    def to_pair(item, pair) -> dict:
        features = dict(item)
        columns = {key: tf.gather(values, pair) for key, values in pair_table.items()}
        features.update({key: tf.gather(values, columns["query_index"])
                         for key, values in query_table.items()})
        features.update(pair_labels(columns))
        if "image_bytes" in features:
            features["image"] = stored_image(features.pop("image_bytes"), features["has_image"],
                                             image_size)
        return features

    parts = [load_catalog_split(builder, split, decode_image=False) for split in splits]
    if shards:
        parts = [tf.data.Dataset.zip((part, shard.dataset())) for part, shard in zip(parts, shards)]
    items = parts[0]
    for part in parts[1:]:
        items = items.concatenate(part)
    items = items.enumerate()
    if shards:
        items = items.map(lambda index, both: (index, *both))
    dataset = items.map(to_item, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    dataset = dataset.filter(lambda item: item["length"] > 0)
    if shuffle:
        dataset = dataset.shuffle(item_buffer, seed=seed, reshuffle_each_iteration=True)
    dataset = dataset.flat_map(pairs_of)
    if shuffle:
        dataset = dataset.shuffle(pair_buffer, seed=seed + 1, reshuffle_each_iteration=True)
    dataset = dataset.map(to_pair, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    dataset = dataset.batch(batch_size, drop_remainder=drop_remainder)
    # One pass is one epoch: say how many batches it holds, so Keras knows the epoch's length
    # (progress, mid-epoch resume) and a pass that lost or gained pairs fails loudly.
    steps = len(examples) // batch_size if drop_remainder else -(-len(examples) // batch_size)
    dataset = dataset.apply(tf.data.experimental.assert_cardinality(steps))
    options = tf.data.Options()
    # Shard by element across workers, as for the in-memory tables: sharding by file would
    # split the TFDS files and the feature shards differently and break their zip.
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.prefetch(tf.data.AUTOTUNE).with_options(options)


def streamed_run_dataset(config: Config, prepared: PreparedData, encoders: Encoders,
                         examples: TrainingExamples, products: list[Product],
                         query_features: np.ndarray | None, *, batch_size: int,
                         cache_dir: Path) -> tuple[tf.data.Dataset, list[str]]:
    """A run's streamed training input: TFDS shards and feature shards written (or reused),
    then `streaming_training_dataset` over the splits holding the examples' products
    (`products`, the list `examples.product_index` points into). Returns it and the names of
    its cached inputs."""
    from tfmmsearch.data.prepare import SPLITS

    builder = prepare_item_source(prepared, config)
    used = {products[index].product_id for index in np.unique(examples.product_index)}
    splits = [split for split in SPLITS if used & set(prepared.splits[split])]
    by_id = {product.product_id: product for product in prepared.catalog.products}
    shards = []
    for split in splits:
        split_items = ItemTable.from_products([by_id[pid] for pid in prepared.splits[split]])
        store = FeatureStore(config, encoders, split_items, cache_dir)
        shards.append(item_feature_shards(store, builder, split))
    split_ids = [pid for split in splits for pid in prepared.splits[split]]
    columns = [feature.column for feature in config.model.item_features]
    dataset = streaming_training_dataset(
        examples, [product.product_id for product in products], builder, split_ids,
        batch_size=batch_size, seed=config.training.seed,
        image_size=config.towers.image.image_size, splits=splits,
        shards=None if shards[0] is None else shards,
        query_features=query_features, words=config.model.ranking_lexical,
        attribute_values=attribute_matrix([by_id[pid] for pid in split_ids], columns)
        if columns else None)
    inputs = sorted([*(shards[0].dims if shards[0] is not None else ()),
                     *(["query_features"] if query_features is not None else [])])
    return dataset, inputs
