"""Word ids and query coverage: worked by hand."""

import numpy as np
import tensorflow as tf

from tfmmsearch.model.lexical import query_coverage, word_ids


def test_word_ids_normalise_case_punctuation_and_plural_s():
    ids = word_ids(["Navy-Blue SHIRTS, for men!", "navy blue shirt for men", "", "a b c d e"], 4).numpy()
    assert ids.shape == (4, 4) and ids.dtype == np.int64
    np.testing.assert_array_equal(ids[0], ids[1])  # "Navy-Blue SHIRTS," == "navy blue shirt"
    assert (ids[0] > 0).all()
    np.testing.assert_array_equal(ids[2], [0, 0, 0, 0])  # no words: all padding
    assert (ids[3] > 0).all()  # extra words beyond max_words are dropped
    shirts, shirt, mens, men, bus, bu = word_ids(["shirts", "shirt", "mens", "men", "bus", "bu"],
                                                 1).numpy()[:, 0]
    assert shirts == shirt and mens == men
    assert bus != bu  # only words of 4+ letters lose a final s


def test_query_coverage_counts_distinct_query_words_found_in_the_title():
    queries = word_ids(["navy blue shirts for men", "tees tees", ""], 8)
    titles = word_ids(["Men Navy Blue Slim Fit Shirt", "Puma Tee", "Blue Shirt"], 8)
    coverage = query_coverage(queries[:, None, :], titles[None, :, :]).numpy()
    np.testing.assert_allclose(coverage, [[4 / 5, 0.0, 2 / 5],
                                          [0.0, 1.0, 0.0],    # a repeated word counts once
                                          [0.0, 0.0, 0.0]])   # a query without words covers nothing


def test_query_coverage_broadcasts_candidates_per_query():
    queries = word_ids(["red dress", "blue shoes"], 4)[:, None, :]  # [Q, 1, T]
    candidates = tf.stack([word_ids(["red dress", "blue dress"], 6),
                           word_ids(["blue shoes", "red shoe"], 6)])  # [Q, K, T]
    np.testing.assert_allclose(query_coverage(queries, candidates).numpy(), [[1.0, 0.5], [1.0, 0.5]])
