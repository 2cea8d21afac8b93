"""The TF-Hub-format BERT preprocessor (tfmmsearch.hub.bert_preprocessor)."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_hub as hub

from tfmmsearch.data.vocab import write_vocab_file
from tfmmsearch.hub.bert_preprocessor import (
    BertPreprocessor,
    round_robin_lengths,
    save_bert_preprocessor,
)
from tfmmsearch.hub.text_module import save_atomically

VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]",
         "red", "cotton", "shirt", "##s", "t", "-", "for", "women", "cafe", "creme",
         ",", "!", "navy", "blue", "a", "##a", "sneak", "##ers"]
ID = {token: index for index, token in enumerate(VOCAB)}
SEQ_LENGTH = 8
TEXTS = ["Red cotton T-Shirts for women!", "Café CRÈME, navy blue", "", "sneakers"]
OUTPUT_NAMES = ("input_word_ids", "input_mask", "input_type_ids")


@pytest.fixture(scope="module")
def vocab_file(tmp_path_factory):
    return write_vocab_file(VOCAB, tmp_path_factory.mktemp("vocab") / "vocab.txt")


@pytest.fixture(scope="module")
def preprocessor(vocab_file):
    return BertPreprocessor(vocab_file, seq_length=SEQ_LENGTH)


@pytest.fixture(scope="module")
def saved_dir(vocab_file, tmp_path_factory):
    return save_bert_preprocessor(vocab_file, tmp_path_factory.mktemp("pre") / "preprocessor",
                                  seq_length=SEQ_LENGTH)


def ids(*tokens):
    return [ID[token] for token in tokens]


def as_numpy(outputs):
    return {name: outputs[name].numpy() for name in OUTPUT_NAMES}


def round_robin_reference(lengths, budget):
    """Takes one token from each non-exhausted segment in turn until the budget is spent."""
    kept = [0] * len(lengths)
    while budget > 0 and any(k < n for k, n in zip(kept, lengths)):
        for index, length in enumerate(lengths):
            if budget > 0 and kept[index] < length:
                kept[index] += 1
                budget -= 1
    return kept


# ---------------------------------------------------------------------- tokenization


def test_tokenize_lowercases_strips_accents_and_splits_punctuation(preprocessor):
    words = preprocessor.tokenize(tf.constant(TEXTS)).to_list()
    assert words[0] == [ids("red"), ids("cotton"), ids("t"), ids("-"), ids("shirt", "##s"),
                        ids("for"), ids("women"), ids("!")]
    assert words[1] == [ids("cafe"), ids("creme"), ids(","), ids("navy"), ids("blue")]
    assert words[2] == []
    assert words[3] == [ids("sneak", "##ers")]
    assert preprocessor.tokenize(tf.constant(["x"])).flat_values.dtype == tf.int32


def test_unknown_and_overlong_words_become_unk(preprocessor):
    words = preprocessor.tokenize(tf.constant(["zebra red", "a" * 100, "a" * 101])).to_list()
    assert words[0] == [ids("[UNK]"), ids("red")]
    assert words[1] == [ids("a") + ids("##a") * 99]  # 100 bytes: still word pieces
    assert words[2] == [ids("[UNK]")]  # over 100 bytes: [UNK], as BERT's tokenizer does


def test_default_call_packs_one_segment(preprocessor):
    out = as_numpy(preprocessor(tf.constant(TEXTS)))
    for name in OUTPUT_NAMES:
        assert out[name].shape == (len(TEXTS), SEQ_LENGTH)
        assert out[name].dtype == np.int32
    # 8 tokens + [CLS] + [SEP] > 8: the first 6 tokens survive.
    assert out["input_word_ids"][0].tolist() == ids(
        "[CLS]", "red", "cotton", "t", "-", "shirt", "##s", "[SEP]")
    assert out["input_word_ids"][2].tolist() == ids("[CLS]", "[SEP]") + [0] * 6
    assert out["input_mask"][2].tolist() == [1, 1] + [0] * 6
    assert out["input_mask"][3].tolist() == [1, 1, 1, 1] + [0] * 4
    assert not out["input_type_ids"].any()


def test_pack_two_segments_sets_type_ids(preprocessor):
    first = preprocessor.tokenize(tf.constant(["red shirt", ""]))
    second = preprocessor.tokenize(tf.constant(["navy", "blue"]))
    out = as_numpy(preprocessor.bert_pack_inputs([first, second], seq_length=10))
    assert out["input_word_ids"].tolist() == [
        ids("[CLS]", "red", "shirt", "[SEP]", "navy", "[SEP]") + [0] * 4,
        ids("[CLS]", "[SEP]", "blue", "[SEP]") + [0] * 6,
    ]
    assert out["input_type_ids"].tolist() == [[0, 0, 0, 0, 1, 1] + [0] * 4,
                                              [0, 0, 1, 1] + [0] * 6]
    assert out["input_mask"].tolist() == [[1] * 6 + [0] * 4, [1] * 4 + [0] * 6]


@pytest.mark.parametrize("num_segments", [1, 2, 3])
def test_trimming_is_round_robin_over_a_grid_of_lengths(num_segments):
    grid = list(np.ndindex(*([5] * num_segments)))
    lengths = [tf.constant([row[i] for row in grid], tf.int64) for i in range(num_segments)]
    for budget in (0, 1, 3, 6, 20):
        kept = np.stack([k.numpy() for k in round_robin_lengths(lengths, budget)], axis=1)
        expected = [round_robin_reference(list(row), budget) for row in grid]
        assert kept.tolist() == expected, budget


def test_pack_trims_segments_to_seq_length(preprocessor):
    # Word-piece ids stand in for tokens; segments of 6 and 2 tokens into 8 slots (5 free).
    first = tf.ragged.constant([[[5], [6], [7, 8], [9], [10]]], dtype=tf.int32)
    second = tf.ragged.constant([[[17], [18]]], dtype=tf.int32)
    out = as_numpy(preprocessor.bert_pack_inputs([first, second], seq_length=8))
    assert out["input_word_ids"].tolist() == [[2, 5, 6, 7, 3, 17, 18, 3]]
    assert out["input_type_ids"].tolist() == [[0, 0, 0, 0, 0, 1, 1, 1]]


def test_pack_accepts_token_rows_without_word_dimension(preprocessor):
    tokens = tf.ragged.constant([[5, 6], [7]], dtype=tf.int32)
    out = as_numpy(preprocessor.bert_pack_inputs([tokens], seq_length=4))
    assert out["input_word_ids"].tolist() == [[2, 5, 6, 3], [2, 7, 3, 0]]


def test_pack_rejects_a_seq_length_too_small_for_the_specials(preprocessor):
    tokens = tf.ragged.constant([[5]], dtype=tf.int32)
    with pytest.raises(tf.errors.InvalidArgumentError, match="seq_length too small"):
        preprocessor.bert_pack_inputs([tokens, tokens], seq_length=2)


def test_pack_rejects_dense_segments(preprocessor):
    with pytest.raises(TypeError, match="segment 0 must be a RaggedTensor"):
        preprocessor.bert_pack_inputs([tf.constant([[5, 6]])], seq_length=4)


def test_bad_vocab_file_is_named(tmp_path):
    path = tmp_path / "vocab.txt"
    path.write_text("[UNK]\n[PAD]\n[CLS]\n[SEP]\n", encoding="utf-8")
    with pytest.raises(ValueError, match=str(path)):
        BertPreprocessor(path)


# ---------------------------------------------------------------------- saved module


def test_saved_module_equals_in_process(preprocessor, saved_dir):
    layer = hub.KerasLayer(str(saved_dir))
    saved = layer(tf.constant(TEXTS))
    expected = as_numpy(preprocessor(tf.constant(TEXTS)))
    for name in OUTPUT_NAMES:
        np.testing.assert_array_equal(saved[name].numpy(), expected[name])
    signature = tf.saved_model.load(str(saved_dir)).signatures["serving_default"]
    served = signature(tf.constant(TEXTS))
    for name in OUTPUT_NAMES:
        np.testing.assert_array_equal(served[name].numpy(), expected[name])
    assert (saved_dir / "assets" / "vocab.txt").read_text(encoding="utf-8").split() == VOCAB


def test_saved_sub_objects_tokenize_and_pack_two_segments(preprocessor, saved_dir):
    module = hub.load(str(saved_dir))
    tokenize = hub.KerasLayer(module.tokenize)
    pack = hub.KerasLayer(module.bert_pack_inputs, arguments=dict(seq_length=12))
    queries = tf.constant(["navy blue sneakers", "red"])
    titles = tf.constant(["Red cotton T-Shirts for women!", "Café CRÈME"])
    first, second = tokenize(queries), tokenize(titles)
    assert isinstance(first, tf.RaggedTensor) and first.shape.rank == 3
    saved = pack([first, second])
    expected = preprocessor.bert_pack_inputs(
        [preprocessor.tokenize(queries), preprocessor.tokenize(titles)], seq_length=12)
    for name in OUTPUT_NAMES:
        assert saved[name].shape == (2, 12)
        np.testing.assert_array_equal(saved[name].numpy(), expected[name].numpy())
    # Round-robin: 4 + 8 tokens into 9 free slots keeps 4 of the first and 5 of the second.
    assert saved["input_type_ids"].numpy()[0].tolist() == [0] * 6 + [1] * 6
    # Without seq_length the builder's default applies, for one or more segments.
    default_pack = hub.KerasLayer(module.bert_pack_inputs)
    assert default_pack([first])["input_word_ids"].shape == (2, SEQ_LENGTH)
    assert default_pack([first, second])["input_mask"].shape == (2, SEQ_LENGTH)


def test_round_trip_through_saved_model_save_and_load(saved_dir, tmp_path):
    loaded = tf.saved_model.load(str(saved_dir))
    tf.saved_model.save(loaded, str(tmp_path / "again"))
    reloaded = tf.saved_model.load(str(tmp_path / "again"))
    before, after = loaded(tf.constant(TEXTS)), reloaded(tf.constant(TEXTS))
    for name in OUTPUT_NAMES:
        np.testing.assert_array_equal(before[name].numpy(), after[name].numpy())


def test_save_atomically_replaces_and_leaves_no_temp_dirs(tmp_path):
    out_dir = tmp_path / "module"
    save_atomically(out_dir, lambda tmp: (tmp / "version").write_text("1"))
    save_atomically(out_dir, lambda tmp: (tmp / "version").write_text("2"))
    assert (out_dir / "version").read_text() == "2"
    assert [p.name for p in tmp_path.iterdir()] == ["module"]


def test_save_atomically_keeps_the_old_module_when_writing_fails(tmp_path):
    out_dir = tmp_path / "module"
    save_atomically(out_dir, lambda tmp: (tmp / "version").write_text("1"))

    def half_write(tmp):
        (tmp / "version").write_text("2")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        save_atomically(out_dir, half_write)
    assert (out_dir / "version").read_text() == "1"
    assert [p.name for p in tmp_path.iterdir()] == ["module"]


FRESH_PROCESS_SCRIPT = textwrap.dedent("""
    import json, os, sys
    os.environ["TF_USE_LEGACY_KERAS"] = "1"
    import tensorflow as tf
    import tensorflow_hub as hub
    import tensorflow_text  # registers the tokenizer ops the SavedModel uses

    module_dir, texts_json = sys.argv[1], sys.argv[2]
    texts = tf.constant(json.loads(texts_json))
    packed = hub.KerasLayer(module_dir)(texts)
    module = hub.load(module_dir)
    tokenize = hub.KerasLayer(module.tokenize)
    pack = hub.KerasLayer(module.bert_pack_inputs, arguments=dict(seq_length=16))
    pair = pack([tokenize(texts), tokenize(texts)])
    print(json.dumps({"single": {k: v.numpy().tolist() for k, v in packed.items()},
                      "pair": {k: v.numpy().tolist() for k, v in pair.items()}}))
""")


def test_loads_in_a_fresh_process_with_equal_outputs(preprocessor, saved_dir, tmp_path):
    env = dict(os.environ, TF_USE_LEGACY_KERAS="1", TF_CPP_MIN_LOG_LEVEL="2")
    result = subprocess.run(
        [sys.executable, "-c", FRESH_PROCESS_SCRIPT, str(saved_dir), json.dumps(TEXTS)],
        capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    fresh = json.loads(result.stdout.strip().splitlines()[-1])
    texts = tf.constant(TEXTS)
    single = as_numpy(preprocessor(texts))
    tokens = preprocessor.tokenize(texts)
    pair = as_numpy(preprocessor.bert_pack_inputs([tokens, tokens], seq_length=16))
    for name in OUTPUT_NAMES:
        assert fresh["single"][name] == single[name].tolist()
        assert fresh["pair"][name] == pair[name].tolist()
