"""The judged task with a fake system whose rankings are known, and its report columns."""

import math

import numpy as np
import pytest

from tfmmsearch.data.judgments import JudgedQuery
from tfmmsearch.evaluation.judged import evaluate_judged, judged_grades
from tfmmsearch.evaluation.protocol import EvaluationRow
from tfmmsearch.evaluation.report import markdown_table, text_table

# 120 products, so that a product can rank below the top 100 that count as retrieved.
PRODUCT_IDS = [f"p{i}" for i in range(120)]
TITLES = [f"title {i}" for i in range(120)]
IMAGES = [f"{i}.jpg" for i in range(120)]

QUERIES = [
    # graded; p0 (first in the ranking) is unjudged; "gone" is not in the catalog
    JudgedQuery("navy tee", {"p1": 3, "p3": 1, "p110": 2, "p5": 0, "gone": 2}, 1),
    JudgedQuery("red cap", {"p7": 1, "p8": 0}, 2),  # binary
    JudgedQuery("old boots", {"gone": 1, "gone too": 3, "p9": 0}, 3),  # relevant ones all gone
]
# Scores by product; every other product scores 0, and ties rank by catalog index.
SCORES = {"navy tee": {"p0": 5.0, "p3": 4.0, "p1": 3.0}, "red cap": {"p8": 2.0, "p7": 1.0},
          "old boots": {}}


class FixedSystem:
    name = "fixed"

    def __init__(self):
        self.calls = []

    def score(self, query_texts, titles, image_paths, item_mode):
        self.calls.append((list(query_texts), list(titles), list(image_paths), item_mode))
        column = {pid: index for index, pid in enumerate(PRODUCT_IDS)}
        scores = np.zeros((len(query_texts), len(titles)))
        for row, text in enumerate(query_texts):
            for pid, value in SCORES[text].items():
                scores[row, column[pid]] = value
        return scores


def discount(rank: int) -> float:
    return 1 / math.log2(rank + 1)


# "navy tee" ranks p0 (grade 0), p3 (1), p1 (3), then p2, p4, p5, ... in index order: p110 is
# at rank 111, outside the retrieved 100. The ideal ranks the catalog's grades 3, 2, 1 first.
NAVY_NDCG = ((1 * discount(2) + 7 * discount(3))
             / (7 * discount(1) + 3 * discount(2) + 1 * discount(3)))
NAVY_RECALL = 2 / 3  # p3 and p1 of p1, p3, p110 ("gone" is not in the catalog)
NAVY_MRR = 1 / 2  # p3, grade 1
# "red cap" ranks p8 (0), p7 (1): DCG 1 / log2(3) against an ideal of 1.
CAP_NDCG, CAP_RECALL, CAP_MRR = discount(2), 1.0, 1 / 2


def _judged(**kwargs) -> dict:
    (row,) = evaluate_judged([FixedSystem()], QUERIES, PRODUCT_IDS, TITLES, IMAGES, **kwargs)
    return row


def test_metrics_by_hand():
    result = _judged()["judged"]
    assert result["ndcg@10"] == pytest.approx((NAVY_NDCG + CAP_NDCG) / 2)
    assert result["recall@100"] == pytest.approx((NAVY_RECALL + CAP_RECALL) / 2)
    assert result["mrr"] == pytest.approx((NAVY_MRR + CAP_MRR) / 2)
    assert (result["num_queries"], result["num_dropped"], result["relevant_grade"]) == (2, 1, 1)


def test_products_missing_from_the_catalog_are_counted():
    result = _judged()["judged"]
    assert (result["missing_products"], result["missing_judgments"]) == (2, 3)  # gone, gone too
    grades = judged_grades(QUERIES, PRODUCT_IDS)
    assert grades.missing == [("gone",), (), ("gone", "gone too")]
    assert grades.matrix.shape == (3, 120) and grades.matrix[0, 110] == 2
    assert grades.matrix[0].sum() == 3 + 1 + 2  # unjudged products are 0


def test_a_stricter_relevant_grade():
    result = _judged(relevant_grade=2)["judged"]
    # "navy tee": relevant p1 (rank 3) and p110 (not retrieved); NDCG does not depend on it.
    assert result["ndcg@10"] == pytest.approx(NAVY_NDCG)
    assert result["recall@100"] == pytest.approx(1 / 2)
    assert result["mrr"] == pytest.approx(1 / 3)
    assert (result["num_queries"], result["num_dropped"]) == (1, 2)  # "red cap" has no grade 2
    with pytest.raises(ValueError, match="relevant_grade must be an integer >= 1"):
        _judged(relevant_grade=0)


def test_the_system_ranks_the_whole_catalog_once_with_titles():
    system = FixedSystem()
    evaluate_judged([system], QUERIES, PRODUCT_IDS, TITLES, IMAGES,
                    subsets={"brand": ["navy tee"], "unseen": ["red cap"]})
    assert system.calls == [(["navy tee", "red cap"], TITLES, IMAGES, "full")]  # no dropped query


def test_subsets_are_tasks_of_their_own():
    row = _judged(subsets={"brand": ["NAVY  Tee", "old boots"], "unseen": ["red cap"]})
    assert list(row.results) == ["judged", "judged:brand", "judged:unseen"]
    brand, unseen = row["judged:brand"], row["judged:unseen"]
    assert brand["ndcg@10"] == pytest.approx(NAVY_NDCG) and brand["mrr"] == pytest.approx(NAVY_MRR)
    assert (brand["num_queries"], brand["num_dropped"], brand["missing_products"],
            brand["missing_judgments"]) == (1, 1, 2, 3)
    assert unseen["recall@100"] == pytest.approx(CAP_RECALL)
    assert (unseen["num_queries"], unseen["missing_products"]) == (1, 0)
    with pytest.raises(ValueError, match="subset 'brand': 'blue jeans' is not a judged query"):
        _judged(subsets={"brand": ["blue jeans"]})
    with pytest.raises(TypeError, match="collection of query texts, not one string"):
        _judged(subsets={"brand": "navy tee"})


def test_inputs_are_checked():
    with pytest.raises(ValueError, match="must describe the same products"):
        evaluate_judged([FixedSystem()], QUERIES, PRODUCT_IDS[:-1], TITLES, IMAGES)
    with pytest.raises(ValueError, match="'p1' appears twice"):
        judged_grades(QUERIES, ["p1", "p1"])
    with pytest.raises(TypeError, match="not a SearchSystem"):
        evaluate_judged([object()], QUERIES, PRODUCT_IDS, TITLES, IMAGES)


def test_report_shows_judged_tasks_beside_the_protocol_tasks():
    judged = _judged(subsets={"brand": ["navy tee"]})
    both = EvaluationRow("fixed", {"full": {"ndcg@10": 0.5, "recall@100": 0.6, "mrr": 0.7,
                                            "num_queries": 9, "num_dropped": 0},
                                   **judged.results})
    header = markdown_table([both]).splitlines()[0]
    assert header.startswith("| system | full NDCG@10 |") and "t2i MRR" in header
    assert header.endswith("| t2i MRR | judged NDCG@10 | judged R@100 | judged MRR "
                           "| judged:brand NDCG@10 | judged:brand R@100 | judged:brand MRR |")
    cells = markdown_table([both]).splitlines()[2].split(" | ")
    assert cells[-6] == f"{judged['judged']['ndcg@10']:.3f}"

    only = markdown_table([judged]).splitlines()[0]  # judged tasks only: no empty protocol columns
    assert only.startswith("| system | judged NDCG@10 |") and "full" not in only
    text = text_table([judged])
    assert ("judged: 2 queries (1 dropped: no product of grade >= 1 in the catalog); 2 judged "
            "products not in the catalog (3 judgments)") in text
    assert "judged:brand: 1 queries (0 dropped" in text
