"""Feature-level towers: per-modality projections + fusion (item), projection (query).

They start from encoder outputs (BERT sentence vectors, image feature vectors), so the same
towers train on features cached from frozen encoders or on encoders running every step.
Both are Keras functional models with named inputs and outputs.
"""

from __future__ import annotations

import tensorflow as tf

from tfmmsearch.config import ModelConfig
from tfmmsearch.contract import MODALITIES
from tfmmsearch.model.fusion import ModalityDropout, make_fusion
from tfmmsearch.model.item_features import ATTRIBUTE_INPUT, AttributeEncoder

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
    """[has_title [B], has_image [B](, has_attributes [B])] -> modality mask [B, M]."""

    def call(self, inputs):
        return tf.stack(inputs, axis=-1)


@tf.keras.utils.register_keras_serializable(package="tfmmsearch")
class PadModalities(tf.keras.layers.Layer):
    """[B, M] per-modality columns -> [B, width] with zero columns for the modalities a model
    does not have (the attribute modality of a model without item features)."""

    def __init__(self, width: int, **kwargs):
        super().__init__(**kwargs)
        self.width = int(width)

    def call(self, inputs):
        missing = self.width - inputs.shape[-1]
        if missing <= 0:
            return inputs
        return tf.pad(inputs, [[0, 0], [0, missing]])

    def get_config(self):
        return {**super().get_config(), "width": self.width}


@tf.keras.utils.register_keras_serializable(package="tfmmsearch")
class ZerosLike(tf.keras.layers.Layer):
    """A zero tensor shaped like the input (the attribute vector of a model without any)."""

    def call(self, inputs):
        return tf.zeros_like(inputs)


def _projection(dim: int, name: str, dropout: float = 0.0) -> tf.keras.Sequential:
    # Unique layer names: TensorBoard histogram tags come from variable names.
    layers = [tf.keras.layers.Dense(dim * 2, activation="gelu", name=f"{name}_hidden")]
    if dropout > 0:  # only then: runs trained without it keep their checkpoint layout
        layers.append(tf.keras.layers.Dropout(dropout, name=f"{name}_dropout"))
    layers += [tf.keras.layers.Dense(dim, name=f"{name}_out"),
               L2Normalize(name="normalize")]
    return tf.keras.Sequential(layers, name=name)


def build_item_tower(text_dim: int, image_dim: int, config: ModelConfig,
                     attribute_features: list[dict] | None = None) -> tf.keras.Model:
    """(title_features, image_features, has_title, has_image[, attribute_values]) ->
    embedding, modality_weights, text, image, attributes, mask.

    `attribute_features` (`item_features.encoder_features`: one dict per item-feature column)
    adds the attribute modality: an `attribute_values` string input [B, C], encoded
    (AttributeEncoder) and projected like the other two, fused as a third modality, masked for
    items with no attribute present. Without it the tower is the two-modality one, layer for
    layer (checkpoints of such runs restore unchanged); its mask and modality_weights still have
    one column per contract.MODALITIES, the attribute column always 0, and its `attributes`
    output is zeros.
    """
    title_features = tf.keras.Input((text_dim,), name="title_features")
    image_features = tf.keras.Input((image_dim,), name="image_features")
    has_title = tf.keras.Input((), dtype=tf.bool, name="has_title")
    has_image = tf.keras.Input((), dtype=tf.bool, name="has_image")
    inputs = {"title_features": title_features, "image_features": image_features,
              "has_title": has_title, "has_image": has_image}
    presence = [has_title, has_image]
    if attribute_features:
        attribute_values = tf.keras.Input((len(attribute_features),), dtype=tf.string,
                                          name=ATTRIBUTE_INPUT)
        inputs[ATTRIBUTE_INPUT] = attribute_values
        encoded, has_attributes = AttributeEncoder(attribute_features, name="attribute_encoder")(
            attribute_values)
        presence.append(has_attributes)

    mask = StackModalities(name="modality_mask")(presence)
    mask = ModalityDropout(config.modality_dropout, seed=None, name="modality_dropout")(mask)
    image_in = tf.keras.layers.Dropout(config.image_input_dropout, name="image_input_dropout")(
        image_features)
    text = _projection(config.embedding_dim, "text_projection", config.projection_dropout)(
        title_features)
    image = _projection(config.embedding_dim, "image_projection", config.projection_dropout)(
        image_in)
    modalities = [text, image]
    if attribute_features:
        attributes = _projection(config.embedding_dim, "attributes_projection",
                                 config.projection_dropout)(encoded)
        modalities.append(attributes)
    else:
        attributes = ZerosLike(name="no_attributes")(text)
    embedding, weights = make_fusion(config.fusion, config.embedding_dim)((modalities, mask))
    mask = tf.cast(mask, tf.float32)
    if not attribute_features:
        weights = PadModalities(len(MODALITIES), name="pad_weights")(weights)
        mask = PadModalities(len(MODALITIES), name="pad_mask")(mask)
    outputs = {
        "embedding": tf.keras.layers.Activation("linear", name="embedding")(embedding),
        "modality_weights": tf.keras.layers.Activation("linear", name="modality_weights")(weights),
        "text": tf.keras.layers.Activation("linear", name="text")(text),
        "image": tf.keras.layers.Activation("linear", name="image")(image),
        "attributes": tf.keras.layers.Activation("linear", name="attributes")(attributes),
        "mask": tf.keras.layers.Activation("linear", name="mask")(mask),
    }
    return tf.keras.Model(inputs, outputs, name="item_tower")


def build_query_tower(query_dim: int, config: ModelConfig) -> tf.keras.Model:
    """query_features -> L2-normalised query embedding in the item space."""
    query_features = tf.keras.Input((query_dim,), name="query_features")
    embedding = _projection(config.embedding_dim, "query_projection", config.projection_dropout)(
        query_features)
    return tf.keras.Model({"query_features": query_features}, {"embedding": embedding},
                          name="query_tower")
