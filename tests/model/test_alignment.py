"""Title<->image alignment loss: hand-computed value and masking of one-modality items."""

import numpy as np
import pytest
import tensorflow as tf

from tfmmsearch.model.alignment import alignment_loss


def _xent(row, label):
    row = np.asarray(row, np.float64)
    return -(row[label] - np.log(np.exp(row).sum()))


def test_alignment_loss_by_hand_and_masked_items_ignored():
    text = tf.constant([[1.0, 0.0], [0.0, 1.0], [5.0, 5.0]])
    image = tf.constant([[1.0, 0.0], [1.0, 0.0], [-3.0, 1.0]])
    mask = tf.constant([[True, True], [True, True], [True, False]])  # item 2 has no image
    loss = float(alignment_loss(text, image, mask, temperature=1.0))
    # logits = text . image^T = [[1, 1], [0, 0]]
    t2i = _xent([1, 1], 0) + _xent([0, 0], 1)
    i2t = _xent([1, 0], 0) + _xent([1, 0], 1)
    assert abs(loss - (t2i + i2t) / 2 / 2) < 1e-5


def test_no_complete_items_gives_zero():
    mask = tf.constant([[True, False], [False, True]])
    assert float(alignment_loss(tf.ones([2, 2]), tf.ones([2, 2]), mask, 1.0)) == 0.0


def test_only_the_title_and_image_columns_of_the_mask_count():
    text = tf.constant([[1.0, 0.0], [0.0, 1.0], [5.0, 5.0]])
    image = tf.constant([[1.0, 0.0], [1.0, 0.0], [-3.0, 1.0]])
    two = tf.constant([[True, True], [True, True], [True, False]])
    # The attribute column (third modality) neither adds nor removes items from the loss.
    for attributes in ([False, False, False], [True, False, True]):
        three = tf.concat([two, tf.constant(attributes)[:, None]], axis=1)
        assert float(alignment_loss(text, image, three, 1.0)) == pytest.approx(
            float(alignment_loss(text, image, two, 1.0)))
    assert float(alignment_loss(text, image, two, 1.0)) > 0
