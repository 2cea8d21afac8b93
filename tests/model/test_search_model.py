"""MultimodalSearchModel.compute_loss: the optional single-modality retrieval terms."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from tfmmsearch.config import ModelConfig
from tfmmsearch.model.search_model import MultimodalSearchModel

TEXT_DIM, IMAGE_DIM, QUERY_DIM, BATCH = 6, 5, 4, 8


def make_model(ranking_candidates: int = 4, **loss_weights) -> MultimodalSearchModel:
    config = ModelConfig(embedding_dim=8, ranking_candidates=ranking_candidates)
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


# --------------------------------------------------------------------------- search-log signals


def log_batch(seed: int = 0, weights=None, grades=None, query_ids=None) -> dict:
    """A batch of search-log pairs: no attribute named, one weight and grade per pair."""
    features = batch(seed)
    features.update({
        "query_attributes": tf.fill([BATCH, 4], -1), "item_attributes": tf.fill([BATCH, 4], -1),
        "sample_weight": tf.constant(weights or [1.0] * BATCH, tf.float32),
        "positive_grade": tf.constant(grades or [2] * BATCH, tf.int32),
        "query_id": tf.constant(query_ids or list(range(BATCH)), tf.int32)})
    return features


def with_negatives(features, present, seed: int = 5) -> dict:
    other = batch(seed)
    return dict(features, negative_title_features=other["title_features"],
                negative_image_features=other["image_features"],
                negative_has_title=tf.ones([BATCH], tf.bool),
                negative_has_image=tf.ones([BATCH], tf.bool),
                has_negative=tf.constant(present))


def test_sample_weights_weight_each_pairs_retrieval_and_ranking_loss():
    model = make_model(BATCH, ranking=1.0)  # every item a candidate: no draw
    plain = losses(model, log_batch())
    doubled = losses(model, log_batch(weights=[2.0] * BATCH))
    assert doubled["retrieval_loss"] == pytest.approx(2 * plain["retrieval_loss"], rel=1e-5)
    assert doubled["ranking_loss"] == pytest.approx(2 * plain["ranking_loss"], rel=1e-5)
    zero_first = losses(model, log_batch(weights=[0.0] + [1.0] * (BATCH - 1)))
    assert zero_first["retrieval_loss"] < plain["retrieval_loss"]


def test_a_pair_grade_labels_its_own_item_for_the_ranking_head():
    model = make_model(BATCH, ranking=1.0)  # every item a candidate: no draw
    graded = losses(model, log_batch())
    assert graded["ranking_loss"] > 0
    unlabelled = losses(model, log_batch(grades=[0] * BATCH))  # nothing relevant: no signal
    assert unlabelled["ranking_loss"] == pytest.approx(0.0, abs=1e-7)


def test_pairs_of_the_same_query_are_not_each_others_negatives():
    model = make_model()
    distinct = losses(model, log_batch())
    shared = losses(model, log_batch(query_ids=[0, 0, 0, 0, 1, 1, 1, 1]))
    assert shared["retrieval_loss"] < distinct["retrieval_loss"]  # fewer negatives per softmax


def test_a_skipped_product_joins_its_pairs_ranking_list_and_a_missing_one_is_masked():
    model = make_model(BATCH, ranking=1.0)  # every item a candidate: no draw
    features = log_batch()
    without = losses(model, features)
    absent = losses(model, with_negatives(features, [False] * BATCH))
    assert absent["ranking_loss"] == pytest.approx(without["ranking_loss"], rel=1e-5)
    present = losses(model, with_negatives(features, [True] * BATCH))
    assert present["ranking_loss"] > without["ranking_loss"]  # one more grade-0 competitor
    assert present["retrieval_loss"] == pytest.approx(without["retrieval_loss"], rel=1e-6)
