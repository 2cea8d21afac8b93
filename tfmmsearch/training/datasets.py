"""tf.data input for training: (query, item) pairs gathered from index arrays in graph.

Every element carries exactly the keys `MultimodalSearchModel.compute_loss` reads. Inputs
come from cached encoder features where the towers are frozen, or raw (query string, title
string, decoded image) where they train; the raw item-feature strings (`attribute_values`)
when the model has item features. Pairs with a hard negative (search-log pairs) also
carry that product's item inputs under `negative_`-prefixed keys, and `has_negative`.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from tfmmsearch.data.pipeline import read_image
from tfmmsearch.model.lexical import MAX_QUERY_WORDS, MAX_TITLE_WORDS, word_ids
from tfmmsearch.training.examples import TrainingExamples
from tfmmsearch.model.feature_cache import ItemTable
from tfmmsearch.model.item_features import ATTRIBUTE_INPUT
from tfmmsearch.model.search_model import NEGATIVE_PREFIX


def pair_columns(examples: TrainingExamples) -> dict[str, np.ndarray]:
    """The per-pair arrays a dataset slices (both the in-memory and the streamed input)."""
    return {"query_index": examples.query_index, "product_index": examples.product_index,
            "sampling_probability": examples.sampling_probability,
            "sample_weight": examples.weight, "positive_grade": examples.positive_grade,
            "negative_index": examples.negative_index}


def pair_labels(pair: dict) -> dict:
    """The loss inputs every element carries from its pair: which query it is (other pairs of
    the same query are not its negatives), logQ probability, weight and grade."""
    return {"query_id": pair["query_index"], "sampling_probability": pair["sampling_probability"],
            "sample_weight": pair["sample_weight"], "positive_grade": pair["positive_grade"]}


def training_dataset(examples: TrainingExamples, items: ItemTable, *, batch_size: int, seed: int,
                     image_size: int, cached: dict[str, np.ndarray] | None = None,
                     shuffle: bool = True, words: bool = False) -> tf.data.Dataset:
    """Batches of pair features. `cached` may hold query_features / title_features / image_features;
    `words` adds hashed query and title words for a lexical ranking head."""
    cached = cached or {}
    table = {
        "product_id": tf.constant(items.product_ids),
        "has_title": tf.constant(items.has_title),
        "has_image": tf.constant(items.has_image),
        "item_attributes": tf.constant(examples.item_attributes),
    }
    query_table = {"query_attributes": tf.constant(examples.query_attributes)}
    if "query_features" in cached:
        query_table["query_features"] = tf.constant(cached["query_features"])
    else:
        query_table["query"] = tf.constant(examples.query_texts)
    if words:
        table["title_words"] = word_ids(items.titles, MAX_TITLE_WORDS)
        query_table["query_words"] = word_ids(examples.query_texts, MAX_QUERY_WORDS)
    if "title_features" in cached:
        table["title_features"] = tf.constant(cached["title_features"])
    else:
        table["title"] = tf.constant(items.titles)
    if "image_features" in cached:
        table["image_features"] = tf.constant(cached["image_features"])
    else:
        table["image_path"] = tf.constant(items.image_paths)
    if items.attribute_columns:  # raw item-feature strings, parsed by the model's graph
        table[ATTRIBUTE_INPUT] = tf.constant(items.attribute_values.tolist(), tf.string)

    negatives = examples.has_negatives
    negative_table = {key: value for key, value in table.items() if key != "item_attributes"}

    def to_features(pair):
        product_index = pair["product_index"]
        features = {key: tf.gather(value, product_index) for key, value in table.items()}
        features.update({key: tf.gather(value, pair["query_index"])
                         for key, value in query_table.items()})
        if "image_path" in features:
            features["image"] = read_image(features.pop("image_path"), image_size)
        if negatives:
            negative = pair["negative_index"]
            row = tf.maximum(negative, 0)
            for key, value in negative_table.items():
                features[f"{NEGATIVE_PREFIX}{key}"] = tf.gather(value, row)
            if f"{NEGATIVE_PREFIX}image_path" in features:
                features[f"{NEGATIVE_PREFIX}image"] = read_image(
                    features.pop(f"{NEGATIVE_PREFIX}image_path"), image_size)
            features["has_negative"] = negative >= 0
        features.update(pair_labels(pair))
        return features

    dataset = tf.data.Dataset.from_tensor_slices(pair_columns(examples))
    if shuffle:
        dataset = dataset.shuffle(len(examples), seed=seed, reshuffle_each_iteration=True)
    dataset = dataset.map(to_features, num_parallel_calls=tf.data.AUTOTUNE,
                          deterministic=True)
    return dataset.batch(batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE)
