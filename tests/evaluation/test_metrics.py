"""Ranking metrics against examples worked out by hand, ties, and queries with nothing relevant."""

import math

import numpy as np
import pytest

from tfmmsearch.evaluation.metrics import (
    PADDING,
    attribute_metrics,
    attribute_metrics_from_top_k,
    identity_metrics,
    identity_metrics_from_top_k,
    RETRIEVED,
    retrieval_metrics,
    top_k_indices,
)

# Two queries over five products.
# Query 0: ranking by score is p0 (.9), p3 (.7), p2 (.5), p4 (.3), p1 (.1)
#          -> grades in rank order [0, 2, 1, 0, 2]; catalog has two grade-2 products.
# Query 1: p1, p2, p4 tie at .8 and keep index order, then p0 (.2), p3 (0)
#          -> grades in rank order [0, 0, 2, 0, 1]; one grade-2 product, at rank 3.
SCORES = np.array([[0.9, 0.1, 0.5, 0.7, 0.3],
                   [0.2, 0.8, 0.8, 0.0, 0.8]])
GRADES = np.array([[0, 2, 1, 2, 0],
                   [0, 0, 0, 1, 2]], dtype=np.int8)


def test_ranking_is_descending_with_ties_by_index():
    assert top_k_indices(SCORES, 5).tolist() == [[0, 3, 2, 4, 1], [1, 2, 4, 0, 3]]
    assert top_k_indices(SCORES, 2).tolist() == [[0, 3], [1, 2]]


def test_ndcg_by_hand():
    result = attribute_metrics(SCORES, GRADES, ndcg_k=3, recall_k=2)
    # Query 0, top 3 grades [0, 2, 1]: DCG = (2^2-1)/log2(3) + (2^1-1)/log2(4).
    # Ideal top 3 from all catalog grades [2, 2, 1]: 3/log2(2) + 3/log2(3) + 1/log2(4).
    dcg0 = 3 / math.log2(3) + 1 / math.log2(4)
    ideal0 = 3 / 1 + 3 / math.log2(3) + 1 / math.log2(4)
    # Query 1, top 3 grades [0, 0, 2]: DCG = 3/log2(4); ideal [2, 1, 0]: 3/1 + 1/log2(3).
    dcg1 = 3 / math.log2(4)
    ideal1 = 3 / 1 + 1 / math.log2(3)
    np.testing.assert_allclose(result.per_query["ndcg@3"], [dcg0 / ideal0, dcg1 / ideal1])
    assert result.means["ndcg@3"] == pytest.approx((dcg0 / ideal0 + dcg1 / ideal1) / 2)


def test_ndcg_at_10_uses_every_retrieved_product_when_catalog_is_small():
    result = attribute_metrics(SCORES, GRADES)
    # Query 0, all five ranks [0, 2, 1, 0, 2]: 3/log2(3) + 1/log2(4) + 3/log2(6).
    dcg0 = 3 / math.log2(3) + 1 / math.log2(4) + 3 / math.log2(6)
    ideal0 = 3 + 3 / math.log2(3) + 1 / math.log2(4)
    assert result.per_query["ndcg@10"][0] == pytest.approx(dcg0 / ideal0)


def test_recall_of_grade_2_by_hand():
    at_2 = attribute_metrics(SCORES, GRADES, recall_k=2).per_query["recall@2"]
    # Query 0: top 2 = p0, p3 -> one of min(2 grade-2, 2) found. Query 1: p1, p2 -> none of 1.
    np.testing.assert_allclose(at_2, [0.5, 0.0])
    at_3 = attribute_metrics(SCORES, GRADES, recall_k=3).per_query["recall@3"]
    # Query 0: p0, p3, p2 -> still one of 2 (p2 is grade 1, which does not count). Query 1: p4 found.
    np.testing.assert_allclose(at_3, [0.5, 1.0])
    at_1 = attribute_metrics(SCORES, GRADES, recall_k=1).per_query["recall@1"]
    np.testing.assert_allclose(at_1, [0.0, 0.0])  # denominator min(#grade-2, 1) = 1


def test_mrr_of_first_grade_2_by_hand():
    result = attribute_metrics(SCORES, GRADES)
    # Query 0: first grade-2 (p3) at rank 2; the grade-1 p2 at rank 3 does not count.
    # Query 1: first grade-2 (p4) at rank 3, after two tied products with lower index.
    np.testing.assert_allclose(result.per_query["mrr"], [1 / 2, 1 / 3])
    assert result.means["mrr"] == pytest.approx((1 / 2 + 1 / 3) / 2)


def test_ties_broken_the_other_way_would_change_the_numbers():
    # Reversing the product order turns the tie p1/p2/p4 into p4 first: the ranking rule matters.
    reversed_result = attribute_metrics(SCORES[:, ::-1], GRADES[:, ::-1])
    assert reversed_result.per_query["mrr"][1] == pytest.approx(1.0)


def test_query_with_no_relevant_product_scores_zero():
    scores = np.array([[0.4, 0.3, 0.2, 0.1]])
    result = attribute_metrics(scores, np.zeros((1, 4), dtype=np.int8))
    assert result.per_query["ndcg@10"].tolist() == [0.0]
    assert result.per_query["recall@100"].tolist() == [0.0]
    assert result.per_query["mrr"].tolist() == [0.0]


def test_grade_1_only_query_gets_ndcg_but_no_recall_or_mrr():
    # The only grade-1 product (p0) is ranked last of five: NDCG@10 = (1/log2(6)) / (1/log2(2)).
    scores = np.array([[0.0, 1.0, 2.0, 3.0, 4.0]])
    grades = np.array([[1, 0, 0, 0, 0]])
    result = attribute_metrics(scores, grades)
    assert result.per_query["ndcg@10"][0] == pytest.approx(1 / math.log2(6))
    assert result.per_query["recall@100"][0] == 0.0
    assert result.per_query["mrr"][0] == 0.0
    assert attribute_metrics(scores, grades, ndcg_k=3).per_query["ndcg@3"][0] == 0.0


def test_mrr_counts_only_the_top_100():
    # 150 products ranked by index; the only grade-2 product is p120, at rank 121.
    scores = -np.arange(150, dtype=np.float64)[None, :]
    grades = np.zeros((1, 150), dtype=np.int8)
    grades[0, 120] = 2
    assert attribute_metrics(scores, grades).per_query["mrr"][0] == 0.0
    assert attribute_metrics(scores, grades).per_query["recall@100"][0] == 0.0
    assert attribute_metrics(scores, grades, retrieved=150).per_query["mrr"][0] == pytest.approx(1 / 121)


def test_recall_denominator_is_capped_at_k():
    # 120 grade-2 products: finding 100 of them in the top 100 is perfect recall@100...
    scores = -np.arange(150, dtype=np.float64)[None, :]
    grades = np.zeros((1, 150), dtype=np.int8)
    grades[0, :120] = 2
    assert attribute_metrics(scores, grades).per_query["recall@100"][0] == pytest.approx(1.0)
    # ...and with ten grade-0 products pushed into the top 100, 90 / min(120, 100).
    grades[0, :10] = 0
    assert attribute_metrics(scores, grades).per_query["recall@100"][0] == pytest.approx(0.9)


def test_top_k_matches_a_stable_full_sort_on_tied_scores():
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 4, size=(300, 57)).astype(np.float32)  # many ties, > one row chunk
    scores[rng.random(scores.shape) < 0.1] = -np.inf
    expected = np.argsort(-scores, axis=1, kind="stable")
    for k in (1, 5, 20, 57, 80):
        np.testing.assert_array_equal(top_k_indices(scores, k), expected[:, :min(k, 57)])


def test_integer_scores_and_bad_scores():
    np.testing.assert_array_equal(top_k_indices(np.array([[1, 3, 2]], dtype=np.uint8), 2), [[1, 2]])
    with pytest.raises(ValueError, match="NaN.*query 1"):
        top_k_indices(np.array([[0.0, 1.0], [np.nan, 1.0]]))
    with pytest.raises(ValueError, match="matrix"):
        top_k_indices(np.zeros(5))
    with pytest.raises(ValueError, match="same shape"):
        attribute_metrics(SCORES, GRADES[:, :4])


def test_metrics_from_top_k_equal_metrics_from_scores():
    rng = np.random.default_rng(1)
    scores = rng.normal(size=(20, 300))
    grades = rng.integers(0, 3, size=(20, 300))
    from_scores = attribute_metrics(scores, grades).per_query
    from_top_k = attribute_metrics_from_top_k(top_k_indices(scores, 100), grades).per_query
    for name in ("ndcg@10", "recall@100", "mrr"):
        np.testing.assert_allclose(from_top_k[name], from_scores[name])


def test_top_k_padding_counts_as_nothing_retrieved():
    # Query 0 retrieved only p3 (grade 2), then empty slots; query 1 only p1 (grade 0).
    top_k = np.array([[3, PADDING, PADDING], [1, PADDING, PADDING]])
    result = attribute_metrics_from_top_k(top_k, GRADES)
    np.testing.assert_allclose(result.per_query["mrr"], [1.0, 0.0])
    np.testing.assert_allclose(result.per_query["recall@100"], [0.5, 0.0])
    ideal0 = 3 + 3 / math.log2(3) + 1 / math.log2(4)
    np.testing.assert_allclose(result.per_query["ndcg@10"], [3 / ideal0, 0.0])


def test_top_k_rejects_duplicates_and_out_of_catalog_indices():
    with pytest.raises(ValueError, match="query 1 retrieves product 2 more than once"):
        attribute_metrics_from_top_k(np.array([[0, 1], [2, 2]]), GRADES)
    with pytest.raises(ValueError, match="index 5 at query 0, rank 2"):
        attribute_metrics_from_top_k(np.array([[0, 5], [1, 2]]), GRADES)
    with pytest.raises(ValueError, match="3 queries but grades have 2"):
        attribute_metrics_from_top_k(np.array([[0, 1], [1, 2], [2, 3]]), GRADES)


def test_identity_metrics_by_hand():
    scores = np.array([[0.9, 0.1, 0.2, 0.3],    # target p0 ranked 1st
                       [0.5, 0.4, 0.6, 0.7],    # target p1: order p3, p2, p0, p1 -> 4th
                       [0.0, 0.0, 0.0, 0.0]])   # target p2: all tied, index order -> 3rd
    result = identity_metrics(scores, [0, 1, 2])
    np.testing.assert_allclose(result.per_query["recall@1"], [1, 0, 0])
    np.testing.assert_allclose(result.per_query["recall@10"], [1, 1, 1])
    np.testing.assert_allclose(result.per_query["mrr"], [1, 1 / 4, 1 / 3])
    assert result.means["mrr"] == pytest.approx((1 + 1 / 4 + 1 / 3) / 3)
    at_2 = identity_metrics(scores, [0, 1, 2], recall_ks=(2,)).per_query["recall@2"]
    np.testing.assert_allclose(at_2, [1, 0, 0])


def test_identity_metrics_from_top_k_and_bad_targets():
    top_k = np.array([[2, 0, PADDING], [PADDING, PADDING, PADDING]])
    result = identity_metrics_from_top_k(top_k, [0, 1], num_products=3)
    np.testing.assert_allclose(result.per_query["recall@1"], [0, 0])
    np.testing.assert_allclose(result.per_query["mrr"], [1 / 2, 0])
    with pytest.raises(ValueError, match="target 7 of query 1"):
        identity_metrics_from_top_k(top_k, [0, 7], num_products=3)
    with pytest.raises(ValueError, match="one product index per query"):
        identity_metrics_from_top_k(top_k, [0], num_products=3)


def test_means_and_retrieval_metrics():
    result = attribute_metrics(SCORES, GRADES)
    assert result.num_queries == 2
    assert retrieval_metrics(SCORES, GRADES) == result.means
    assert set(result.means) == {"ndcg@10", "recall@100", "mrr"}
    empty = attribute_metrics(np.zeros((0, 5)), np.zeros((0, 5), dtype=np.int8))
    assert empty.num_queries == 0 and math.isnan(empty.means["mrr"])


def test_vectorised_metrics_equal_a_plain_loop_over_queries():
    rng = np.random.default_rng(2)
    scores = rng.integers(0, 6, size=(30, 140)).astype(np.float64)  # ties everywhere
    grades = rng.choice([0, 1, 2], p=[0.8, 0.1, 0.1], size=(30, 140))
    result = attribute_metrics(scores, grades).per_query
    for q in range(30):
        ranking = sorted(range(140), key=lambda j: (-scores[q, j], j))[:100]
        ranked = [grades[q, j] for j in ranking]
        dcg = sum((2 ** g - 1) / math.log2(r + 2) for r, g in enumerate(ranked[:10]))
        best = sorted(grades[q], reverse=True)[:10]
        ideal = sum((2 ** g - 1) / math.log2(r + 2) for r, g in enumerate(best))
        num_2 = int((grades[q] == 2).sum())
        recall = sum(g == 2 for g in ranked) / min(num_2, 100) if num_2 else 0.0
        mrr = next((1 / (r + 1) for r, g in enumerate(ranked) if g == 2), 0.0)
        assert result["ndcg@10"][q] == pytest.approx(dcg / ideal if ideal else 0.0)
        assert result["recall@100"][q] == pytest.approx(recall)
        assert result["mrr"][q] == pytest.approx(mrr)


def metrics_from_topk(topk, grades):
    """The protocol means of a model that answers with top-k indices (an exported model)."""
    return attribute_metrics_from_top_k(topk, grades, retrieved=RETRIEVED).means


def test_metrics_from_topk_is_retrieval_metrics_on_the_same_ranking():
    rng = np.random.default_rng(3)
    scores = rng.integers(0, 5, size=(25, 260)).astype(np.float32)  # ties across the top-100 cut
    grades = rng.choice([0, 1, 2], p=[0.7, 0.15, 0.15], size=(25, 260)).astype(np.int8)
    expected = retrieval_metrics(scores, grades)
    assert set(expected) == {"ndcg@10", "recall@100", "mrr"}
    assert all(isinstance(value, float) for value in expected.values())
    assert metrics_from_topk(top_k_indices(scores, 100), grades) == pytest.approx(expected)
    # A different ranking gives different numbers (the comparison above is not vacuous).
    assert metrics_from_topk(top_k_indices(-scores, 100), grades) != pytest.approx(expected)


def test_hand_example_means_through_the_public_api():
    # Means of the per-query values worked out above: query 0 NDCG@10 uses ranks [0, 2, 1, 0, 2],
    # query 1 ranks [0, 0, 2, 0, 1]; both find every grade-2 product; MRR (1/2 + 1/3) / 2.
    ndcg0 = (3 / math.log2(3) + 1 / math.log2(4) + 3 / math.log2(6)) / (3 + 3 / math.log2(3) + 1 / math.log2(4))
    ndcg1 = (3 / math.log2(4) + 1 / math.log2(6)) / (3 + 1 / math.log2(3))
    expected = {"ndcg@10": (ndcg0 + ndcg1) / 2, "recall@100": 1.0, "mrr": (1 / 2 + 1 / 3) / 2}
    assert retrieval_metrics(SCORES, GRADES) == pytest.approx(expected)
    assert metrics_from_topk(top_k_indices(SCORES, 5), GRADES) == pytest.approx(expected)
    # Deeper cut-offs than the default 100 retrieve deeper instead of silently truncating.
    scores = -np.arange(150, dtype=np.float64)[None, :]
    grades = np.zeros((1, 150), dtype=np.int8)
    grades[0, 120] = 2
    assert retrieval_metrics(scores, grades, k_recall=150)["recall@150"] == 1.0


def test_metric_curves_meet_the_protocol_numbers_and_a_hand_example():
    from tfmmsearch.evaluation.metrics import metric_curves

    rng = np.random.default_rng(3)
    grades = rng.integers(0, 3, size=(20, 150))
    grades[:, 0] = 2  # every query answerable
    scores = rng.standard_normal((20, 150))
    top_k = top_k_indices(scores)
    curves = metric_curves(top_k, grades, [1, 10, 100])
    protocol = retrieval_metrics(scores, grades)
    assert curves["k"] == [1, 10, 100]
    assert curves["ndcg"][1] == pytest.approx(protocol["ndcg@10"])
    assert curves["recall"][2] == pytest.approx(protocol["recall@100"])

    # One query: ranked grades [0, 2, 1]; two grade-2 products in the catalog (one never retrieved).
    hand_grades = np.array([[0, 2, 1, 2]])
    hand_top = np.array([[0, 1, 2]])
    hand = metric_curves(hand_top, hand_grades, [1, 2, 3])
    assert hand["recall"] == pytest.approx([0.0, 0.5, 0.5])  # min(#grade-2, k) = 1, 2, 2
    ideal_2 = 3 + 3 / math.log2(3)
    assert hand["ndcg"][1] == pytest.approx((3 / math.log2(3)) / ideal_2)
