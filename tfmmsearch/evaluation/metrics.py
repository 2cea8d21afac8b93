"""Ranking metrics of the search quality protocol, vectorised over queries.

Every metric starts from one ranking: products by descending score, ties broken by the lower
product index, so two runs over the same scores always agree (a system that scores
everything equal gets the catalog order, not a lucky shuffle). Only the top `RETRIEVED` (100)
products count as retrieved, as in PROTOCOL.md.

Attribute tasks use graded relevance (0/1/2): NDCG@k with gain 2^grade - 1 and an ideal DCG
from all of the query's catalog grades (not only the retrieved ones, or a system would be
rewarded for retrieving little), Recall@k of grade-2 products over min(#grade-2, k), and MRR
of the first grade-2 product in the retrieved list. The title_to_image task has one relevant
item per query (the product itself): Recall@1/@10 and MRR against a target index.

Each metric is available from a score matrix [Q, P] or from precomputed top-k product
indices [Q, K], so an exported model that answers with top-k ids is evaluated exactly like
the full score matrix of an in-process model.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

RETRIEVED = 100
RELEVANT_GRADE = 2
NDCG_K = 10
RECALL_K = 100
IDENTITY_RECALL_KS = (1, 10)
PADDING = -1  # a top-k slot with no product (an exported model returned fewer than K ids)

# Rows of the score matrix handled at once: bounds the temporaries of top-k selection
# (a few bytes x rows x catalog size) for 1,000+ queries over a 12,000-product catalog.
_ROW_CHUNK = 256


@dataclass(frozen=True)
class MetricResult:
    """Per-query metric arrays (each [Q]) and their means."""

    per_query: dict[str, np.ndarray]

    @property
    def num_queries(self) -> int:
        return len(next(iter(self.per_query.values()))) if self.per_query else 0

    @property
    def means(self) -> dict[str, float]:
        """Metric -> mean over queries (NaN when there are no queries)."""
        return {name: float(values.mean()) if len(values) else float("nan")
                for name, values in self.per_query.items()}


def top_k_indices(scores: np.ndarray, k: int = RETRIEVED) -> np.ndarray:
    """Product indices [Q, min(k, P)] by descending score, ties by lower index.

    Selection is a partition plus a sort of k items per row, not a full sort of the
    catalog; -inf is a legal score (ranked last), NaN is an error.
    """
    scores = _as_score_matrix(scores)
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    num_queries, num_products = scores.shape
    k = min(k, num_products)
    result = np.empty((num_queries, k), dtype=np.int64)
    for start in range(0, num_queries, _ROW_CHUNK):
        block = scores[start:start + _ROW_CHUNK]
        result[start:start + len(block)] = _top_k_block(block, k)
    return result


def _as_score_matrix(scores: np.ndarray) -> np.ndarray:
    scores = np.asarray(scores)
    if scores.ndim != 2:
        raise ValueError(f"scores must be a [queries, products] matrix, got shape {scores.shape}")
    if not np.issubdtype(scores.dtype, np.floating):
        if not (np.issubdtype(scores.dtype, np.integer) or scores.dtype == np.bool_):
            raise ValueError(f"scores must be numeric, got dtype {scores.dtype}")
        scores = scores.astype(np.float64)  # negating unsigned integers would wrap around
    nan_rows = np.flatnonzero(np.isnan(scores).any(axis=1))
    if len(nan_rows):
        raise ValueError(f"scores contain NaN in {len(nan_rows)} queries (first: query {nan_rows[0]})")
    return scores


def _top_k_block(block: np.ndarray, k: int) -> np.ndarray:
    if len(block) == 0 or block.shape[1] == 0:
        return np.empty((len(block), k), dtype=np.int64)
    num_products = block.shape[1]
    if k < num_products:
        # The k-th largest score per row: everything above it is in, and among the products
        # equal to it the lowest indices fill the remaining slots.
        threshold = np.partition(block, num_products - k, axis=1)[:, num_products - k][:, None]
        above = block > threshold
        tied = block == threshold
        slots_left = k - above.sum(axis=1, keepdims=True)
        chosen = above | (tied & (np.cumsum(tied, axis=1) <= slots_left))
        candidates = np.nonzero(chosen)[1].reshape(len(block), k)  # ascending index per row
    else:
        candidates = np.broadcast_to(np.arange(num_products), block.shape)
    candidate_scores = np.take_along_axis(block, candidates, axis=1)
    order = np.argsort(-candidate_scores, axis=1, kind="stable")  # stable keeps index order on ties
    return np.take_along_axis(candidates, order, axis=1)


def _as_grades(grades: np.ndarray) -> np.ndarray:
    grades = np.asarray(grades)
    if grades.ndim != 2:
        raise ValueError(f"grades must be a [queries, products] matrix, got shape {grades.shape}")
    if not (np.issubdtype(grades.dtype, np.integer) or grades.dtype == np.bool_):
        raise ValueError(f"grades must be integers (0/1/2), got dtype {grades.dtype}")
    if grades.size and grades.min() < 0:
        raise ValueError("grades must not be negative")
    return grades.astype(np.int16, copy=False)


def _check_top_k(top_k: np.ndarray, num_products: int) -> np.ndarray:
    top_k = np.asarray(top_k)
    if top_k.ndim != 2:
        raise ValueError(f"top-k indices must be a [queries, k] matrix, got shape {top_k.shape}")
    if top_k.size == 0:
        return top_k.astype(np.int64)
    if not np.issubdtype(top_k.dtype, np.integer):
        raise ValueError(f"top-k indices must be integers, got dtype {top_k.dtype}")
    bad = (top_k < PADDING) | (top_k >= num_products)
    if bad.any():
        row, col = np.argwhere(bad)[0]
        raise ValueError(f"top-k index {top_k[row, col]} at query {row}, rank {col + 1} is outside "
                         f"the catalog of {num_products} products (use {PADDING} for an empty slot)")
    ordered = np.sort(top_k, axis=1)
    duplicate = (ordered[:, 1:] == ordered[:, :-1]) & (ordered[:, 1:] != PADDING)
    if duplicate.any():
        row, col = np.argwhere(duplicate)[0]
        raise ValueError(f"query {row} retrieves product {ordered[row, col + 1]} more than once")
    return top_k.astype(np.int64, copy=False)


def _discounts(k: int) -> np.ndarray:
    """1 / log2(rank + 1) for ranks 1..k."""
    return 1.0 / np.log2(np.arange(2, k + 2, dtype=np.float64))


def _dcg(ranked_grades: np.ndarray) -> np.ndarray:
    gains = np.exp2(ranked_grades.astype(np.float64)) - 1.0
    return gains @ _discounts(ranked_grades.shape[1])


def _ideal_grades(grades: np.ndarray, k: int) -> np.ndarray:
    """The k largest grades of each row, descending: the best possible ranking."""
    k = min(k, grades.shape[1])
    if k == 0:
        return np.zeros((len(grades), 0), dtype=grades.dtype)
    if k < grades.shape[1]:
        grades = -np.partition(-grades, k - 1, axis=1)[:, :k]
    return -np.sort(-grades, axis=1)[:, :k]


def attribute_metrics_from_top_k(top_k: np.ndarray, grades: np.ndarray, *, ndcg_k: int = NDCG_K,
                                 recall_k: int = RECALL_K, retrieved: int = RETRIEVED,
                                 relevant_grade: int = RELEVANT_GRADE) -> MetricResult:
    """NDCG@ndcg_k, Recall@recall_k and MRR from ranked product indices [Q, K] and grades [Q, P].

    Columns past `retrieved` are ignored; `PADDING` (-1) marks an empty slot. A query with no
    relevant product scores 0 on every metric (the protocol drops such queries beforehand).
    """
    grades = _as_grades(grades)
    top_k = _check_top_k(top_k, grades.shape[1])
    if len(top_k) != len(grades):
        raise ValueError(f"top-k has {len(top_k)} queries but grades have {len(grades)}")
    top_k = top_k[:, :retrieved]
    ranked = np.take_along_axis(grades, np.maximum(top_k, 0), axis=1)
    ranked = np.where(top_k == PADDING, 0, ranked)

    dcg = _dcg(ranked[:, :ndcg_k])
    ideal = _dcg(_ideal_grades(grades, ndcg_k))
    ndcg = np.divide(dcg, ideal, out=np.zeros_like(dcg), where=ideal > 0)

    relevant = ranked >= relevant_grade
    num_relevant = (grades >= relevant_grade).sum(axis=1)
    denominator = np.minimum(num_relevant, recall_k).astype(np.float64)
    hits = relevant[:, :recall_k].sum(axis=1).astype(np.float64)
    recall = np.divide(hits, denominator, out=np.zeros_like(hits), where=denominator > 0)

    return MetricResult({f"ndcg@{ndcg_k}": ndcg, f"recall@{recall_k}": recall,
                         "mrr": _reciprocal_rank(relevant)})


def attribute_metrics(scores: np.ndarray, grades: np.ndarray, *, ndcg_k: int = NDCG_K,
                      recall_k: int = RECALL_K, retrieved: int = RETRIEVED,
                      relevant_grade: int = RELEVANT_GRADE) -> MetricResult:
    """NDCG@ndcg_k, Recall@recall_k and MRR of the ranking of `scores` [Q, P] under `grades` [Q, P]."""
    scores = _as_score_matrix(scores)
    grades = np.asarray(grades)
    if scores.shape != grades.shape:
        raise ValueError(f"scores {scores.shape} and grades {grades.shape} must have the same shape")
    return attribute_metrics_from_top_k(top_k_indices(scores, retrieved), grades, ndcg_k=ndcg_k,
                                        recall_k=recall_k, retrieved=retrieved,
                                        relevant_grade=relevant_grade)


def retrieval_metrics(scores: np.ndarray, grades: np.ndarray, k_ndcg: int = NDCG_K,
                      k_recall: int = RECALL_K,
                      relevant_grade: int = RELEVANT_GRADE) -> dict[str, float]:
    """Mean NDCG@10, Recall@100 and MRR: the protocol's numbers for one score matrix.

    The retrieved list is the top 100, or deeper when a cut-off asks for more; Recall and MRR
    count products graded `relevant_grade` or more."""
    return attribute_metrics(scores, grades, ndcg_k=k_ndcg, recall_k=k_recall,
                             retrieved=max(RETRIEVED, k_ndcg, k_recall),
                             relevant_grade=relevant_grade).means


def _reciprocal_rank(relevant: np.ndarray) -> np.ndarray:
    """1 / rank of the first True per row, 0 where a row has none."""
    if relevant.shape[1] == 0:
        return np.zeros(len(relevant))
    first = np.argmax(relevant, axis=1)
    found = relevant[np.arange(len(relevant)), first]
    return np.where(found, 1.0 / (first + 1.0), 0.0)


def identity_metrics_from_top_k(top_k: np.ndarray, targets: Sequence[int] | np.ndarray,
                                num_products: int, *, recall_ks: Sequence[int] = IDENTITY_RECALL_KS,
                                retrieved: int = RETRIEVED) -> MetricResult:
    """Recall@k and MRR when each query has one relevant product, `targets[q]`."""
    top_k = _check_top_k(top_k, num_products)
    targets = _check_targets(targets, len(top_k), num_products)
    hits = top_k[:, :retrieved] == targets[:, None]
    found = hits.any(axis=1)
    position = np.argmax(hits, axis=1) if hits.shape[1] else np.zeros(len(hits), dtype=np.int64)
    per_query = {f"recall@{k}": (found & (position < k)).astype(np.float64) for k in recall_ks}
    per_query["mrr"] = _reciprocal_rank(hits)
    return MetricResult(per_query)


def identity_metrics(scores: np.ndarray, targets: Sequence[int] | np.ndarray, *,
                     recall_ks: Sequence[int] = IDENTITY_RECALL_KS,
                     retrieved: int = RETRIEVED) -> MetricResult:
    """Recall@k and MRR of `scores` [Q, P] when query q's only relevant product is `targets[q]`."""
    scores = _as_score_matrix(scores)
    return identity_metrics_from_top_k(top_k_indices(scores, retrieved), targets, scores.shape[1],
                                       recall_ks=recall_ks, retrieved=retrieved)


def _check_targets(targets, num_queries: int, num_products: int) -> np.ndarray:
    targets = np.asarray(targets)
    if targets.shape != (num_queries,):
        raise ValueError(f"targets must have one product index per query ({num_queries}), "
                         f"got shape {targets.shape}")
    if num_queries and not np.issubdtype(targets.dtype, np.integer):
        raise ValueError(f"targets must be integer product indices, got dtype {targets.dtype}")
    bad = np.flatnonzero((targets < 0) | (targets >= num_products))
    if len(bad):
        raise ValueError(f"target {targets[bad[0]]} of query {bad[0]} is outside the catalog "
                         f"of {num_products} products")
    return targets.astype(np.int64, copy=False)


def metric_curves(top_k: np.ndarray, grades: np.ndarray, ks: Sequence[int]) -> dict[str, list[float]]:
    """Mean NDCG@k and Recall@k (grade-2 products) for each k in `ks`: the metric-vs-K curves.

    Reads the same ranked indices [Q, K] as `attribute_metrics_from_top_k`, so the k=10 NDCG
    and k=100 recall points equal the protocol's numbers.
    """
    curves: dict[str, list[float]] = {"k": [int(k) for k in ks], "ndcg": [], "recall": []}
    for k in ks:
        means = attribute_metrics_from_top_k(top_k, grades, ndcg_k=k, recall_k=k,
                                             retrieved=max(RETRIEVED, k)).means
        curves["ndcg"].append(means[f"ndcg@{k}"])
        curves["recall"].append(means[f"recall@{k}"])
    return curves
