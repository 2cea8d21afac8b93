"""Feature-level towers: per-modality projections + fusion (item), projection (query).

They start from encoder outputs (BERT sentence vectors, image feature vectors), so the same
towers train on features cached from frozen encoders or on encoders running every step.
Both are Keras functional models with named inputs and outputs.
"""

from __future__ import annotations

import tensorflow as tf

from tfmmsearch.config import ModelConfig
from tfmmsearch.model.fusion import ModalityDropout, make_fusion

# Named layers rather than Lambda(lambda ...): a Python lambda does not reload from a .keras
# file (Keras refuses it in safe mode) and ties SavedModel configs to bytecode. Both have no
# weights and keep the names the Lambda layers had ("normalize", "modality_mask"), so
# checkpoints written with the Lambda layers restore unchanged.
@tf.keras.utils.register_keras_serializable(package="tfmmsearch")
class L2Normalize(tf.keras.layers.Layer):
    """x / ||x|| over the last axis."""

    def call(self, inputs):
        return tf.math.l2_normalize(inputs, axis=-1)


@tf.keras.utils.register_keras_serializable(package="tfmmsearch")
class StackModalities(tf.keras.layers.Layer):
    """[has_title [B], has_image [B]] -> modality mask [B, 2]."""

    def call(self, inputs):
        return tf.stack(inputs, axis=-1)


def _projection(dim: int, name: str, dropout: float = 0.0) -> tf.keras.Sequential:
    # Unique layer names: TensorBoard histogram tags come from variable names.
    layers = [tf.keras.layers.Dense(dim * 2, activation="gelu", name=f"{name}_hidden")]
    if dropout > 0:  # only then: runs trained without it keep their checkpoint layout
        layers.append(tf.keras.layers.Dropout(dropout, name=f"{name}_dropout"))
    layers += [tf.keras.layers.Dense(dim, name=f"{name}_out"),
               L2Normalize(name="normalize")]
    return tf.keras.Sequential(layers, name=name)


def build_item_tower(text_dim: int, image_dim: int, config: ModelConfig) -> tf.keras.Model:
    """(title_features, image_features, has_title, has_image) -> embedding + modality weights."""
    title_features = tf.keras.Input((text_dim,), name="title_features")
    image_features = tf.keras.Input((image_dim,), name="image_features")
    has_title = tf.keras.Input((), dtype=tf.bool, name="has_title")
    has_image = tf.keras.Input((), dtype=tf.bool, name="has_image")

    mask = StackModalities(name="modality_mask")([has_title, has_image])
    mask = ModalityDropout(config.modality_dropout, seed=None, name="modality_dropout")(mask)
    image_in = tf.keras.layers.Dropout(config.image_input_dropout, name="image_input_dropout")(
        image_features)
    text = _projection(config.embedding_dim, "text_projection", config.projection_dropout)(
        title_features)
    image = _projection(config.embedding_dim, "image_projection", config.projection_dropout)(
        image_in)
    embedding, weights = make_fusion(config.fusion, config.embedding_dim)(([text, image], mask))
    outputs = {
        "embedding": tf.keras.layers.Activation("linear", name="embedding")(embedding),
        "modality_weights": tf.keras.layers.Activation("linear", name="modality_weights")(weights),
        "text": tf.keras.layers.Activation("linear", name="text")(text),
        "image": tf.keras.layers.Activation("linear", name="image")(image),
        "mask": tf.keras.layers.Activation("linear", name="mask")(tf.cast(mask, tf.float32)),
    }
    inputs = {"title_features": title_features, "image_features": image_features,
              "has_title": has_title, "has_image": has_image}
    return tf.keras.Model(inputs, outputs, name="item_tower")


def build_query_tower(query_dim: int, config: ModelConfig) -> tf.keras.Model:
    """query_features -> L2-normalised query embedding in the item space."""
    query_features = tf.keras.Input((query_dim,), name="query_features")
    embedding = _projection(config.embedding_dim, "query_projection", config.projection_dropout)(
        query_features)
    return tf.keras.Model({"query_features": query_features}, {"embedding": embedding},
                          name="query_tower")
