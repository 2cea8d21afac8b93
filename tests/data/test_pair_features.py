"""Lexical pair features: hand-computed values on a small case, the tokeniser, and that they
drive regression-EM end to end."""

from __future__ import annotations

import logging
from datetime import datetime, timezone

import numpy as np
import pytest

from tfmmsearch.data.pair_features import FEATURE_NAMES, lexical_pair_features, tokens
from tfmmsearch.data.position_bias import estimate_position_bias
from tfmmsearch.data.search_log import Session

TITLES = {"a": "Nike Running Shoes", "b": "Blue Nike Shoes for Men", "c": "Red T-Shirt"}
L = np.log1p


def test_tokens_are_casefolded_letter_and_digit_runs():
    assert tokens("T-Shirt_XL Café 2-pack!") == ["t", "shirt", "xl", "café", "2", "pack"]
    assert tokens("") == [] and tokens("!!!") == []


def test_values_by_hand(caplog):
    features = lexical_pair_features(TITLES)
    queries = ["blue nike shoes"] * 3 + ["t shirt", "t shirt"]
    with caplog.at_level(logging.WARNING, logger="tfmmsearch.data.pair_features"):
        values = features(queries, ["a", "b", "c", "c", "unknown"])
    # coverage, all_covered, coverage_vs_best, title_precision, log_title, log_query
    expected = [[2 / 3, 0, 2 / 3, 2 / 3, L(3), L(3)],  # nike, shoes of blue nike shoes
                [1, 1, 1, 3 / 5, L(5), L(3)],  # every word; 3 of the title's 5
                [0, 0, 0, 0, L(3), L(3)],
                [1, 1, 1, 2 / 3, L(3), L(2)],  # "t" and "shirt" of red t shirt
                [0, 0, 0, 0, 0, L(2)]]  # no title: covers nothing
    assert values.shape == (5, len(FEATURE_NAMES)) and values.dtype == np.float64
    np.testing.assert_allclose(values, expected)
    assert "1 product id(s) have no title" in caplog.text


def test_best_coverage_is_per_query_tokens_and_repeats_count_once():
    features = lexical_pair_features({"x": "Shoes", "y": "Nike Shoes", "z": "Nike"})
    values = features(["Nike  Shoes", "nike shoes", "shoes shoes", "!!!"], ["x", "z", "x", "y"])
    # the first two are one query (the same tokens), whose best coverage is 1/2
    np.testing.assert_allclose(values[:2, 2], [1.0, 1.0])
    np.testing.assert_allclose(values[2, [0, 1, 2, 5]], [1.0, 1.0, 1.0, L(1)])
    np.testing.assert_allclose(values[3], [0, 0, 0, 0, L(2), 0])  # a query without words


def test_mismatched_lists_are_refused():
    with pytest.raises(ValueError, match="2 queries but 1 product ids"):
        lexical_pair_features(TITLES)(["a", "b"], ["a"])


def test_they_drive_regression_em():
    when = datetime(2026, 10, 1, tzinfo=timezone.utc)
    sessions = [Session("s0", when, "nike shoes", ("b", "a", "c"), ("b",), ()),
                Session("s1", when, "red shirt", ("c", "a"), ("c",), ())]
    bias = estimate_position_bias(sessions, iterations=5,
                                  pair_features=lexical_pair_features(TITLES))
    assert bias.method == "regression_em" and bias.propensities[0] == 1.0
