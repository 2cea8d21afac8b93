"""Top-N fine-tuning: only the top transformer layers (and pooler) of the hub BERT train."""

import tensorflow as tf

from tfmmsearch.config import TextTowerConfig
from tfmmsearch.model.encoders import build_text_encoder


def test_top_n_trains_only_the_top_layers(tiny_hub_cache):
    config = TextTowerConfig(trainable="top_n", trainable_top_layers=1, seq_length=16)
    encoder = build_text_encoder(config, tiny_hub_cache)
    names = [v.name for v in encoder.trainable_weights]
    assert names and all("layer_1/" in n or "pooler" in n for n in names), names
    assert any("layer_0/" in v.name for v in encoder.non_trainable_weights)
    before = [v.numpy().copy() for v in encoder.weights]
    optimizer = tf.keras.optimizers.SGD(1.0)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(encoder(tf.constant(["black caps", "red dress"]), training=True))
    optimizer.apply_gradients(zip(tape.gradient(loss, encoder.trainable_weights), encoder.trainable_weights))
    changed = {v.name for v, old in zip(encoder.weights, before) if (v.numpy() != old).any()}
    assert changed and all("layer_1/" in n or "pooler" in n for n in changed)


def test_frozen_and_full_modes(tiny_hub_cache):
    frozen = build_text_encoder(TextTowerConfig(trainable="frozen"), tiny_hub_cache)
    full = build_text_encoder(TextTowerConfig(trainable="full"), tiny_hub_cache)
    assert frozen.trainable_weights == []
    assert any("layer_0/" in v.name for v in full.trainable_weights)
