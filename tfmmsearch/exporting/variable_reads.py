"""The index's variables: resizable, and read without slowing every later read of them.

An index variable has a dynamic first dimension (one row per item), so a loaded export can be
given a catalog of any size (`tfmmsearch index`) without the training code.

`tf.gather(variable, positions)` runs ResourceGather, which switches a resource variable to
copy-on-read mode: from then on every dense read of it (the [B, D] x [D, N] scoring matmul, the
BM25 postings) copies the whole buffer first, about 1 GB per call for 1M items at D = 256. So
the signatures gather from the variable's value instead (a read that aliases the buffer, then
an ordinary Gather). Measured by benchmarks/shop_search.py: `search` over 1M items.
"""

from __future__ import annotations

import tensorflow as tf


def gather_rows(variable: tf.Variable, positions: tf.Tensor) -> tf.Tensor:
    """`tf.gather(variable, positions)` without putting `variable` in copy-on-read mode."""
    return tf.gather(tf.convert_to_tensor(variable), positions)


def resizable_variable(row_shape: list[int], dtype: tf.DType, name: str) -> tf.Variable:
    """An empty [0, *row_shape] variable whose first dimension any later assign may change."""
    return tf.Variable(tf.zeros([0] + row_shape, dtype), shape=tf.TensorShape([None] + row_shape),
                       trainable=False, name=name)
