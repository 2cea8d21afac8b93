"""Towers: projection dropout acts only while training, and adds no layer when it is off."""

import numpy as np
import tensorflow as tf

from tfmmsearch.config import ModelConfig
from tfmmsearch.model.towers import build_item_tower, build_query_tower


def _items(batch=8, seed=0):
    rng = np.random.default_rng(seed)
    return {"title_features": tf.constant(rng.normal(size=(batch, 12)), tf.float32),
            "image_features": tf.constant(rng.normal(size=(batch, 10)), tf.float32),
            "has_title": tf.ones([batch], tf.bool), "has_image": tf.ones([batch], tf.bool)}


def _layer_names(model):
    return [layer.name for sub in model.layers if isinstance(sub, tf.keras.Sequential)
            for layer in sub.layers]


def test_projection_dropout_changes_training_outputs_only():
    config = ModelConfig(embedding_dim=16, projection_dropout=0.5, modality_dropout=0.0,
                         image_input_dropout=0.0)
    tower = build_item_tower(12, 10, config)
    items = _items()
    first = tower(items, training=False)["text"].numpy()
    np.testing.assert_allclose(first, tower(items, training=False)["text"].numpy())
    trained = tower(items, training=True)["text"].numpy()
    assert np.abs(trained - first).max() > 1e-3
    np.testing.assert_allclose(np.linalg.norm(trained, axis=1), 1.0, rtol=1e-5)
    assert "query_projection_dropout" in _layer_names(build_query_tower(12, config))


def test_no_projection_dropout_keeps_the_checkpoint_layout():
    # Runs trained before the option existed restore into towers built with it at 0.
    tower = build_item_tower(12, 10, ModelConfig(embedding_dim=16))
    names = _layer_names(tower)
    assert not [name for name in names if name.endswith("_dropout")]
    assert names.count("normalize") == 2 and len(names) == 6
