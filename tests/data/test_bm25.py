"""BM25 over titles against scores computed by hand, and the edge cases of empty text."""

import math

import numpy as np
import pytest

from tfmmsearch.data import bm25
from tfmmsearch.data.bm25 import BM25Index, tokenize

# Three documents: lengths 2, 3, 4 tokens, so avgdl = 3. N = 3, k1 = 1.5, b = 0.75.
CORPUS = ["Red shirt", "blue SHIRT shirt", "red red shoes, now"]


def bm25_scores(queries, documents):
    """Scores of `queries` over `documents`, the way BM25System uses the index."""
    return BM25Index(documents).score(queries)


def _norm(length):
    """k1 * (1 - b + b * |d| / avgdl) for this corpus."""
    return 1.5 * (0.25 + 0.75 * length / 3)


def test_tokenizer_lowercases_and_splits_on_non_alphanumerics():
    assert tokenize("Men's Navy-Blue T-Shirt, 2pc") == ["men", "s", "navy", "blue", "t", "shirt", "2pc"]
    assert tokenize("snake_case   Ünïcode") == ["snake", "case", "ünïcode"]
    assert tokenize("") == [] and tokenize(" -- ") == []


def test_single_term_score_by_hand():
    scores = bm25_scores(["red"], CORPUS)
    # "red": df = 2 -> idf = ln(1 + (3 - 2 + 0.5) / (2 + 0.5)) = ln(1.6).
    # doc 0: tf 1, |d| 2 -> norm 1.5 * (0.25 + 0.5) = 1.125; 1 * 2.5 / (1 + 1.125).
    # doc 2: tf 2, |d| 4 -> norm 1.5 * (0.25 + 1.0) = 1.875; 2 * 2.5 / (2 + 1.875).
    idf_red = math.log(1.6)
    expected = [idf_red * 2.5 / 2.125, 0.0, idf_red * 5 / 3.875]
    np.testing.assert_allclose(scores[0], expected, rtol=1e-6)
    assert _norm(2) == pytest.approx(1.125) and _norm(4) == pytest.approx(1.875)


def test_multi_term_query_sums_terms_by_hand():
    scores = bm25_scores(["shirt shoes"], CORPUS)
    # "shirt": df 2 -> ln(1.6); doc 0 tf 1 |d| 2; doc 1 tf 2 |d| 3 (norm 1.5).
    # "shoes": df 1 -> ln(1 + 2.5 / 1.5); doc 2 tf 1 |d| 4 (norm 1.875).
    idf_shirt = math.log(1.6)
    idf_shoes = math.log(1 + 2.5 / 1.5)
    expected = [idf_shirt * 2.5 / 2.125, idf_shirt * 5 / 3.5, idf_shoes * 2.5 / 2.875]
    np.testing.assert_allclose(scores[0], expected, rtol=1e-6)


def test_repeated_query_term_counts_twice():
    single, double = bm25_scores(["shoes", "shoes shoes"], CORPUS)
    np.testing.assert_allclose(double, 2 * single, rtol=1e-6)


def test_rare_term_outweighs_common_term():
    index = BM25Index(CORPUS)
    idf = dict(zip(index.vocabulary, index.idf))
    assert idf["shoes"] > idf["red"] > 0  # df 1 vs 2, and never negative even at df = N


def test_empty_query_and_unknown_terms_score_zero():
    scores = bm25_scores(["", "!!!", "sandals", "sandals red"], CORPUS)
    assert scores.shape == (4, 3)
    assert not scores[:3].any()
    # An unknown term neither scores nor changes the known term's scores.
    np.testing.assert_allclose(scores[3], bm25_scores(["red"], CORPUS)[0])


def test_empty_documents_score_zero_and_do_not_break_the_index():
    scores = bm25_scores(["red shirt"], ["", "red shirt", ""])
    assert scores[0, 0] == 0.0 and scores[0, 2] == 0.0 and scores[0, 1] > 0
    assert not bm25_scores(["red shirt"], ["", "", ""]).any()  # all titles blanked
    assert bm25_scores(["red"], []).shape == (1, 0)
    assert bm25_scores([], CORPUS).shape == (0, 3)


def test_empty_documents_change_average_length():
    # Adding an empty title halves nothing but avgdl: "red shirt" becomes longer than average.
    alone = bm25_scores(["red"], ["red shirt", "blue shirt"])[0, 0]
    with_empty = bm25_scores(["red"], ["red shirt", "blue shirt", ""])[0, 0]
    assert with_empty != pytest.approx(alone)


def test_blocked_scoring_equals_one_block(monkeypatch):
    rng = np.random.default_rng(0)
    words = [f"w{i}" for i in range(30)]
    documents = [" ".join(rng.choice(words, size=rng.integers(0, 8))) for _ in range(200)]
    queries = [" ".join(rng.choice(words, size=rng.integers(0, 4))) for _ in range(40)]
    whole = bm25_scores(queries, documents)
    monkeypatch.setattr(bm25, "_ROWS_PER_BLOCK", 3)
    monkeypatch.setattr(bm25, "_POSTINGS_PER_BLOCK", 50)
    np.testing.assert_array_equal(bm25_scores(queries, documents), whole)
    # And each row equals a brute-force evaluation of the formula.
    lengths = np.array([len(tokenize(d)) for d in documents], dtype=np.float64)
    avgdl = lengths.mean()
    for q in (0, 7, 39):
        expected = np.zeros(len(documents))
        for term in tokenize(queries[q]):
            tf = np.array([tokenize(d).count(term) for d in documents], dtype=np.float64)
            df = (tf > 0).sum()
            idf = math.log(1 + (len(documents) - df + 0.5) / (df + 0.5))
            expected += idf * tf * 2.5 / (tf + 1.5 * (0.25 + 0.75 * lengths / avgdl))
        np.testing.assert_allclose(whole[q], expected, rtol=1e-5, atol=1e-6)


def test_bad_inputs_are_named():
    with pytest.raises(TypeError, match="document 1"):
        BM25Index(["ok", 3])
    with pytest.raises(TypeError, match="query 0"):
        BM25Index(["ok"]).score([None])
    with pytest.raises(ValueError, match="k1"):
        BM25Index(["ok"], k1=-1)


@pytest.mark.slow
def test_myntra_titles_1000_queries_in_seconds(myntra_dir):
    import csv
    import time

    from tfmmsearch.evaluation.metrics import identity_metrics

    with open(myntra_dir / "products.csv", newline="", encoding="utf-8") as handle:
        titles = [row["title"] for row in csv.DictReader(handle)]
    picked = np.random.default_rng(0).choice(len(titles), size=1000, replace=False)
    started = time.perf_counter()
    scores = BM25Index(titles).score([titles[i] for i in picked])
    elapsed = time.perf_counter() - started
    assert scores.shape == (1000, len(titles))
    assert elapsed < 10.0, f"BM25 took {elapsed:.1f} s for 1000 x {len(titles)}"  # ~0.4 s measured
    # A product's own title finds it (duplicate titles in the catalog keep this just below 1).
    assert identity_metrics(scores, picked).means["recall@10"] > 0.95  # 0.998 measured
