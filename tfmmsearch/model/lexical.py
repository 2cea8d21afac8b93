"""Exact-word evidence for the ranking head: how much of the query the title spells out.

Sentence embeddings blur near-synonyms that shoppers mean precisely ("navy blue" vs "blue"),
while catalog titles usually spell the attributes out. The ranking head therefore also gets
the share of the query's words found in the item's title. Words are lower-cased alphanumeric
runs with a plural "s" dropped, hashed to int64 (0 pads), so the same graph op serves training
batches, the exported index and every signature.
"""

from __future__ import annotations

import tensorflow as tf

MAX_TITLE_WORDS = 24
MAX_QUERY_WORDS = 12
_BUCKETS = 2**62


def word_ids(texts: tf.Tensor, max_words: int) -> tf.Tensor:
    """string [B] -> int64 [B, max_words]: hashed words in order, 0-padded (extra words dropped)."""
    texts = tf.strings.lower(tf.convert_to_tensor(texts, tf.string))
    texts = tf.strings.regex_replace(texts, r"[^a-z0-9]+", " ")
    texts = tf.strings.regex_replace(texts, r"\b([a-z0-9]{3,}?)s\b", r"\1")  # shirts -> shirt
    words = tf.strings.split(texts)
    ids = tf.strings.to_hash_bucket_fast(words, _BUCKETS) + 1
    return ids.to_tensor(default_value=0, shape=[None, max_words])


def query_coverage(query_words: tf.Tensor, item_words: tf.Tensor) -> tf.Tensor:
    """Share of each query's distinct words that occur in the item: [..., Tq], [..., Ti] -> [...].

    Leading dimensions broadcast (queries [Q, 1, Tq] against candidates [Q, K, Ti]); a query
    with no words covers nothing.
    """
    query_words = tf.cast(query_words, tf.int64)
    item_words = tf.cast(item_words, tf.int64)
    present = query_words > 0
    # A repeated query word counts once: keep only its first occurrence. earlier[i, j]: j < i.
    width = tf.shape(query_words)[-1]
    earlier = tf.linalg.band_part(tf.ones([width, width]), -1, 0) - tf.eye(width) > 0
    repeated = tf.reduce_any(tf.logical_and(
        tf.equal(query_words[..., :, None], query_words[..., None, :]), earlier), axis=-1)
    distinct = tf.logical_and(present, tf.logical_not(repeated))
    found = tf.reduce_any(tf.equal(query_words[..., :, None], item_words[..., None, :]), axis=-1)
    found = tf.logical_and(found, distinct)
    return tf.math.divide_no_nan(tf.reduce_sum(tf.cast(found, tf.float32), axis=-1),
                                 tf.reduce_sum(tf.cast(distinct, tf.float32), axis=-1))
