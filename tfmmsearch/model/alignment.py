"""Cross-modal alignment: an item's title vector should find its own image among the batch's.

A symmetric in-batch contrastive loss between the projected title and image vectors of items
that have both. It is what lets a title-only query reach photo-only listings
(PROTOCOL.md `title_to_image`); DESIGN.md found it helps at a small weight.
"""

from __future__ import annotations

import tensorflow as tf


def alignment_loss(text: tf.Tensor, image: tf.Tensor, mask: tf.Tensor, temperature) -> tf.Tensor:
    """Mean over items with both modalities of (title->image + image->title) / 2 cross-entropy.

    `mask` [B, M]: the item tower's modality mask (contract.MODALITIES); only its title and
    image columns count (an item without attributes still aligns its title with its photo)."""
    mask = tf.cast(mask, tf.bool)
    both = tf.logical_and(mask[:, 0], mask[:, 1])
    text = tf.math.l2_normalize(text, axis=-1)
    image = tf.math.l2_normalize(image, axis=-1)
    logits = tf.matmul(text, image, transpose_b=True) / temperature
    # Items lacking a modality are neither queries nor candidates (static shapes, no boolean_mask).
    pair_ok = tf.logical_and(both[:, None], both[None, :])
    logits = tf.where(pair_ok, logits, tf.cast(-1e9, logits.dtype))
    labels = tf.eye(tf.shape(logits)[0], dtype=logits.dtype)
    per_item = 0.5 * (
        tf.nn.softmax_cross_entropy_with_logits(labels, logits)
        + tf.nn.softmax_cross_entropy_with_logits(labels, tf.transpose(logits)))
    weight = tf.cast(both, per_item.dtype)
    return tf.math.divide_no_nan(tf.reduce_sum(per_item * weight), tf.reduce_sum(weight))
