"""Fusion layers: masked weights, one-modality items, and modality dropout never emptying an item."""

import numpy as np
import pytest
import tensorflow as tf

from tfmmsearch.model.fusion import ModalityDropout, make_fusion, masked_softmax


def _inputs(batch=4, dim=8, seed=0):
    rng = np.random.default_rng(seed)
    text = tf.constant(rng.normal(size=(batch, dim)), tf.float32)
    image = tf.constant(rng.normal(size=(batch, dim)), tf.float32)
    mask = tf.constant([[True, True], [False, True], [True, False], [True, True]][:batch])
    return text, image, mask


def test_masked_softmax_matches_hand_computation():
    scores = tf.constant([[1.0, 2.0, 3.0], [1.0, 2.0, 3.0], [0.0, 0.0, 0.0]])
    mask = tf.constant([[True, True, True], [True, False, True], [False, False, False]])
    weights = masked_softmax(scores, mask).numpy()
    full = np.exp([1.0, 2.0, 3.0]) / np.exp([1.0, 2.0, 3.0]).sum()
    partial = np.exp([1.0, 3.0]) / np.exp([1.0, 3.0]).sum()
    np.testing.assert_allclose(weights[0], full, rtol=1e-6)
    np.testing.assert_allclose(weights[1], [partial[0], 0.0, partial[1]], rtol=1e-6)
    np.testing.assert_array_equal(weights[2], [0.0, 0.0, 0.0])


@pytest.mark.parametrize("kind", ["attention", "gated", "concat"])
def test_fusion_weights_respect_missing_modalities(kind):
    text, image, mask = _inputs()
    fused, weights = make_fusion(kind, 8)(([text, image], mask))
    weights = weights.numpy()
    np.testing.assert_allclose(weights.sum(axis=1), 1.0, rtol=1e-5)
    assert weights[1, 0] == 0.0 and weights[1, 1] == pytest.approx(1.0)  # image only
    assert weights[2, 1] == 0.0 and weights[2, 0] == pytest.approx(1.0)  # title only
    np.testing.assert_allclose(np.linalg.norm(fused.numpy(), axis=1), 1.0, rtol=1e-5)


@pytest.mark.parametrize("kind", ["attention", "gated"])
def test_weighted_fusion_of_a_single_modality_is_that_modality(kind):
    text, image, mask = _inputs()
    fused, _ = make_fusion(kind, 8)(([text, image], mask))
    expected = image[1] / tf.norm(image[1])
    np.testing.assert_allclose(fused[1].numpy(), expected.numpy(), rtol=1e-5, atol=1e-6)
    # The title of an image-only item must not leak into its embedding.
    fused_other, _ = make_fusion(kind, 8)(([text * 0 + 5.0, image], mask))
    np.testing.assert_allclose(fused_other[1].numpy(), expected.numpy(), rtol=1e-5, atol=1e-6)


def test_attention_weights_are_learnable():
    text, image, mask = _inputs()
    fusion = make_fusion("attention", 8)
    with tf.GradientTape() as tape:
        _, weights = fusion(([text, image], mask))
        objective = tf.reduce_sum(weights[:, 1])
    grads = tape.gradient(objective, fusion.trainable_variables)
    assert any(float(tf.reduce_max(tf.abs(g))) > 0 for g in grads if g is not None)


def test_modality_dropout_drops_at_rate_but_never_everything():
    mask = tf.ones([20000, 2], tf.bool)
    dropped = ModalityDropout(0.3, seed=1)(mask, training=True).numpy()
    assert dropped.any(axis=1).all()
    assert 0.27 < 1 - dropped.all(axis=1).mean() < 0.33
    single = tf.constant([[True, False]] * 1000)
    assert (ModalityDropout(0.9)(single, training=True).numpy() == single.numpy()).all()
    assert (ModalityDropout(0.9)(mask, training=False).numpy()).all()
