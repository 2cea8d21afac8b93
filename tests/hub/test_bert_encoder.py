"""The tf_keras BERT encoder in TF-Hub format (tfmmsearch.hub.bert_encoder)."""

import json
import math
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_hub as hub
import tf_keras

from tfmmsearch.hub.bert_encoder import (
    BertEncoderConfig,
    build_bert_encoder,
    save_bert_encoder,
    top_layer_variables,
    transformer_layer_index,
)

CONFIG = BertEncoderConfig(vocab_size=40, hidden_size=16, num_layers=3, num_heads=2,
                           intermediate_size=24, max_position_embeddings=12)
OUTPUT_NAMES = ("pooled_output", "sequence_output", "default")


def make_inputs():
    word_ids = np.array([[2, 7, 9, 11, 3, 0, 0], [2, 30, 3, 12, 13, 14, 3]], np.int32)
    mask = (word_ids != 0).astype(np.int32)
    mask[1] = 1
    type_ids = np.array([[0] * 7, [0, 0, 0, 1, 1, 1, 1]], np.int32)
    return {"input_word_ids": tf.constant(word_ids), "input_mask": tf.constant(mask),
            "input_type_ids": tf.constant(type_ids)}


@pytest.fixture(scope="module")
def encoder():
    return build_bert_encoder(CONFIG, seed=1)


@pytest.fixture(scope="module")
def saved_dir(encoder, tmp_path_factory):
    return save_bert_encoder(encoder, tmp_path_factory.mktemp("enc") / "encoder")


# ---------------------------------------------------------------------- numpy reference


def numpy_bert(weights, inputs, config):
    """A plain numpy BERT forward pass (post-LN, exact-erf GELU), written from the paper."""
    erf = np.vectorize(math.erf)

    def layer_norm(x, prefix):
        mean = x.mean(-1, keepdims=True)
        var = ((x - mean) ** 2).mean(-1, keepdims=True)
        return (x - mean) / np.sqrt(var + config.layer_norm_epsilon) * weights[
            f"{prefix}/gamma"] + weights[f"{prefix}/beta"]

    def dense(x, prefix):
        return x @ weights[f"{prefix}/kernel"] + weights[f"{prefix}/bias"]

    word_ids = inputs["input_word_ids"].numpy()
    type_ids = inputs["input_type_ids"].numpy()
    mask = inputs["input_mask"].numpy()
    length = word_ids.shape[1]
    x = (weights["embeddings/word_embeddings"][word_ids]
         + weights["embeddings/position_embeddings"][:length]
         + weights["embeddings/type_embeddings"][type_ids])
    x = layer_norm(x, "embeddings/layer_norm")
    heads, size = config.num_heads, config.hidden_size // config.num_heads
    layers = []
    for index in range(config.num_layers):
        p = f"transformer/layer_{index}"

        def split(t):
            return t.reshape(t.shape[0], length, heads, size).transpose(0, 2, 1, 3)

        q, k, v = split(dense(x, f"{p}/query")), split(dense(x, f"{p}/key")), split(
            dense(x, f"{p}/value"))
        logits = q @ k.transpose(0, 1, 3, 2) / math.sqrt(size)
        logits = np.where(mask[:, None, None, :] == 1, logits, -1e30)
        probs = np.exp(logits - logits.max(-1, keepdims=True))
        probs /= probs.sum(-1, keepdims=True)
        context = (probs @ v).transpose(0, 2, 1, 3).reshape(x.shape)
        x = layer_norm(x + dense(context, f"{p}/attention_output"), f"{p}/attention_layer_norm")
        hidden = dense(x, f"{p}/intermediate")
        hidden = 0.5 * hidden * (1.0 + erf(hidden / math.sqrt(2.0)))
        x = layer_norm(x + dense(hidden, f"{p}/output"), f"{p}/output_layer_norm")
        layers.append(x)
    pooled = np.tanh(dense(x[:, 0], "pooler_transform"))
    return pooled, x, layers


def test_matches_a_numpy_reference_bert(encoder):
    weights = {v.name.split(":")[0]: v.numpy().astype(np.float64) for v in encoder.variables}
    inputs = make_inputs()
    pooled, sequence, layers = numpy_bert(weights, inputs, CONFIG)
    out = encoder(inputs, training=False)
    real = inputs["input_mask"].numpy().astype(bool)
    np.testing.assert_allclose(out["pooled_output"].numpy(), pooled, atol=1e-5)
    np.testing.assert_allclose(out["sequence_output"].numpy()[real], sequence[real], atol=1e-5)
    for got, expected in zip(out["encoder_outputs"], layers):
        np.testing.assert_allclose(got.numpy()[real], expected[real], atol=1e-5)


# ---------------------------------------------------------------------- behaviour


def test_outputs_follow_the_tfhub_bert_conventions(encoder):
    out = encoder(make_inputs())
    assert out["pooled_output"].shape == (2, CONFIG.hidden_size)
    assert out["sequence_output"].shape == (2, 7, CONFIG.hidden_size)
    assert len(out["encoder_outputs"]) == CONFIG.num_layers
    np.testing.assert_array_equal(out["encoder_outputs"][-1], out["sequence_output"])
    np.testing.assert_array_equal(out["default"], out["pooled_output"])


def test_padding_does_not_change_real_token_outputs(encoder):
    inputs = make_inputs()
    row = {name: value[:1, :5] for name, value in inputs.items()}  # row 0 without padding
    padded = encoder(inputs, training=False)["sequence_output"].numpy()[0, :5]
    unpadded = encoder(row, training=False)["sequence_output"].numpy()[0]
    np.testing.assert_allclose(padded, unpadded, atol=1e-5)
    changed = dict(inputs, input_word_ids=tf.where(inputs["input_mask"] == 1,
                                                   inputs["input_word_ids"], 17))
    np.testing.assert_allclose(encoder(changed, training=False)["pooled_output"][0],
                               encoder(inputs, training=False)["pooled_output"][0], atol=1e-6)


def test_seeded_initialisation_is_reproducible(encoder):
    same = build_bert_encoder(CONFIG, seed=1)
    other = build_bert_encoder(CONFIG, seed=2)
    for a, b, c in zip(encoder.get_weights(), same.get_weights(), other.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert any(not np.array_equal(a, c) and a.std() > 0
               for a, c in zip(encoder.get_weights(), other.get_weights()))


def test_dropout_is_active_only_in_training(encoder):
    inputs = make_inputs()
    first = encoder(inputs, training=True)["pooled_output"].numpy()
    second = encoder(inputs, training=True)["pooled_output"].numpy()
    assert not np.allclose(first, second)
    np.testing.assert_array_equal(encoder(inputs, training=False)["pooled_output"],
                                  encoder(inputs, training=False)["pooled_output"])


def test_sequences_longer_than_the_position_table_fail_clearly(encoder):
    long_ids = tf.ones([1, CONFIG.max_position_embeddings + 1], tf.int32)
    inputs = {"input_word_ids": long_ids, "input_mask": long_ids,
              "input_type_ids": tf.zeros_like(long_ids)}
    with pytest.raises(tf.errors.InvalidArgumentError, match="max_position_embeddings"):
        encoder(inputs)


@pytest.mark.parametrize("changes, message", [
    (dict(hidden_size=10, num_heads=3), "not divisible"),
    (dict(num_layers=0), "num_layers"),
    (dict(dropout_rate=1.0), "dropout_rate"),
])
def test_config_rejects_impossible_shapes(changes, message):
    with pytest.raises(ValueError, match=message):
        BertEncoderConfig(**{**CONFIG.to_dict(), **changes})


def test_top_layer_variables_pick_layers_by_name(encoder):
    names = [v.name for v in top_layer_variables(encoder.variables, top_n=1)]
    assert names and all(n.startswith(("transformer/layer_2/", "pooler_transform/"))
                         for n in names)
    assert any(n.startswith("pooler_transform/") for n in names)
    two = top_layer_variables(encoder.variables, top_n=2, include_pooler=False)
    assert {transformer_layer_index(v.name) for v in two} == {1, 2}
    assert len(two) == 2 * len([n for n in names if n.startswith("transformer/")])
    assert top_layer_variables(encoder.variables, top_n=0, include_pooler=False) == []
    with pytest.raises(ValueError, match="exceeds"):
        top_layer_variables(encoder.variables, top_n=4)


# ---------------------------------------------------------------------- saved module


def test_saved_module_equals_in_process_and_serves_flat_outputs(encoder, saved_dir):
    inputs = make_inputs()
    expected = encoder(inputs, training=False)
    saved = hub.KerasLayer(str(saved_dir))(inputs)
    for name in OUTPUT_NAMES:
        np.testing.assert_allclose(saved[name], expected[name], atol=1e-6)
    assert len(saved["encoder_outputs"]) == CONFIG.num_layers
    served = tf.saved_model.load(str(saved_dir)).signatures["serving_default"](**inputs)
    assert set(served) == {*OUTPUT_NAMES, "encoder_outputs_0", "encoder_outputs_1",
                           "encoder_outputs_2"}
    np.testing.assert_allclose(served["encoder_outputs_1"], expected["encoder_outputs"][1],
                               atol=1e-6)


def test_fine_tunes_through_a_trainable_keras_layer(encoder, saved_dir):
    layer = hub.KerasLayer(str(saved_dir), trainable=True)
    assert len(layer.trainable_variables) == len(encoder.trainable_variables)
    assert {v.name for v in layer.trainable_variables} == {v.name for v in encoder.variables}
    inputs = make_inputs()
    before = [v.numpy().copy() for v in layer.trainable_variables]
    optimizer = tf_keras.optimizers.SGD(learning_rate=0.5)
    with tf.GradientTape() as tape:
        out = layer(inputs, training=True)
        loss = tf.reduce_sum(out["pooled_output"] ** 2) + tf.reduce_sum(
            out["sequence_output"] ** 2 * tf.cast(inputs["input_mask"], tf.float32)[..., None])
    grads = tape.gradient(loss, layer.trainable_variables)
    assert all(g is not None for g in grads)
    optimizer.apply_gradients(zip(grads, layer.trainable_variables))
    changed = [not np.array_equal(b, v.numpy()) for b, v in zip(before, layer.trainable_variables)]
    assert all(changed), [v.name for v, c in zip(layer.trainable_variables, changed) if not c]
    # Top-layer selection works on the loaded module's variables too.
    top = top_layer_variables(layer.trainable_variables, top_n=1)
    assert top and all(v.name.startswith(("transformer/layer_2/", "pooler_transform/"))
                       for v in top)


def test_frozen_keras_layer_has_no_trainable_weights(saved_dir):
    layer = hub.KerasLayer(str(saved_dir), trainable=False)
    layer(make_inputs())
    assert layer.trainable_weights == []
    assert len(layer.non_trainable_weights) > 0


def test_round_trip_through_saved_model_save_and_load(saved_dir, tmp_path):
    inputs = make_inputs()
    loaded = tf.saved_model.load(str(saved_dir))
    tf.saved_model.save(loaded, str(tmp_path / "again"))
    reloaded = tf.saved_model.load(str(tmp_path / "again"))
    before, after = loaded(inputs, training=False), reloaded(inputs, training=False)
    for name in OUTPUT_NAMES:
        np.testing.assert_array_equal(before[name], after[name])


FRESH_PROCESS_SCRIPT = textwrap.dedent("""
    import json, os, sys
    os.environ["TF_USE_LEGACY_KERAS"] = "1"
    import tensorflow as tf
    import tensorflow_hub as hub
    import tensorflow_text  # noqa: F401  (a TF-Hub text stack imports it; harmless here)

    module_dir, inputs_json = sys.argv[1], sys.argv[2]
    inputs = {k: tf.constant(v, tf.int32) for k, v in json.loads(inputs_json).items()}
    out = hub.KerasLayer(module_dir, trainable=True)(inputs)
    print(json.dumps({"pooled_output": out["pooled_output"].numpy().tolist(),
                      "sequence_output": out["sequence_output"].numpy().tolist()}))
""")


def test_loads_in_a_fresh_process_with_equal_outputs(encoder, saved_dir, tmp_path):
    inputs = make_inputs()
    payload = json.dumps({k: v.numpy().tolist() for k, v in inputs.items()})
    env = dict(os.environ, TF_USE_LEGACY_KERAS="1", TF_CPP_MIN_LOG_LEVEL="2")
    result = subprocess.run([sys.executable, "-c", FRESH_PROCESS_SCRIPT, str(saved_dir), payload],
                            capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    fresh = json.loads(result.stdout.strip().splitlines()[-1])
    expected = encoder(inputs, training=False)
    for name in ("pooled_output", "sequence_output"):
        np.testing.assert_allclose(np.array(fresh[name]), expected[name], atol=1e-6)
