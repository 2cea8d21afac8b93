"""Merging the dense and the lexical (BM25) candidate lists into the ranking head's candidates.

Dense similarity and BM25 live on unrelated scales, so they are fused either by rank only
(reciprocal rank fusion: robust, nothing to calibrate) or by a convex mix after scaling BM25 to
[0, 1] per query (one weight to tune). Both read whole [B, N] score blocks of the in-graph
indexes and return the best C = min(candidates, N) positions, so the export can switch between
them, and the weights live in variables a benchmark changes on a loaded model. Core TF ops only.

An item whose dense score is -inf is excluded (a filter removed it): it enters neither list and
comes back, if at all, only after every allowed item, with score -inf.
"""

from __future__ import annotations

import tensorflow as tf

_EXCLUDED = float("-inf")


def _count(candidates, num_items: tf.Tensor) -> tf.Tensor:
    """C = min(candidates, N) as int32."""
    return tf.minimum(tf.cast(candidates, tf.int32), num_items)


def _ranked_list(scores: tf.Tensor, count: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """The top `count` positions of `scores` [B, N], -inf for items not in the list (equal
    scores: the lower position first), and whether each is in the list (False: padding)."""
    top = tf.math.top_k(scores, k=count)
    return top.indices, top.values > _EXCLUDED


def _rank_contributions(listed: tf.Tensor, k: tf.Tensor) -> tf.Tensor:
    """1 / (k + rank) for the entries of a ranked list [B, C] (rank from 1), 0 for padding;
    divided in float64, so each is the correctly rounded float32 on every device."""
    ranks = tf.cast(tf.range(1, tf.shape(listed)[1] + 1), tf.float64)
    contributions = tf.cast(1.0 / (tf.cast(k, tf.float64) + ranks), tf.float32)
    return tf.where(listed, contributions, 0.0)


def _sort_rows(keys: list[tuple[tf.Tensor, str]], *values: tf.Tensor) -> tuple[tf.Tensor, ...]:
    """`values` [B, M] reordered along each row by `keys` [(tensor [B, M], direction)], the first
    key deciding first: stable sorts from the last key to the first."""
    shape = tf.shape(keys[0][0])
    order = tf.broadcast_to(tf.range(shape[1])[None, :], shape)
    for key, direction in reversed(keys):
        step = tf.argsort(tf.gather(key, order, batch_dims=1), axis=1, direction=direction,
                          stable=True)
        order = tf.gather(order, step, batch_dims=1)
    return tuple(tf.gather(value, order, batch_dims=1) for value in values)


def _merge_duplicates(items: tf.Tensor, contributions: tf.Tensor):
    """Per row of `items` [B, M]: each distinct item once, its `contributions` summed.

    Returns (items, summed contributions, first) [B, M], rows reordered by item; `first` marks
    the one entry of each item that carries the sum.
    """
    items, contributions = _sort_rows([(items, "ASCENDING")], items, contributions)
    first = tf.concat([tf.ones_like(items[:, :1], tf.bool),
                       tf.not_equal(items[:, 1:], items[:, :-1])], axis=1)
    row_offsets = tf.range(tf.shape(items)[0])[:, None] * tf.shape(items)[1]
    runs = tf.cumsum(tf.cast(first, tf.int32), axis=1) - 1 + row_offsets  # ids unique per row
    summed = tf.math.unsorted_segment_sum(contributions, runs, tf.size(items))
    return items, tf.gather(summed, runs), first


def reciprocal_rank_fusion(dense: tf.Tensor, lexical: tf.Tensor, candidates, k=60.0
                           ) -> tuple[tf.Tensor, tf.Tensor]:
    """Reciprocal rank fusion of the dense and BM25 lists: ([B, C] int32 positions, [B, C] scores).

    dense [B, N]: similarities, -inf for excluded items. lexical [B, N]: BM25; an item is in the
    lexical list only with a score > 0. Each list is its top `candidates` allowed items (equal
    scores: the lower position first) and gives each of them 1 / (k + rank), rank from 1 (k > -1);
    an item's fused score is the sum over the lists holding it. Results are ordered by fused
    score, then dense score, then position; slots past the allowed items hold excluded items,
    lowest position first, with score -inf. `candidates` and `k` may be scalar tensors.
    """
    dense = tf.convert_to_tensor(dense, tf.float32)
    lexical = tf.convert_to_tensor(lexical, tf.float32)
    k = tf.cast(k, tf.float32)
    count = _count(candidates, tf.shape(dense)[1])
    in_lexical_list = tf.logical_and(dense > _EXCLUDED, lexical > 0)
    dense_items, dense_listed = _ranked_list(dense, count)
    lexical_items, lexical_listed = _ranked_list(tf.where(in_lexical_list, lexical, _EXCLUDED),
                                                 count)
    items, fused, first = _merge_duplicates(
        tf.concat([dense_items, lexical_items], axis=1),
        tf.concat([_rank_contributions(dense_listed, k),
                   _rank_contributions(lexical_listed, k)], axis=1))

    # Listed items first (tier 0), then unlisted ones (tier 1), then the copies (tier 2). The
    # dense top-k alone holds C distinct items, each listed or excluded, so tiers 0 and 1 fill
    # the C slots, and only with excluded items: an allowed item is left out of the dense list
    # only when C allowed items are in it.
    item_dense = tf.gather(dense, items, batch_dims=1)
    tier = tf.where(first, tf.where(fused > 0, 0, 1), 2)
    scores = tf.where(tier == 0, fused, _EXCLUDED)
    items, scores = _sort_rows([(tier, "ASCENDING"), (scores, "DESCENDING"),
                                (item_dense, "DESCENDING"), (items, "ASCENDING")],
                               items, scores)
    return items[:, :count], scores[:, :count]


def convex_fusion(dense: tf.Tensor, lexical: tf.Tensor, weight, candidates
                  ) -> tuple[tf.Tensor, tf.Tensor]:
    """weight * dense + (1 - weight) * normalised BM25: ([B, C] int32 positions, [B, C] scores).

    BM25 is divided by the query's best BM25 over the allowed items (0 for a query that matches
    none of them); excluded items (dense -inf) score -inf. Equal scores: the lower position
    first. `weight` and `candidates` may be scalar tensors.
    """
    dense = tf.convert_to_tensor(dense, tf.float32)
    lexical = tf.convert_to_tensor(lexical, tf.float32)
    weight = tf.cast(weight, tf.float32)
    allowed = dense > _EXCLUDED
    best = tf.reduce_max(tf.where(allowed, lexical, 0.0), axis=1, keepdims=True)
    lexical_scale = tf.where(best > 0, (1 - weight) / tf.where(best > 0, best, 1.0), 0.0)
    fused = tf.where(allowed, weight * dense + lexical_scale * lexical, _EXCLUDED)
    top = tf.math.top_k(fused, k=_count(candidates, tf.shape(dense)[1]))
    return top.indices, top.values
