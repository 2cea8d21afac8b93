"""The in-graph BM25 index scores exactly what the evaluation baseline `BM25Index` scores.

The reference sees each title as its word ids written out in decimal ("17 4 17"): BM25Index
tokenises text into lowercase alphanumeric runs, so it indexes exactly those ids, and any
difference is the graph's arithmetic, not tokenisation.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf

from tfmmsearch.data.bm25 import BM25Index
from tfmmsearch.exporting.lexical_index import LexicalIndex
from tfmmsearch.model.lexical import MAX_QUERY_WORDS, MAX_TITLE_WORDS, word_ids


def as_text(row) -> str:
    return " ".join(str(int(i)) for i in row if i)


def reference_scores(title_words: np.ndarray, query_words: np.ndarray) -> np.ndarray:
    return BM25Index([as_text(row) for row in title_words]).score([as_text(q) for q in query_words])


def random_words(rng, rows: int, width: int, vocabulary: np.ndarray, empty_share=0.2):
    """int64 [rows, width] drawn from `vocabulary` (repeats likely), ragged ends and empty rows."""
    words = rng.choice(vocabulary, size=(rows, width))
    words[np.arange(width)[None, :] >= rng.integers(0, width + 1, size=rows)[:, None]] = 0
    words[rng.random(rows) < empty_share] = 0
    return words.astype(np.int64)


def built(title_words: np.ndarray) -> LexicalIndex:
    index = LexicalIndex()
    index.build(tf.constant(title_words, tf.int64, shape=title_words.shape))
    return index


def scores_of(index: LexicalIndex, query_words: np.ndarray) -> np.ndarray:
    return index.scores(tf.constant(query_words, tf.int64, shape=query_words.shape)).numpy()


# Hash-like ids over the whole int64 range word_ids uses (1 .. 2**62), so sorting and search
# see realistic keys; a few of them are never in a title (unknown query words).
VOCABULARY = np.random.default_rng(7).integers(1, 2**62, size=12, dtype=np.int64)
TITLE_VOCABULARY, UNKNOWN = VOCABULARY[:9], VOCABULARY[9:]


@pytest.mark.parametrize("seed", range(6))
def test_scores_equal_the_reference_bm25(seed):
    rng = np.random.default_rng(seed)
    titles = random_words(rng, int(rng.integers(1, 40)), int(rng.integers(1, 9)), TITLE_VOCABULARY)
    queries = random_words(rng, 7, 5, VOCABULARY, empty_share=0.15)
    repeated = titles[titles > 0][0] if (titles > 0).any() else VOCABULARY[0]
    queries[0] = [repeated] * 3 + [0, 0]  # one word three times: counted three times
    index = built(titles)
    expected = reference_scores(titles, queries)
    got = scores_of(index, queries)
    assert got.dtype == np.float32 and got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    assert (got[expected == 0] == 0).all()  # no query word in the title: exactly 0
    once = scores_of(index, np.array([[repeated, 0, 0, 0, 0]]))
    np.testing.assert_allclose(got[0], 3 * once[0], rtol=1e-6)


def test_each_distinct_word_of_an_item_is_one_posting_sorted_by_word():
    titles = np.array([[5, 3, 5, 0], [3, 3, 3, 3], [0, 0, 0, 0], [9, 5, 0, 0]], np.int64)
    index = LexicalIndex()
    assert index.build(tf.constant(titles)).numpy() == 5  # (3,0) (3,1) (5,0) (5,3) (9,3)
    assert index.posting_terms.numpy().tolist() == [3, 3, 5, 5, 9]
    assert index.posting_items.numpy().tolist() == [0, 1, 0, 3, 3]
    assert index.posting_items.dtype == tf.int32 and index.posting_weights.dtype == tf.float32
    assert int(index.num_items.numpy()) == 4
    # A word repeated in a title raises its term frequency, so its weight, but less than twice.
    weights = dict(zip(zip(index.posting_terms.numpy(), index.posting_items.numpy()),
                       index.posting_weights.numpy()))
    assert weights[(5, 3)] < weights[(5, 0)] < 2 * weights[(5, 3)]  # item 0: "5" twice, longer


def test_titles_and_queries_through_the_exports_tokenisation():
    titles = ["Men Navy Blue Shirts", "navy blue SHIRT shirt", "", "Red Dress",
              "blue dress for women"]
    queries = ["navy shirt", "blue blue dress", "socks", ""]
    title_words = word_ids(tf.constant(titles), MAX_TITLE_WORDS).numpy()
    query_words = word_ids(tf.constant(queries), MAX_QUERY_WORDS).numpy()
    got = scores_of(built(title_words), query_words)
    np.testing.assert_allclose(got, reference_scores(title_words, query_words), rtol=1e-5)
    assert got[0, 1] > got[0, 0] > 0  # "shirts" is "shirt": item 1 has it twice, same length
    assert (got[2] == 0).all() and (got[3] == 0).all() and (got[:, 2] == 0).all()


def test_rebuilding_after_the_catalog_changes_equals_a_fresh_index():
    rng = np.random.default_rng(11)
    before = random_words(rng, 30, 6, TITLE_VOCABULARY)
    after = random_words(rng, 17, 4, VOCABULARY)  # fewer items, narrower, new words
    queries = random_words(rng, 5, 4, VOCABULARY, empty_share=0)
    index = built(before)
    first = scores_of(index, queries)
    index.build(tf.constant(after))
    fresh = built(after)
    for name in ("posting_terms", "posting_items", "posting_weights", "num_items"):
        np.testing.assert_array_equal(getattr(index, name).numpy(), getattr(fresh, name).numpy())
    np.testing.assert_array_equal(scores_of(index, queries), scores_of(fresh, queries))
    np.testing.assert_allclose(scores_of(index, queries), reference_scores(after, queries),
                               rtol=1e-5, atol=1e-6)
    assert first.shape == (5, 30) and scores_of(index, queries).shape == (5, 17)


def test_empty_catalogs_titles_and_batches():
    queries = np.array([[3, 3, 0], [0, 0, 0]], np.int64)
    empty = built(np.zeros([0, MAX_TITLE_WORDS], np.int64))
    assert scores_of(empty, queries).shape == (2, 0)
    assert empty.posting_terms.numpy().size == 0
    no_words = built(np.zeros([4, 3], np.int64))  # items without title words
    np.testing.assert_array_equal(scores_of(no_words, queries), np.zeros([2, 4], np.float32))
    some = built(np.array([[3, 0], [0, 0], [3, 4]], np.int64))
    assert scores_of(some, np.zeros([0, 3], np.int64)).shape == (0, 3)
    assert scores_of(some, np.zeros([2, 0], np.int64)).shape == (2, 3)
    assert scores_of(some, queries)[0, 1] == 0 and scores_of(some, queries)[0, 0] > 0


# Runs in a fresh interpreter that imports only TensorFlow and TF Text, as TF Serving would load
# the export: loads the index, scores, rebuilds it from other titles through the saved `build`.
LOADER = textwrap.dedent("""
    import sys
    import tensorflow as tf
    import tensorflow_text  # noqa: F401  (what a serving process loads)
    directory = sys.argv[1]
    def read(name):
        return tf.io.parse_tensor(tf.io.read_file(f"{directory}/{name}"), tf.int64)
    def write(name, tensor):
        tf.io.write_file(f"{directory}/{name}", tf.io.serialize_tensor(tensor))
    loaded = tf.saved_model.load(f"{directory}/model")
    queries = read("queries")
    write("scores_saved", loaded.scores(queries))
    write("postings_rebuilt", tf.cast(loaded.build(read("after")), tf.int64))
    write("scores_rebuilt", loaded.scores(queries))
    assert not any(name.startswith("tfmmsearch") for name in sys.modules), "package imported"
""")


def test_saved_index_scores_and_rebuilds_in_a_process_without_the_package(tmp_path):
    rng = np.random.default_rng(3)
    before = random_words(rng, 25, 6, TITLE_VOCABULARY)
    after = random_words(rng, 12, 5, VOCABULARY)
    queries = random_words(rng, 4, 4, VOCABULARY, empty_share=0)
    tf.saved_model.save(built(before), str(tmp_path / "model"))
    for name, value in (("queries", queries), ("after", after)):
        tf.io.write_file(str(tmp_path / name), tf.io.serialize_tensor(tf.constant(value)))

    subprocess.run([sys.executable, "-c", LOADER, str(tmp_path)], check=True, timeout=120,
                   cwd=tmp_path)

    def read(name):
        return tf.io.parse_tensor(tf.io.read_file(str(tmp_path / name)), tf.float32).numpy()

    np.testing.assert_allclose(read("scores_saved"), reference_scores(before, queries),
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(read("scores_rebuilt"), reference_scores(after, queries),
                               rtol=1e-5, atol=1e-6)
    rebuilt = tf.io.parse_tensor(tf.io.read_file(str(tmp_path / "postings_rebuilt")), tf.int64)
    assert int(rebuilt) == built(after).posting_terms.numpy().size
