"""Lexical features of (query, product) pairs: what regression-EM's relevance model sees.

Regression-EM (`position_bias.estimate_position_bias(..., pair_features=...)`) needs features
that say how well a product answers a query *without* saying where it was shown, so that alike
pairs at different ranks share a relevance. For product search the title's coverage of the
query's words is the obvious such signal. Everything here is computed from the query and the
title alone; the only cross-pair feature, coverage relative to the query's best, compares a
pair with the other products shown for the same query, whatever their ranks.

Tokens are maximal runs of letters and digits (the regex `[^\\W_]+`, any script) of the
casefolded text, so "T-Shirt" is "t", "shirt". Query tokens are counted once each.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping

import numpy as np

logger = logging.getLogger(__name__)

_WORD = re.compile(r"[^\W_]+")

# The columns `lexical_pair_features` returns, in order.
FEATURE_NAMES = (
    "coverage",  # share of the query's distinct tokens found in the title (0 for no tokens)
    "all_covered",  # 1.0 when every query token is in the title (and there is at least one)
    "coverage_vs_best",  # coverage / the best coverage among the query's pairs (0 when that is 0)
    "title_precision",  # share of the title's distinct tokens that are query tokens
    "log_title_tokens",  # log(1 + tokens in the title)
    "log_query_tokens",  # log(1 + distinct tokens in the query)
)


def tokens(text: str) -> list[str]:
    """The casefolded letter-and-digit runs of `text`, in order (see the module docstring)."""
    return _WORD.findall(text.casefold()) if text else []


def lexical_pair_features(titles_by_id: Mapping[str, str]
                          ) -> Callable[[list[str], list[str]], np.ndarray]:
    """A `pair_features` for regression-EM: (queries, product_ids) -> float64 [n, 6], the
    columns of FEATURE_NAMES. No constant column: the regression has its own intercept.

    A product missing from `titles_by_id` counts as an empty title (nothing covered, length 0),
    and how many pairs that was is logged, since it weakens the estimate. "The query's pairs"
    (for coverage_vs_best) are the given pairs whose queries have the same tokens.
    """
    title_tokens: dict[str, tuple[frozenset[str], int]] = {}

    def title(product_id: str) -> tuple[frozenset[str], int]:
        found = title_tokens.get(product_id)
        if found is None:
            words = tokens(titles_by_id.get(product_id, ""))
            found = title_tokens[product_id] = (frozenset(words), len(words))
        return found

    def features(queries: list[str], product_ids: list[str]) -> np.ndarray:
        if len(queries) != len(product_ids):
            raise ValueError(f"got {len(queries)} queries but {len(product_ids)} product ids")
        query_tokens: dict[str, frozenset[str]] = {}
        group_of: dict[frozenset[str], int] = {}
        n = len(queries)
        matched = np.zeros(n)
        query_size = np.zeros(n)
        title_size = np.zeros(n)
        title_distinct = np.zeros(n)
        group = np.zeros(n, dtype=np.int64)
        for i, (query, product_id) in enumerate(zip(queries, product_ids)):
            words = query_tokens.get(query)
            if words is None:
                words = query_tokens[query] = frozenset(tokens(query))
            group[i] = group_of.setdefault(words, len(group_of))
            title_words, title_length = title(product_id)
            matched[i] = len(words & title_words)
            query_size[i], title_size[i] = len(words), title_length
            title_distinct[i] = len(title_words)
        missing = sum(product_id not in titles_by_id for product_id in set(product_ids))
        if missing:
            logger.warning("lexical pair features: %d product id(s) have no title; their pairs "
                           "count as covering nothing", missing)
        coverage = np.divide(matched, query_size, out=np.zeros(n), where=query_size > 0)
        best = np.zeros(len(group_of))
        np.maximum.at(best, group, coverage)
        return np.column_stack([
            coverage,
            ((matched == query_size) & (query_size > 0)).astype(np.float64),
            np.divide(coverage, best[group], out=np.zeros(n), where=best[group] > 0),
            np.divide(matched, title_distinct, out=np.zeros(n), where=title_distinct > 0),
            np.log1p(title_size),
            np.log1p(query_size),
        ])

    return features
