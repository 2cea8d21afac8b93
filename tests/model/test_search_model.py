"""MultimodalSearchModel.compute_loss: the optional single-modality retrieval terms."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from tfmmsearch.config import ModelConfig
from tfmmsearch.model.search_model import MultimodalSearchModel

TEXT_DIM, IMAGE_DIM, QUERY_DIM, BATCH = 6, 5, 4, 8


def make_model(**loss_weights) -> MultimodalSearchModel:
    config = ModelConfig(embedding_dim=8, ranking_candidates=4)
    for name, value in {"ranking": 0.0, "alignment": 0.0, **loss_weights}.items():
        setattr(config.loss_weights, name, value)
    tf.keras.utils.set_random_seed(0)
    return MultimodalSearchModel(config, TEXT_DIM, IMAGE_DIM, QUERY_DIM)


def batch(seed: int = 0, has_image=None) -> dict:
    rng = np.random.default_rng(seed)
    return {
        "query_features": tf.constant(rng.normal(size=(BATCH, QUERY_DIM)), tf.float32),
        "title_features": tf.constant(rng.normal(size=(BATCH, TEXT_DIM)), tf.float32),
        "image_features": tf.constant(rng.normal(size=(BATCH, IMAGE_DIM)), tf.float32),
        "has_title": tf.ones([BATCH], tf.bool),
        "has_image": tf.constant([True] * BATCH if has_image is None else has_image),
        "product_id": tf.constant([f"p{i}" for i in range(BATCH)]),
    }


def losses(model, features) -> dict:
    for tracker in model.metrics:
        tracker.reset_state()
    total = float(model.compute_loss(features, training=False))
    return {"total": total, **{t.name: float(t.result()) for t in model.metrics}}


def test_no_single_modality_terms_by_default():
    model = make_model()
    result = losses(model, batch())
    assert "image_retrieval_loss" not in result and "text_retrieval_loss" not in result
    assert result["total"] == pytest.approx(result["retrieval_loss"], rel=1e-6)


def test_image_term_scores_queries_against_photo_only_items():
    model = make_model(image_retrieval=0.5)
    features = batch()
    result = losses(model, features)
    assert result["total"] == pytest.approx(
        result["retrieval_loss"] + 0.5 * result["image_retrieval_loss"], rel=1e-5)
    # It is the ordinary retrieval loss over the same items indexed without their titles.
    photo_only = dict(features, has_title=tf.zeros([BATCH], tf.bool))
    assert result["image_retrieval_loss"] == pytest.approx(
        losses(make_model(), photo_only)["retrieval_loss"], rel=1e-5)
    # Titles move the fused retrieval loss, never the photo-only one.
    other_titles = dict(features, title_features=batch(seed=1)["title_features"])
    changed = losses(model, other_titles)
    assert changed["retrieval_loss"] != pytest.approx(result["retrieval_loss"], rel=1e-4)
    assert changed["image_retrieval_loss"] == pytest.approx(result["image_retrieval_loss"], rel=1e-6)


def test_items_without_a_photo_keep_their_full_embedding_in_the_image_term():
    model = make_model(image_retrieval=1.0)
    no_photos = batch(has_image=[False] * BATCH)
    result = losses(model, no_photos)
    assert result["image_retrieval_loss"] == pytest.approx(result["retrieval_loss"], rel=1e-6)


def test_text_term_trains_the_title_path_and_both_terms_add_up():
    model = make_model(image_retrieval=0.25, text_retrieval=2.0)
    features = batch()
    result = losses(model, features)
    assert result["total"] == pytest.approx(
        result["retrieval_loss"] + 0.25 * result["image_retrieval_loss"]
        + 2.0 * result["text_retrieval_loss"], rel=1e-5)
    title_only = dict(features, has_image=tf.zeros([BATCH], tf.bool))
    assert result["text_retrieval_loss"] == pytest.approx(
        losses(make_model(), title_only)["retrieval_loss"], rel=1e-5)
    # Gradients of the text term reach the title projection, not the image projection.
    with tf.GradientTape() as tape:
        only_text = make_model(retrieval=0.0, text_retrieval=1.0)
        loss = only_text.compute_loss(features, training=False)
    tower = only_text.item_tower
    grads = tape.gradient(loss, [tower.get_layer("text_projection").trainable_variables[0],
                                 tower.get_layer("image_projection").trainable_variables[0]])
    assert float(tf.reduce_max(tf.abs(grads[0]))) > 0
    assert grads[1] is None or float(tf.reduce_max(tf.abs(grads[1]))) == 0.0
