"""Fusing per-modality item vectors into one item embedding, with explainable weights.

The default is attention fusion (DESIGN.md): each modality vector z_i gets a score s_i, the
weights a_i = softmax(s_i) are taken only over the modalities the item actually has, and the
item embedding is the L2-normalised sum a_i z_i. `concat` and `gated` fusion exist to measure
whether attention earns its place. Every fusion returns (embedding, weights [B, M]) so the
weights can be served as explanations.
"""

from __future__ import annotations

import tensorflow as tf

_NEG_INF = -1e9


def masked_softmax(scores: tf.Tensor, mask: tf.Tensor) -> tf.Tensor:
    """Softmax over the last axis counting only `mask`ed-in entries; all-masked rows give zeros."""
    mask = tf.cast(mask, scores.dtype)
    scores = tf.where(mask > 0, scores, tf.cast(_NEG_INF, scores.dtype))
    weights = tf.nn.softmax(scores, axis=-1) * mask
    return tf.math.divide_no_nan(weights, tf.reduce_sum(weights, axis=-1, keepdims=True))


def _stack(modalities, mask):
    vectors = tf.stack(modalities, axis=1)  # [B, M, D]
    return vectors, tf.cast(mask, vectors.dtype)


@tf.keras.utils.register_keras_serializable(package="tfmmsearch")
class AttentionFusion(tf.keras.layers.Layer):
    """a = masked softmax(w . tanh(W z_i) + b_i); fused = normalize(sum a_i z_i)."""

    def __init__(self, attention_units: int = 64, **kwargs):
        super().__init__(**kwargs)
        self.attention_units = attention_units

    def build(self, input_shape):
        modality_shapes, _ = input_shape
        num_modalities = len(modality_shapes)
        self.key = tf.keras.layers.Dense(self.attention_units, activation="tanh", name="key")
        self.score = tf.keras.layers.Dense(1, use_bias=False, name="score")
        self.modality_bias = self.add_weight(
            name="modality_bias", shape=(num_modalities,), initializer="zeros")
        super().build(input_shape)

    def call(self, inputs):
        modalities, mask = inputs
        vectors, mask = _stack(modalities, mask)
        scores = tf.squeeze(self.score(self.key(vectors)), axis=-1) + self.modality_bias
        weights = masked_softmax(scores, mask)
        fused = tf.reduce_sum(vectors * weights[..., None], axis=1)
        return tf.math.l2_normalize(fused, axis=-1), weights

    def get_config(self):
        return {**super().get_config(), "attention_units": self.attention_units}


@tf.keras.utils.register_keras_serializable(package="tfmmsearch")
class GatedFusion(tf.keras.layers.Layer):
    """Gates computed jointly from all present modalities (a gated multimodal unit)."""

    def build(self, input_shape):
        modality_shapes, _ = input_shape
        self.gate = tf.keras.layers.Dense(len(modality_shapes), name="gate")
        super().build(input_shape)

    def call(self, inputs):
        modalities, mask = inputs
        vectors, mask = _stack(modalities, mask)
        context = tf.concat([v * mask[:, i:i + 1] for i, v in enumerate(modalities)], axis=-1)
        gates = tf.sigmoid(self.gate(context)) * mask
        weights = tf.math.divide_no_nan(gates, tf.reduce_sum(gates, axis=-1, keepdims=True))
        fused = tf.reduce_sum(vectors * weights[..., None], axis=1)
        return tf.math.l2_normalize(fused, axis=-1), weights


@tf.keras.utils.register_keras_serializable(package="tfmmsearch")
class ConcatFusion(tf.keras.layers.Layer):
    """Concatenate (missing modalities zeroed) and project; weights are uniform over present ones."""

    def __init__(self, output_dim: int, **kwargs):
        super().__init__(**kwargs)
        self.output_dim = output_dim

    def build(self, input_shape):
        self.project = tf.keras.layers.Dense(self.output_dim, name="project")
        super().build(input_shape)

    def call(self, inputs):
        modalities, mask = inputs
        _, mask = _stack(modalities, mask)
        joined = tf.concat([v * mask[:, i:i + 1] for i, v in enumerate(modalities)], axis=-1)
        weights = tf.math.divide_no_nan(mask, tf.reduce_sum(mask, axis=-1, keepdims=True))
        return tf.math.l2_normalize(self.project(joined), axis=-1), weights

    def get_config(self):
        return {**super().get_config(), "output_dim": self.output_dim}


@tf.keras.utils.register_keras_serializable(package="tfmmsearch")
class ModalityDropout(tf.keras.layers.Layer):
    """While training, hides one modality of an item at `rate`, never all of them.

    Items with a photo only (new listings) must still embed well; dropping the title or the
    image of training items teaches the fusion to cope, and stops it leaning on one modality.
    """

    def __init__(self, rate: float, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.rate = rate
        self.seed = seed

    def call(self, mask, training=None):
        mask = tf.cast(mask, tf.bool)
        if not training or self.rate <= 0:
            return mask
        batch, num_modalities = tf.shape(mask)[0], tf.shape(mask)[1]
        drop_item = tf.random.uniform([batch], seed=self.seed) < self.rate
        which = tf.random.uniform([batch], maxval=num_modalities, dtype=tf.int32, seed=self.seed)
        drop = tf.logical_and(drop_item[:, None], tf.one_hot(which, num_modalities, on_value=True,
                                                              off_value=False))
        dropped = tf.logical_and(mask, tf.logical_not(drop))
        # Keep the original mask where dropping would leave the item with nothing.
        has_any = tf.reduce_any(dropped, axis=-1, keepdims=True)
        return tf.where(has_any, dropped, mask)

    def get_config(self):
        return {**super().get_config(), "rate": self.rate, "seed": self.seed}


def make_fusion(kind: str, output_dim: int) -> tf.keras.layers.Layer:
    if kind == "attention":
        return AttentionFusion(name="fusion")
    if kind == "gated":
        return GatedFusion(name="fusion")
    if kind == "concat":
        return ConcatFusion(output_dim, name="fusion")
    raise ValueError(f"model.fusion: unknown fusion {kind!r} (attention, concat, gated)")
