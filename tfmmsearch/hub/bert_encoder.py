"""A BERT encoder in tf_keras, shaped like the tfhub.dev BERT encoders.

Why our own: the converted all-MiniLM-L6-v2 and the tiny fixture BERT must be the same
architecture, saved as a tf_keras model so `hub.KerasLayer(trainable=True)` can fine-tune it
(a tf_keras model saved with `tf.saved_model.save` exposes variables, trainable_variables
and regularization_losses). The layout is the original post-LayerNorm BERT: word + position
+ type embeddings, LayerNorm (eps 1e-12), then per layer self-attention -> add & norm ->
GELU (exact erf) feed-forward -> add & norm, and a dense+tanh pooler over the first token.

Variables are named by layer (`embeddings/...`, `transformer/layer_<i>/...`,
`pooler_transform/...`) and keep those names through save and `hub.load`, so a caller can
fine-tune only the top layers: see `top_layer_variables`.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import tensorflow as tf
import tf_keras

from tfmmsearch.hub.text_module import (
    DEFAULT_OUTPUT,
    ENCODER_OUTPUTS,
    INPUT_MASK,
    INPUT_TYPE_IDS,
    INPUT_WORD_IDS,
    POOLED_OUTPUT,
    SEQUENCE_OUTPUT,
    save_atomically,
)

EMBEDDINGS_NAME = "embeddings"
POOLER_NAME = "pooler_transform"
_LAYER_NAME_PATTERN = re.compile(r"(?:^|/)transformer/layer_(\d+)/")
# Added to attention logits of padding; exp() of it underflows to exactly 0 in float32.
_MASKED_LOGIT_BIAS = -10000.0


def transformer_layer_name(index: int) -> str:
    """The Keras layer name (and variable-name prefix) of transformer layer `index`."""
    return f"transformer/layer_{index}"


@dataclass(frozen=True)
class BertEncoderConfig:
    """The hyper-parameters of a BERT encoder (names as in a Hugging Face config.json)."""

    vocab_size: int
    hidden_size: int = 768
    num_layers: int = 12
    num_heads: int = 12
    intermediate_size: int = 3072
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    dropout_rate: float = 0.1
    attention_dropout_rate: float = 0.1
    layer_norm_epsilon: float = 1e-12
    initializer_range: float = 0.02

    def __post_init__(self) -> None:
        for name in ("vocab_size", "hidden_size", "num_layers", "num_heads",
                     "intermediate_size", "max_position_embeddings", "type_vocab_size"):
            value = getattr(self, name)
            if value < 1:
                raise ValueError(f"BertEncoderConfig.{name} must be >= 1, got {value}")
        if self.hidden_size % self.num_heads:
            raise ValueError(f"BertEncoderConfig.hidden_size={self.hidden_size} is not divisible "
                             f"by num_heads={self.num_heads}")
        for name in ("dropout_rate", "attention_dropout_rate"):
            value = getattr(self, name)
            if not 0.0 <= value < 1.0:
                raise ValueError(f"BertEncoderConfig.{name} must be in [0, 1), got {value}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


class _SeedSequence:
    """Hands out distinct seeds so that a seeded encoder initialises identically every time,
    without touching TensorFlow's global seed (the caller's randomness stays the caller's)."""

    def __init__(self, seed: int | None):
        self._seed = seed
        self._count = 0

    def initializer(self, stddev: float) -> tf_keras.initializers.Initializer:
        seed = None
        if self._seed is not None:
            seed = self._seed * 100_003 + self._count
            self._count += 1
        return tf_keras.initializers.TruncatedNormal(stddev=stddev, seed=seed)


class BertEmbeddings(tf_keras.layers.Layer):
    """word + position + token-type embeddings, then LayerNorm and dropout."""

    def __init__(self, vocab_size: int, hidden_size: int, max_position_embeddings: int,
                 type_vocab_size: int, dropout_rate: float, layer_norm_epsilon: float,
                 word_initializer=None, position_initializer=None, type_initializer=None,
                 **kwargs):
        super().__init__(**kwargs)
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.max_position_embeddings = max_position_embeddings
        self.type_vocab_size = type_vocab_size
        self.dropout_rate = dropout_rate
        self.layer_norm_epsilon = layer_norm_epsilon
        self._initializers = (word_initializer, position_initializer, type_initializer)
        self.layer_norm = tf_keras.layers.LayerNormalization(
            axis=-1, epsilon=layer_norm_epsilon, name="layer_norm")
        self.dropout = tf_keras.layers.Dropout(dropout_rate)

    def build(self, input_shape):
        word_init, position_init, type_init = self._initializers
        self.word_embeddings = self.add_weight(
            "word_embeddings", shape=(self.vocab_size, self.hidden_size), initializer=word_init)
        self.position_embeddings = self.add_weight(
            "position_embeddings", shape=(self.max_position_embeddings, self.hidden_size),
            initializer=position_init)
        self.type_embeddings = self.add_weight(
            "type_embeddings", shape=(self.type_vocab_size, self.hidden_size),
            initializer=type_init)
        super().build(input_shape)

    def call(self, word_ids, type_ids, training=None):
        seq_length = tf.shape(word_ids)[1]
        check = tf.debugging.assert_less_equal(
            seq_length, self.max_position_embeddings,
            message=f"sequence longer than max_position_embeddings={self.max_position_embeddings}")
        with tf.control_dependencies([check]):
            positions = self.position_embeddings[:seq_length]
        embeddings = (tf.gather(self.word_embeddings, word_ids)
                      + positions[tf.newaxis]
                      + tf.gather(self.type_embeddings, type_ids))
        return self.dropout(self.layer_norm(embeddings), training=training)

    def get_config(self):
        config = super().get_config()
        config.update(vocab_size=self.vocab_size, hidden_size=self.hidden_size,
                      max_position_embeddings=self.max_position_embeddings,
                      type_vocab_size=self.type_vocab_size, dropout_rate=self.dropout_rate,
                      layer_norm_epsilon=self.layer_norm_epsilon)
        return config


class TransformerLayer(tf_keras.layers.Layer):
    """One post-LayerNorm BERT layer: self-attention, add & norm, GELU FFN, add & norm."""

    def __init__(self, hidden_size: int, num_heads: int, intermediate_size: int,
                 dropout_rate: float, attention_dropout_rate: float, layer_norm_epsilon: float,
                 kernel_initializers: Sequence | None = None, **kwargs):
        super().__init__(**kwargs)
        self.hidden_size = hidden_size
        self.num_heads = num_heads
        self.head_size = hidden_size // num_heads
        self.intermediate_size = intermediate_size
        self.dropout_rate = dropout_rate
        self.attention_dropout_rate = attention_dropout_rate
        self.layer_norm_epsilon = layer_norm_epsilon
        inits = list(kernel_initializers) if kernel_initializers else ["glorot_uniform"] * 6

        def dense(units, name, init, activation=None):
            return tf_keras.layers.Dense(units, activation=activation, kernel_initializer=init,
                                         name=name)

        self.query = dense(hidden_size, "query", inits[0])
        self.key = dense(hidden_size, "key", inits[1])
        self.value = dense(hidden_size, "value", inits[2])
        self.attention_output = dense(hidden_size, "attention_output", inits[3])
        self.attention_layer_norm = tf_keras.layers.LayerNormalization(
            axis=-1, epsilon=layer_norm_epsilon, name="attention_layer_norm")
        # tf_keras' "gelu" is the exact erf form (approximate=False), as BERT's "gelu".
        self.intermediate = dense(intermediate_size, "intermediate", inits[4], activation="gelu")
        self.output_dense = dense(hidden_size, "output", inits[5])
        self.output_layer_norm = tf_keras.layers.LayerNormalization(
            axis=-1, epsilon=layer_norm_epsilon, name="output_layer_norm")
        self.attention_dropout = tf_keras.layers.Dropout(attention_dropout_rate)
        self.attention_output_dropout = tf_keras.layers.Dropout(dropout_rate)
        self.output_dropout = tf_keras.layers.Dropout(dropout_rate)

    def _split_heads(self, x):
        batch, length = tf.shape(x)[0], tf.shape(x)[1]
        x = tf.reshape(x, [batch, length, self.num_heads, self.head_size])
        return tf.transpose(x, [0, 2, 1, 3])  # [batch, heads, length, head_size]

    def call(self, hidden, input_mask, training=None):
        query = self._split_heads(self.query(hidden))
        key = self._split_heads(self.key(hidden))
        value = self._split_heads(self.value(hidden))
        logits = tf.matmul(query, key, transpose_b=True) * (1.0 / float(self.head_size) ** 0.5)
        # Padding keys get a large negative bias: no query attends to them.
        mask = tf.cast(input_mask, logits.dtype)[:, tf.newaxis, tf.newaxis, :]
        logits += (1.0 - mask) * _MASKED_LOGIT_BIAS
        probs = self.attention_dropout(tf.nn.softmax(logits, axis=-1), training=training)
        context = tf.transpose(tf.matmul(probs, value), [0, 2, 1, 3])
        context = tf.reshape(context, tf.shape(hidden))
        attended = self.attention_output_dropout(self.attention_output(context), training=training)
        attended = self.attention_layer_norm(hidden + attended)
        expanded = self.output_dropout(self.output_dense(self.intermediate(attended)),
                                       training=training)
        return self.output_layer_norm(attended + expanded)

    def get_config(self):
        config = super().get_config()
        config.update(hidden_size=self.hidden_size, num_heads=self.num_heads,
                      intermediate_size=self.intermediate_size, dropout_rate=self.dropout_rate,
                      attention_dropout_rate=self.attention_dropout_rate,
                      layer_norm_epsilon=self.layer_norm_epsilon)
        return config


class FirstToken(tf_keras.layers.Layer):
    """The [CLS] position of a sequence, which BERT's pooler summarises."""

    def call(self, sequence):
        return sequence[:, 0, :]


def build_bert_encoder(config: BertEncoderConfig, seed: int | None = None,
                       name: str = "bert_encoder") -> tf_keras.Model:
    """A tf_keras BERT taking/returning the tfhub.dev BERT encoder dicts.

    Inputs: input_word_ids, input_mask, input_type_ids (int32 [batch, seq_len]).
    Outputs: pooled_output [batch, H], sequence_output [batch, seq_len, H],
    encoder_outputs (one [batch, seq_len, H] per layer), default (= pooled_output).
    With `seed`, weights are initialised reproducibly.
    """
    seeds = _SeedSequence(seed)
    std = config.initializer_range
    inputs = {name_: tf_keras.Input(shape=(None,), dtype=tf.int32, name=name_)
              for name_ in (INPUT_WORD_IDS, INPUT_MASK, INPUT_TYPE_IDS)}
    embeddings = BertEmbeddings(
        config.vocab_size, config.hidden_size, config.max_position_embeddings,
        config.type_vocab_size, config.dropout_rate, config.layer_norm_epsilon,
        word_initializer=seeds.initializer(std), position_initializer=seeds.initializer(std),
        type_initializer=seeds.initializer(std), name=EMBEDDINGS_NAME,
    )
    hidden = embeddings(inputs[INPUT_WORD_IDS], inputs[INPUT_TYPE_IDS])
    layer_outputs = []
    for index in range(config.num_layers):
        layer = TransformerLayer(
            config.hidden_size, config.num_heads, config.intermediate_size,
            config.dropout_rate, config.attention_dropout_rate, config.layer_norm_epsilon,
            kernel_initializers=[seeds.initializer(std) for _ in range(6)],
            name=transformer_layer_name(index),
        )
        hidden = layer(hidden, inputs[INPUT_MASK])
        layer_outputs.append(hidden)
    first_token = FirstToken(name="first_token")(hidden)
    pooled = tf_keras.layers.Dense(config.hidden_size, activation="tanh",
                                   kernel_initializer=seeds.initializer(std),
                                   name=POOLER_NAME)(first_token)
    outputs = {
        POOLED_OUTPUT: pooled,
        SEQUENCE_OUTPUT: hidden,
        ENCODER_OUTPUTS: layer_outputs,
        DEFAULT_OUTPUT: pooled,
    }
    return tf_keras.Model(inputs=inputs, outputs=outputs, name=name)


def save_bert_encoder(encoder: tf_keras.Model, out_dir: str | Path) -> Path:
    """Saves the encoder as a TF-Hub-format SavedModel (atomically; replaces out_dir)."""

    input_spec = {name: tf.TensorSpec([None, None], tf.int32, name=name)
                  for name in (INPUT_WORD_IDS, INPUT_MASK, INPUT_TYPE_IDS)}

    @tf.function(input_signature=[input_spec])
    def serving_default(inputs):
        # Signatures carry flat dicts of tensors: the per-layer list becomes
        # encoder_outputs_<i>, as in the tfhub.dev BERT encoders.
        outputs = encoder(inputs, training=False)
        flat = {name: outputs[name] for name in (POOLED_OUTPUT, SEQUENCE_OUTPUT, DEFAULT_OUTPUT)}
        for index, layer_output in enumerate(outputs[ENCODER_OUTPUTS]):
            flat[f"{ENCODER_OUTPUTS}_{index}"] = layer_output
        return flat

    def write(tmp_dir: Path) -> None:
        tf.saved_model.save(encoder, str(tmp_dir),
                            signatures={"serving_default": serving_default})

    return save_atomically(out_dir, write)


def transformer_layer_index(variable_name: str) -> int | None:
    """The transformer layer a variable belongs to, from its name; None outside the layers."""
    match = _LAYER_NAME_PATTERN.search(variable_name)
    return int(match.group(1)) if match else None


def top_layer_variables(variables: Iterable[tf.Variable], top_n: int,
                        include_pooler: bool = True) -> list[tf.Variable]:
    """The variables of the top `top_n` transformer layers (plus the pooler).

    Works on a built encoder or on the variables of a `hub.KerasLayer`/`hub.load` of a saved
    one: layers are found by name (`transformer/layer_<i>/`), the layer count from the names.
    top_n=0 selects only the pooler (or nothing without it).
    """
    variables = list(variables)
    if top_n < 0:
        raise ValueError(f"top_n must be >= 0, got {top_n}")
    indices = [transformer_layer_index(v.name) for v in variables]
    known = [i for i in indices if i is not None]
    if not known:
        raise ValueError("no variable is named like a transformer layer "
                         "('transformer/layer_<i>/'); is this a tfmmsearch BERT encoder?")
    num_layers = max(known) + 1
    if top_n > num_layers:
        raise ValueError(f"top_n={top_n} exceeds the encoder's {num_layers} transformer layers")
    first = num_layers - top_n
    selected = []
    for variable, index in zip(variables, indices):
        in_top = index is not None and index >= first
        in_pooler = include_pooler and f"{POOLER_NAME}/" in variable.name
        if in_top or in_pooler:
            selected.append(variable)
    return selected
