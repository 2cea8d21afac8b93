"""Raw-input encoders built from TF-Hub handles: strings -> sentence vectors, images -> features.

Any handle that `hub.KerasLayer` loads works here: a tfhub.dev / Kaggle URL, or a module this
package built offline (see `tfmmsearch.hub.registry`). Text goes through the preprocessor's
`tokenize` and `bert_pack_inputs` (so the sequence length is ours to choose), then the encoder,
then mean pooling (sentence-transformers style) or BERT's pooled output.
"""

from __future__ import annotations

import tensorflow as tf
import tensorflow_hub as hub
import tensorflow_text  # noqa: F401  (registers the TF Text ops the preprocessors use)

from tfmmsearch.config import ImageTowerConfig, TextTowerConfig
from tfmmsearch.hub.registry import resolve_handle


def masked_mean(sequence: tf.Tensor, mask: tf.Tensor) -> tf.Tensor:
    """Mean of token vectors where mask is 1: [B, T, H], [B, T] -> [B, H] (zeros for no tokens)."""
    mask = tf.cast(mask, sequence.dtype)[..., None]
    return tf.math.divide_no_nan(tf.reduce_sum(sequence * mask, axis=1), tf.reduce_sum(mask, axis=1))


@tf.keras.utils.register_keras_serializable(package="tfmmsearch")
class TopLayersKerasLayer(hub.KerasLayer):
    """A BERT encoder whose top N transformer layers (and pooler) train; the rest stay frozen."""

    def __init__(self, handle, top_layers: int, **kwargs):
        super().__init__(handle, trainable=True, **kwargs)
        self.top_layers = top_layers

    @property
    def trainable_weights(self):
        from tfmmsearch.hub.bert_encoder import top_layer_variables

        return top_layer_variables(super().trainable_weights, self.top_layers)

    @property
    def non_trainable_weights(self):
        everything = super().trainable_weights + super().non_trainable_weights
        chosen = {id(v) for v in self.trainable_weights}
        return [v for v in everything if id(v) not in chosen]

    def get_config(self):
        return {**super().get_config(), "top_layers": self.top_layers}

    @classmethod
    def from_config(cls, config):
        # __init__ sets trainable itself; a layer frozen after construction stays frozen.
        config = dict(config)
        trainable = config.pop("trainable", True)
        layer = cls(**config)
        layer.trainable = trainable
        return layer


def _encoder_layer(handle: str, config: TextTowerConfig, name: str) -> hub.KerasLayer:
    if config.trainable == "top_n":
        return TopLayersKerasLayer(handle, config.trainable_top_layers, name=name)
    return hub.KerasLayer(handle, trainable=config.trainable == "full", name=name)


def build_text_encoder(config: TextTowerConfig, cache_dir=None, name: str = "text_encoder",
                       preprocessor: str | None = None, encoder: str | None = None) -> tf.keras.Model:
    """string [B] -> float32 [B, H] sentence vectors (L2-normalised for mean pooling)."""
    preprocessor_handle = resolve_handle(preprocessor or config.preprocessor, cache_dir)
    encoder_handle = resolve_handle(encoder or config.encoder, cache_dir)
    loaded = hub.load(preprocessor_handle)
    tokenize = hub.KerasLayer(loaded.tokenize, name="tokenize")
    pack = hub.KerasLayer(loaded.bert_pack_inputs, arguments={"seq_length": config.seq_length},
                          name="pack_inputs")
    bert = _encoder_layer(encoder_handle, config, name="bert")

    text = tf.keras.Input((), dtype=tf.string, name="text")
    packed = pack([tokenize(text)])
    outputs = bert(packed)
    if config.pooling == "mean":
        vector = tf.keras.layers.Lambda(
            lambda t: tf.math.l2_normalize(masked_mean(t[0], t[1]), axis=-1), name="mean_pool")(
            [outputs["sequence_output"], packed["input_mask"]])
    else:
        vector = outputs["pooled_output"]
    model = tf.keras.Model(text, vector, name=name)
    # The tokenizer's vocabulary table belongs to the loaded preprocessor: keep it tracked so a
    # SavedModel that calls this encoder carries the table with it.
    model.preprocessor_module = loaded
    return model


def build_image_encoder(config: ImageTowerConfig, cache_dir=None, name: str = "image_encoder"
                        ) -> tf.keras.Model:
    """float32 [B, S, S, 3] RGB in [0, 1] -> float32 [B, F] image features."""
    handle = resolve_handle(config.handle, cache_dir)
    image = tf.keras.Input((config.image_size, config.image_size, 3), name="image")
    features = hub.KerasLayer(handle, trainable=config.trainable, name="image_module")(image)
    if config.colour_histogram_bins > 0:
        colours = ColourHistogram(config.colour_histogram_bins, name="colour_histogram")(image)
        features = tf.keras.layers.Concatenate(name="image_features")([features, colours])
    return tf.keras.Model(image, features, name=name)


@tf.keras.utils.register_keras_serializable(package="tfmmsearch")
class ColourHistogram(tf.keras.layers.Layer):
    """Joint RGB histogram of an image's foreground: [B, S, S, 3] in [0, 1] -> [B, bins^3].

    Catalog photos sit on near-white backgrounds, so pixels whose channels are all above
    `background` are left out (an all-background image counts every pixel). The image is
    first area-downsampled to 64 x 64: colour proportions survive, the cost is small. Square
    roots of the proportions (Hellinger) keep a dominant colour from swamping the rest.
    """

    def __init__(self, bins: int = 4, background: float = 0.92, **kwargs):
        super().__init__(trainable=False, **kwargs)
        self.bins, self.background = int(bins), float(background)

    def call(self, images):
        small = tf.image.resize(images, [64, 64], method="area")
        pixels = tf.reshape(tf.clip_by_value(small, 0.0, 1.0), [tf.shape(small)[0], -1, 3])
        levels = tf.minimum(tf.cast(pixels * self.bins, tf.int32), self.bins - 1)
        index = (levels[..., 0] * self.bins + levels[..., 1]) * self.bins + levels[..., 2]
        foreground = tf.cast(tf.reduce_min(pixels, axis=-1) <= self.background, tf.float32)
        empty = tf.reduce_sum(foreground, axis=1, keepdims=True) == 0.0
        weights = tf.where(empty, tf.ones_like(foreground), foreground)
        counts = tf.reduce_sum(tf.one_hot(index, self.bins ** 3) * weights[..., None], axis=1)
        return tf.sqrt(counts / tf.reduce_sum(weights, axis=1, keepdims=True))

    def get_config(self):
        return {**super().get_config(), "bins": self.bins, "background": self.background}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config.pop("trainable", None)  # always False: __init__ sets it
        return cls(**config)
