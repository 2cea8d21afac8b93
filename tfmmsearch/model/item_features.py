"""The attribute encoder: raw item-feature strings -> one vector per item, and its presence.

Input: string [B, C], item b's raw value of the c-th configured column (model.item_features,
config order). Per column, with the rules of `tfmmsearch.contract` (the Python side computed the
vocabularies and statistics with the same rules, tfmmsearch/data/item_features.py):

- categorical: the stripped value's vocabulary id (0 = out of vocabulary) -> embedding;
- multi_categorical: the value split on its separator, each present part looked up and
  embedded, the embeddings averaged;
- numeric: the parsed number, transformed (log1p) and standardised with the catalog's mean and
  std, clipped to +-NUMERIC_CLIP;

each followed by a 0/1 "present" flag. A missing value (contract.MISSING_ATTRIBUTE_VALUES,
an unparseable number, a multi-valued cell without a present part) contributes zeros and flag
0. The item has the attribute modality when at least one of its columns is present.

Vocabulary lookup is core ops only (sorted 62-bit fingerprints, searchsorted, a string check,
as the export's product-id lookup): no lookup-table resource in checkpoints or SavedModels. The
vocabularies, statistics and embedding widths are the layer's config; only the embeddings are
weights.
"""

from __future__ import annotations

import json

import numpy as np
import tensorflow as tf

from tfmmsearch.contract import attribute_value_tensor, fingerprint, parse_number_tensor
from tfmmsearch.data.item_features import NUMERIC_CLIP, ItemFeatureStats

ATTRIBUTE_INPUT = "attribute_values"  # the batch key / item-tower input of the raw strings


def encoder_features(stats: ItemFeatureStats, configs) -> list[dict]:
    """The AttributeEncoder config of each feature: its statistics plus its embedding width."""
    stats.check_config(configs)
    return [{"column": s.column, "kind": s.kind, "vocabulary": list(s.vocabulary),
             "separator": s.separator, "transform": s.transform, "mean": s.mean, "std": s.std,
             "embedding_dim": feature.embedding_dim if s.categorical else 0}
            for s, feature in zip(stats.features, configs)]


class _Vocabulary:
    """Sorted fingerprints of a vocabulary: value -> id (1-based, 0 for any other value)."""

    def __init__(self, vocabulary: list[str]):
        with tf.init_scope():  # eager even while a Keras functional graph is being built
            prints = fingerprint(tf.constant(vocabulary, tf.string, shape=[len(vocabulary)])
                                 ).numpy()
        order = np.argsort(prints, kind="stable")
        # One sentinel at the end so gathers never run past an empty vocabulary; "" is never a
        # present value, so the sentinel never matches.
        self.prints = np.append(prints[order], np.iinfo(np.int64).max).astype(np.int64)
        self.values = [vocabulary[i] for i in order] + [""]
        self.ids = np.append(order + 1, 0).astype(np.int64)

    def lookup(self, keys: tf.Tensor, present: tf.Tensor) -> tf.Tensor:
        prints = fingerprint(keys)
        slot = tf.searchsorted(tf.constant(self.prints), tf.reshape(prints, [-1]), side="left")
        slot = tf.reshape(tf.minimum(slot, len(self.values) - 1), tf.shape(keys))
        found = tf.logical_and(tf.equal(tf.gather(tf.constant(self.values, tf.string), slot), keys),
                               present)
        return tf.where(found, tf.gather(tf.constant(self.ids), slot), tf.zeros_like(slot, tf.int64))


class _Features:
    """The encoder's per-feature settings, held outside Keras's attribute tracking (which would
    wrap the lists and dicts of a config)."""

    def __init__(self, features: list[dict]):
        self.config = json.loads(json.dumps(list(features)))  # plain JSON types, a private copy
        self.vocabularies = [_Vocabulary(list(f["vocabulary"])) if f["kind"] != "numeric" else None
                             for f in self.config]


@tf.keras.utils.register_keras_serializable(package="tfmmsearch")
class AttributeEncoder(tf.keras.layers.Layer):
    """string [B, C] -> (float32 [B, F] encoded features, bool [B] attribute modality present).

    `features`: one dict per column (`encoder_features`): column, kind, vocabulary, separator,
    transform, mean, std, embedding_dim.
    """

    KINDS = ("categorical", "multi_categorical", "numeric")

    def __init__(self, features: list[dict], **kwargs):
        super().__init__(**kwargs)
        if not features:
            raise ValueError("an AttributeEncoder needs at least one feature")
        for feature in features:
            if feature["kind"] not in self.KINDS:
                raise ValueError(f"item feature {feature['column']!r}: unknown kind "
                                 f"{feature['kind']!r} ({', '.join(self.KINDS)})")
        self._features = _Features(features)
        # Embeddings in config order of the categorical columns; names unique (TensorBoard
        # tags), and the config order fixes which column each belongs to.
        self.embedding_layers = []
        self._slot = []
        for index, feature in enumerate(self._features.config):
            if feature["kind"] == "numeric":
                self._slot.append(-1)
                continue
            self._slot.append(len(self.embedding_layers))
            self.embedding_layers.append(tf.keras.layers.Embedding(
                len(feature["vocabulary"]) + 1, int(feature["embedding_dim"]),
                name=f"embedding_{index}"))

    @property
    def features(self) -> list[dict]:
        return json.loads(json.dumps(self._features.config))

    @property
    def columns(self) -> list[str]:
        return [feature["column"] for feature in self._features.config]

    @property
    def output_width(self) -> int:
        return sum(int(f["embedding_dim"]) + 1 if f["kind"] != "numeric" else 2
                   for f in self._features.config)

    def build(self, input_shape):
        for layer in self.embedding_layers:
            with tf.name_scope(layer.name):  # attribute_encoder/embedding_0/embeddings
                layer.build((None,))
        super().build(input_shape)

    def _embed(self, index: int, keys: tf.Tensor, present: tf.Tensor) -> tf.Tensor:
        ids = self._features.vocabularies[index].lookup(keys, present)
        vectors = self.embedding_layers[self._slot[index]](ids)
        return vectors * tf.cast(present, vectors.dtype)[:, None]

    def _categorical(self, index: int, cells: tf.Tensor):
        keys, present = attribute_value_tensor(cells)
        return self._embed(index, keys, present), present

    def _multi_categorical(self, index: int, cells: tf.Tensor):
        separator = self._features.config[index]["separator"]
        parts = tf.strings.split(cells, sep=separator)  # ragged [B, None]
        keys, present = attribute_value_tensor(parts.flat_values)
        vectors = self._embed(index, keys, present)
        rows, batch = parts.value_rowids(), tf.shape(cells, out_type=tf.int64)[0]
        total = tf.math.unsorted_segment_sum(vectors, rows, batch)
        count = tf.math.unsorted_segment_sum(tf.cast(present, vectors.dtype), rows, batch)
        return tf.math.divide_no_nan(total, count[:, None]), count > 0

    def _numeric(self, index: int, cells: tf.Tensor):
        feature = self._features.config[index]
        numbers, present = parse_number_tensor(cells)
        if feature["transform"] == "log1p":
            present = tf.logical_and(present, numbers >= 0)
            numbers = tf.math.log1p(tf.maximum(numbers, 0.0))
        standard = (numbers - float(feature["mean"])) / float(feature["std"])
        standard = tf.clip_by_value(standard, -NUMERIC_CLIP, NUMERIC_CLIP)
        standard = tf.where(present, standard, tf.zeros_like(standard))
        return tf.cast(standard, self.compute_dtype)[:, None], present

    def call(self, values):
        values = tf.convert_to_tensor(values, tf.string)
        encoders = {"categorical": self._categorical, "multi_categorical": self._multi_categorical,
                    "numeric": self._numeric}
        parts, presents = [], []
        for index, feature in enumerate(self._features.config):
            vector, present = encoders[feature["kind"]](index, values[:, index])
            parts += [tf.cast(vector, self.compute_dtype),
                      tf.cast(present, self.compute_dtype)[:, None]]
            presents.append(present)
        return tf.concat(parts, axis=-1), tf.reduce_any(tf.stack(presents, axis=-1), axis=-1)

    def compute_output_shape(self, input_shape):
        batch = input_shape[0]
        return (tf.TensorShape([batch, self.output_width]), tf.TensorShape([batch]))

    def get_config(self):
        return {**super().get_config(), "features": self.features}


def complete_attribute_values(values, batch_size, num_columns: int) -> tf.Tensor:
    """The item tower's [B, C] attribute strings from what a batch carries: None or a width of
    0 means no values (all missing); any other width must be C (checked in the graph)."""
    if values is None:
        return tf.fill(tf.stack([batch_size, num_columns]), "")
    values = tf.convert_to_tensor(values, tf.string)
    width = tf.shape(values)[1]
    check = tf.debugging.assert_equal(
        tf.logical_or(tf.equal(width, 0), tf.equal(width, num_columns)), True,
        message=f"attributes must have 0 or {num_columns} columns (one per item feature, in "
                f"the model's column order)")
    with tf.control_dependencies([check]):
        padding = tf.fill(tf.stack([tf.shape(values)[0], num_columns - width]), "")
        return tf.ensure_shape(tf.concat([values, padding], axis=1), [None, num_columns])
