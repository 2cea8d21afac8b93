"""Ranking head shapes/gradients, candidate selection, and listwise targets."""

import numpy as np
import tensorflow as tf

from tfmmsearch.model.ranking import RankingHead, gains_as_targets, select_candidates


def test_select_candidates_puts_the_positive_first_then_the_hardest_others():
    scores = tf.constant([[0.1, 0.9, 0.5, 0.3],
                          [0.8, 0.0, 0.7, 0.9],
                          [0.2, 0.1, 0.0, 0.6]])
    columns = select_candidates(scores, 3).numpy()
    np.testing.assert_array_equal(columns, [[0, 1, 2], [1, 3, 0], [2, 3, 0]])
    assert select_candidates(scores, 10).shape == (3, 4)  # capped at the number of items


def test_gains_as_targets():
    targets = gains_as_targets(tf.constant([[2, 1, 0], [0, 0, 0]])).numpy()
    np.testing.assert_allclose(targets[0], [3 / 4, 1 / 4, 0.0])
    np.testing.assert_array_equal(targets[1], [0, 0, 0])


def test_ranking_head_broadcasts_and_learns():
    head = RankingHead([8])
    rng = np.random.default_rng(0)
    query = tf.constant(rng.normal(size=(2, 1, 4)), tf.float32)
    items = [tf.constant(rng.normal(size=(2, 3, 4)), tf.float32) for _ in range(3)]
    mask = tf.constant([[[1.0, 1.0], [0.0, 1.0], [1.0, 0.0]]] * 2)
    with tf.GradientTape() as tape:
        scores = head(query, *items, mask)
        objective = tf.reduce_sum(scores[:, 0])
    assert scores.shape == (2, 3)
    grads = tape.gradient(objective, head.trainable_variables)
    assert all(g is not None for g in grads)
    # A missing image must not influence the score: changing it changes nothing.
    changed = [items[0], items[1], items[2] + 100.0]
    mask_no_image = tf.constant([[[1.0, 0.0]] * 3] * 2)
    np.testing.assert_allclose(head(query, *items, mask_no_image).numpy(),
                               head(query, *changed, mask_no_image).numpy(), rtol=1e-5)
