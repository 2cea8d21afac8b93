"""The tiny fixture BERT with a catalog-learned vocabulary (tfmmsearch.hub.tiny_bert)."""

import itertools
import json
import os
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_hub as hub
import tf_keras

from tfmmsearch.hub.minilm import mean_pool
from tfmmsearch.hub.tiny_bert import build_tiny_bert_modules

COLOURS = ["Navy Blue", "Red", "Black", "White", "Grey"]
ARTICLES = ["Shirt", "Tshirts", "Jeans", "Backpack", "Sneakers", "Kurta"]
BRANDS = ["Puma", "Nike", "Roadster"]
TITLES = [f"{brand} {gender} {colour} {article}"
          for brand, gender, colour, article in itertools.product(
              BRANDS, ["Men", "Women"], COLOURS, ARTICLES)]
QUERIES = ["navy blue shirt for men", "Puma sneakers", "", "red kurta women"]
SEQ_LENGTH = 16


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out_dir = tmp_path_factory.mktemp("tiny") / "tiny_bert"
    start = time.perf_counter()
    preprocessor_dir, encoder_dir = build_tiny_bert_modules(
        out_dir, TITLES, vocab_size=400, seq_length=SEQ_LENGTH, seed=0)
    return preprocessor_dir, encoder_dir, time.perf_counter() - start


@pytest.fixture(scope="module")
def frozen_layers(built):
    preprocessor_dir, encoder_dir, _ = built
    return hub.KerasLayer(str(preprocessor_dir)), hub.KerasLayer(str(encoder_dir))


def in_process_outputs(frozen_layers, texts):
    preprocessor, encoder = frozen_layers
    inputs = preprocessor(tf.constant(texts))
    return inputs, encoder(inputs)


def test_builds_both_modules_in_seconds(built):
    preprocessor_dir, encoder_dir, seconds = built
    assert (preprocessor_dir / "saved_model.pb").is_file()
    assert (encoder_dir / "saved_model.pb").is_file()
    assert preprocessor_dir.parent == encoder_dir.parent
    assert seconds < 60, f"building took {seconds:.1f} s"


def test_vocabulary_comes_from_the_catalog(built, frozen_layers):
    preprocessor_dir, _, _ = built
    vocab = (preprocessor_dir / "assets" / "vocab.txt").read_text(encoding="utf-8").split("\n")
    assert vocab[0] == "[PAD]"
    for word in ("navy", "shirt", "sneakers", "roadster", "puma"):
        assert word in vocab, word
    unk = vocab.index("[UNK]")
    inputs, _ = in_process_outputs(frozen_layers, [TITLES[0], "Roadster Women Grey Jeans"])
    assert unk not in inputs["input_word_ids"].numpy()


def test_encoder_is_tiny_and_matches_the_vocabulary(built, frozen_layers):
    preprocessor_dir = built[0]
    vocab_size = len((preprocessor_dir / "assets" / "vocab.txt").read_text().split())
    layer = frozen_layers[1]
    inputs, outputs = in_process_outputs(frozen_layers, QUERIES)
    assert inputs["input_word_ids"].shape == (len(QUERIES), SEQ_LENGTH)
    assert outputs["pooled_output"].shape == (len(QUERIES), 64)
    assert len(outputs["encoder_outputs"]) == 2
    shapes = {v.name.split(":")[0]: tuple(v.shape) for v in layer.weights}
    assert shapes["embeddings/word_embeddings"] == (vocab_size, 64)


def test_fine_tunes_end_to_end_from_raw_strings(built):
    preprocessor_dir, encoder_dir, _ = built
    text = tf_keras.Input(shape=(), dtype=tf.string)
    inputs = hub.KerasLayer(str(preprocessor_dir))(text)
    encoder = hub.KerasLayer(str(encoder_dir), trainable=True)
    outputs = encoder(inputs)
    pooled = mean_pool(outputs["sequence_output"], inputs["input_mask"])
    score = tf_keras.layers.Dense(1)(pooled)
    model = tf_keras.Model(text, score)
    model.compile(optimizer=tf_keras.optimizers.SGD(0.5), loss="mse")
    before = {v.name: v.numpy().copy() for v in encoder.trainable_variables}
    model.fit(tf.constant(TITLES[:8]), tf.ones([8, 1]), batch_size=8, epochs=1, verbose=0)
    moved = [v.name for v in encoder.trainable_variables
             if not np.array_equal(before[v.name], v.numpy())]
    assert any(name.startswith("transformer/layer_1/") for name in moved)
    assert "embeddings/word_embeddings:0" in moved


FRESH_PROCESS_SCRIPT = textwrap.dedent("""
    import json, os, sys
    os.environ["TF_USE_LEGACY_KERAS"] = "1"
    import tensorflow as tf
    import tensorflow_hub as hub
    import tensorflow_text  # registers the tokenizer ops the preprocessor uses

    preprocessor_dir, encoder_dir, texts = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    inputs = hub.KerasLayer(preprocessor_dir)(tf.constant(texts))
    outputs = hub.KerasLayer(encoder_dir, trainable=True)(inputs)
    print(json.dumps({"input_word_ids": inputs["input_word_ids"].numpy().tolist(),
                      "pooled_output": outputs["pooled_output"].numpy().tolist()}))
""")


def test_loads_in_a_fresh_process_with_equal_outputs(built, frozen_layers, tmp_path):
    preprocessor_dir, encoder_dir, _ = built
    env = dict(os.environ, TF_USE_LEGACY_KERAS="1", TF_CPP_MIN_LOG_LEVEL="2")
    result = subprocess.run(
        [sys.executable, "-c", FRESH_PROCESS_SCRIPT, str(preprocessor_dir), str(encoder_dir),
         json.dumps(QUERIES)],
        capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    fresh = json.loads(result.stdout.strip().splitlines()[-1])
    inputs, outputs = in_process_outputs(frozen_layers, QUERIES)
    assert fresh["input_word_ids"] == inputs["input_word_ids"].numpy().tolist()
    np.testing.assert_allclose(np.array(fresh["pooled_output"]), outputs["pooled_output"],
                               atol=1e-6)
