"""Search-log training pairs: grades, kind weights, position-bias weights, skipped products."""

from __future__ import annotations

from datetime import datetime, timezone

import numpy as np
import pytest

from tfmmsearch.data.log_pairs import (
    CLICK_GRADE,
    PURCHASE_GRADE,
    log_grades,
    log_pairs,
    skipped_products,
)
from tfmmsearch.data.position_bias import PositionBias
from tfmmsearch.data.search_log import Session

WHEN = datetime(2026, 10, 1, tzinfo=timezone.utc)


def session(query, shown, clicked=(), purchased=(), sid="s"):
    return Session(sid, WHEN, query, tuple(shown), tuple(clicked), tuple(purchased))


SHOWN = ("a", "b", "c", "d", "e")


def test_skip_above_and_the_next_one_below_when_nothing_above_was_skipped():
    s = session("q", SHOWN, clicked=("a", "c", "e"))
    assert skipped_products(s, 3) == ("b",)  # a was clicked, b skipped
    assert skipped_products(s, 5) == ("b", "d")
    assert skipped_products(s, 1) == ("b",)  # the first skipped below
    everything = session("q", ("a", "b"), clicked=("a", "b"))
    assert skipped_products(everything, 1) == ()


def test_grades_and_kind_weights():
    sessions = [session("red dress", SHOWN, clicked=("b", "d"), purchased=("d",)),
                session("tees", SHOWN)]  # no click: no pair
    pairs = log_pairs(sessions, purchase_weight=3.0, click_weight=1.0)
    assert [(p.product_id, p.grade, p.weight, p.rank) for p in pairs] == [
        ("b", CLICK_GRADE, 1.0, 2), ("d", PURCHASE_GRADE, 3.0, 4)]
    assert pairs[1].skipped == ("a", "c")
    assert all(p.query == "red dress" for p in pairs)


def test_zero_weights_drop_or_demote_a_kind():
    sessions = [session("q", SHOWN, clicked=("b", "d"), purchased=("d",))]
    only_purchases = log_pairs(sessions, purchase_weight=2.0, click_weight=0.0)
    assert [(p.product_id, p.grade) for p in only_purchases] == [("d", PURCHASE_GRADE)]
    clicks_only = log_pairs(sessions, purchase_weight=0.0, click_weight=1.0)
    assert [(p.product_id, p.grade) for p in clicks_only] == [("b", CLICK_GRADE),
                                                              ("d", CLICK_GRADE)]


def test_position_bias_multiplies_clipped_inverse_propensities():
    bias = PositionBias(propensities=np.array([1.0, 0.5, 0.25, 0.1, 0.05]),
                        impressions=np.full(5, 10), clicks=np.full(5, 1), iterations=3,
                        converged=True)
    sessions = [session("q", SHOWN, clicked=("a", "b", "e"), purchased=("b",))]
    pairs = log_pairs(sessions, purchase_weight=3.0, click_weight=1.0, position_bias=bias,
                      max_propensity_weight=10.0)
    weights = {p.product_id: p.weight for p in pairs}
    assert weights == pytest.approx({"a": 1.0, "b": 3.0 * 2.0, "e": 10.0})  # 1/0.05 clipped


def test_log_grades_keep_the_best_grade_per_query_and_product():
    sessions = [session("Red  Dress", SHOWN, clicked=("a",), sid="1"),
                session("red dress", SHOWN, clicked=("a", "b"), purchased=("a",), sid="2"),
                session("tees", SHOWN, sid="3")]  # no click: not a validation query
    grades = log_grades(sessions)
    assert grades.queries == ["Red  Dress"]
    assert grades.grades == [{"a": PURCHASE_GRADE, "b": CLICK_GRADE}]
    np.testing.assert_array_equal(grades.matrix(["b", "z", "a"]), [[1, 0, 2]])
