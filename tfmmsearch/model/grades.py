"""Graded relevance (PROTOCOL.md) computed in graph from attribute ids, for training labels.

Attributes are encoded as int32 ids in a fixed column order, article_type first. A query uses
-1 for an attribute it does not name; an item uses -1 for an unknown value, which never
matches. Grade 2: type and every named attribute match; 1: type matches only; 0 otherwise.
"""

from __future__ import annotations

import tensorflow as tf

UNNAMED = -1


def attribute_grades(query_attributes: tf.Tensor, item_attributes: tf.Tensor) -> tf.Tensor:
    """int32 [Q, N] grades of every item for every query."""
    query = tf.cast(query_attributes, tf.int32)[:, None, :]
    item = tf.cast(item_attributes, tf.int32)[None, :, :]
    matches = tf.logical_and(tf.equal(query, item), item >= 0)
    type_match = matches[..., 0]
    others_ok = tf.reduce_all(tf.logical_or(matches[..., 1:], query[..., 1:] < 0), axis=-1)
    return tf.where(type_match, tf.where(others_ok, 2, 1), 0)
