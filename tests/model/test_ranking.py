"""Ranking head shapes/gradients, candidate selection, and listwise targets."""

import numpy as np
import pytest
import tensorflow as tf

from tfmmsearch.model.ranking import RankingHead, gains_as_targets, select_candidates


def test_select_candidates_puts_the_positive_first_then_distinct_others():
    columns = select_candidates(tf.constant(5), tf.constant(5), 3, seed=0).numpy()
    assert columns.shape == (5, 3)
    np.testing.assert_array_equal(columns[:, 0], np.arange(5))
    for row, cols in enumerate(columns):
        assert len(set(cols)) == 3 and row not in cols[1:]
    # num_candidates >= batch: every item is a candidate exactly once.
    full = select_candidates(tf.constant(4), tf.constant(4), 64).numpy()
    assert full.shape == (4, 4)
    assert all(sorted(cols) == [0, 1, 2, 3] for cols in full)


def test_negatives_are_drawn_uniformly_not_by_score():
    counts = np.zeros(6)
    for seed in range(300):
        counts += np.bincount(select_candidates(tf.constant(1), tf.constant(6), 2, seed=seed).numpy()[0, 1:],
                              minlength=6)
    assert counts[0] == 0 and counts[1:].min() > 30  # every other item gets drawn


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


def test_top_retrieved_candidates_are_each_querys_highest_scoring_items():
    from tfmmsearch.model.ranking import top_retrieved_candidates

    similarities = tf.constant([[0.1, 0.9, 0.3, 0.5],
                                [0.8, 0.0, 0.7, 0.2]])
    columns = top_retrieved_candidates(similarities, 2).numpy()
    np.testing.assert_array_equal(columns, [[1, 3], [0, 2]])  # by score alone: row 1 drops item 1
    assert top_retrieved_candidates(similarities, 64).shape == (2, 4)  # capped at the batch


def test_ranking_head_without_image_interactions_reads_the_image_only_through_its_similarity():
    rng = np.random.default_rng(1)
    query = tf.constant(rng.normal(size=(1, 1, 4)), tf.float32)
    fused, text, image = [tf.constant(rng.normal(size=(1, 2, 4)), tf.float32) for _ in range(3)]
    mask = tf.ones([1, 2, 2])
    full, lean = RankingHead([8]), RankingHead([8], interactions=["text", "fused"])
    full(query, fused, text, image, mask), lean(query, fused, text, image, mask)
    # Cross-layer input width: 3 x 4 products + 3 similarities + 2 mask, or 2 x 4 + 5.
    assert full.cross.trainable_variables[0].shape[0] == 17
    assert lean.cross.trainable_variables[0].shape[0] == 13
    assert lean.interactions == ["fused", "text"]  # canonical order, whatever the config's
    # An image change that keeps its similarity to the query leaves the lean head's score alone.
    q = query.numpy()[0, 0]
    noise = rng.normal(size=4)
    noise -= noise.dot(q) / q.dot(q) * q  # orthogonal to the query
    moved = image + tf.constant(noise, tf.float32)
    np.testing.assert_allclose(lean(query, fused, text, image, mask).numpy(),
                               lean(query, fused, text, moved, mask).numpy(), rtol=1e-5, atol=1e-5)
    assert not np.allclose(full(query, fused, text, image, mask).numpy(),
                           full(query, fused, text, moved, mask).numpy(), atol=1e-5)
    with pytest.raises(ValueError, match="choose from fused, text, image"):
        RankingHead([8], interactions=["colour"])


def test_a_head_with_attributes_reads_the_attribute_vector_only_where_the_item_has_it():
    head = RankingHead([8], interactions=["fused", "attributes"], attributes=True)
    rng = np.random.default_rng(1)
    query = tf.constant(rng.normal(size=(2, 1, 4)), tf.float32)
    fused, text, image, attributes = [tf.constant(rng.normal(size=(2, 3, 4)), tf.float32)
                                      for _ in range(4)]
    mask = tf.constant([[[1.0, 1.0, 1.0], [1.0, 1.0, 0.0], [0.0, 1.0, 1.0]]] * 2)
    scores = head(query, fused, text, image, mask, attributes=attributes).numpy()
    moved = head(query, fused, text, image, mask, attributes=attributes + 3.0).numpy()
    # Candidates 0 and 2 have attributes: their scores move; candidate 1 has none: it does not.
    assert np.abs(scores[:, [0, 2]] - moved[:, [0, 2]]).min() > 1e-4
    np.testing.assert_allclose(scores[:, 1], moved[:, 1], rtol=1e-5)
    with pytest.raises(ValueError, match="needs the attribute vectors"):
        head(query, fused, text, image, mask)
    # The attributes interaction is part of the features: a head without it sees 4 fewer.
    plain = RankingHead([8], interactions=["fused"], attributes=True)
    plain(query, fused, text, image, mask, attributes=attributes)
    assert head.cross._dense_u.kernel.shape[0] == plain.cross._dense_u.kernel.shape[0] + 4


def test_a_head_without_attributes_refuses_the_interaction_and_ignores_a_third_mask_column():
    with pytest.raises(ValueError, match="attributes needs item features"):
        RankingHead([8], interactions=["fused", "attributes"])
    head = RankingHead([8])
    rng = np.random.default_rng(2)
    query = tf.constant(rng.normal(size=(1, 1, 4)), tf.float32)
    items = [tf.constant(rng.normal(size=(1, 3, 4)), tf.float32) for _ in range(3)]
    two = tf.constant([[[1.0, 1.0], [0.0, 1.0], [1.0, 0.0]]])
    three = tf.concat([two, tf.ones([1, 3, 1])], axis=-1)
    np.testing.assert_allclose(head(query, *items, two).numpy(), head(query, *items, three).numpy(),
                               rtol=1e-6)
