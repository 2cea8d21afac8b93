"""Position-bias estimation: EM recovers a known examination curve from simulated clicks where
the raw CTR curve does not, regression-EM does so where every query is always ranked the same
way (which defeats the free EM), and the weights, serialisation and input errors behave."""

from __future__ import annotations

import logging
from datetime import datetime, timezone

import numpy as np
import pytest

from tfmmsearch.data.position_bias import PositionBias, estimate_position_bias
from tfmmsearch.data.search_log import Session

WHEN = datetime(2026, 10, 1, tzinfo=timezone.utc)
POWER_CURVE = 1.0 / np.arange(1, 11) ** 0.7
STEP_CURVE = np.array([1.0, 1.0, 1.0, 0.5, 0.5, 0.5, 0.2, 0.2, 0.2, 0.2])


def _session(n: int, query: str, shown, clicked=()) -> Session:
    return Session(f"s{n}", WHEN, query, tuple(shown), tuple(clicked), ())


def simulate(theta: np.ndarray, sessions: int = 20_000, queries: int = 100,
             candidates: int = 30, noise: float = 0.2, seed: int = 0) -> list[Session]:
    """Clicks from P(click) = theta[rank] * gamma[query, product]. The logged ranking sorts by
    gamma plus per-session noise, so relevant products sit higher (confounding raw CTR) yet each
    pair is seen at several ranks (what lets EM separate the two); noise=0 ranks the same way
    every time."""
    rng = np.random.default_rng(seed)
    gamma = np.clip(rng.beta(0.5, 1.0, size=(queries, candidates)), 0.01, 0.95)
    query = rng.integers(queries, size=sessions)
    score = gamma[query] + rng.normal(0.0, noise, size=(sessions, candidates))
    order = np.argsort(-score, axis=1)[:, :len(theta)]
    clicks = rng.random(order.shape) < theta * np.take_along_axis(gamma[query], order, axis=1)
    log = []
    for n in range(sessions):
        shown = [f"q{query[n]}-p{product}" for product in order[n]]
        log.append(_session(n, f"query {query[n]}", shown,
                            [p for p, clicked in zip(shown, clicks[n]) if clicked]))
    return log


def simulate_fixed_ranking(theta: np.ndarray, sessions: int = 5_000, queries: int = 200,
                           candidates: int = 30, seed: int = 0):
    """Clicks from P(click) = theta[rank] * sigmoid(1.5 x - 1) for a known feature x per pair,
    each query's products always ranked by x (no pair is ever seen at two ranks). The queries'
    x levels differ, so a given x sits high under one query and low under another. Returns the
    log and a pair_features giving x."""
    rng = np.random.default_rng(seed)
    x = rng.normal(rng.normal(0.0, 1.0, size=(queries, 1)), 1.0, size=(queries, candidates))
    gamma = 1.0 / (1.0 + np.exp(-(1.5 * x - 1.0)))
    query = rng.integers(queries, size=sessions)
    order = np.argsort(-x, axis=1)[query, :len(theta)]
    clicks = rng.random(order.shape) < theta * np.take_along_axis(gamma[query], order, axis=1)
    log = []
    for n in range(sessions):
        shown = [f"q{query[n]}-p{product}" for product in order[n]]
        log.append(_session(n, f"query {query[n]}", shown,
                            [p for p, clicked in zip(shown, clicks[n]) if clicked]))
    feature = {f"q{q}-p{p}": x[q, p] for q in range(queries) for p in range(candidates)}
    return log, lambda queries, products: np.array([[feature[p]] for p in products])


def _relative_ctr(bias: PositionBias) -> np.ndarray:
    ctr = bias.clicks / bias.impressions
    return ctr / ctr[0]


@pytest.mark.parametrize("theta", [POWER_CURVE, STEP_CURVE], ids=["power", "step"])
def test_em_recovers_the_curve_that_raw_ctr_gets_wrong(theta):
    log = simulate(theta)
    bias = estimate_position_bias(log, iterations=300, tolerance=1e-5)
    assert bias.converged and bias.iterations < 300
    assert bias.propensities[0] == 1.0
    np.testing.assert_allclose(bias.propensities, theta, atol=0.03)
    # relevant products were ranked higher, so raw CTR falls faster than examination does
    raw_error = np.abs(_relative_ctr(bias) - theta).max()
    assert raw_error > 0.08
    assert np.all(_relative_ctr(bias)[1:] < theta[1:])
    assert bias.impressions.tolist() == [20_000] * 10
    assert bias.clicks.sum() == sum(len(s.clicked) for s in log)
    assert bias.method == "em"


@pytest.mark.parametrize("theta", [POWER_CURVE, STEP_CURVE], ids=["power", "step"])
def test_regression_em_recovers_the_curve_of_an_unvarying_ranking(theta):
    log, features = simulate_fixed_ranking(theta)
    regression = estimate_position_bias(log, iterations=300, tolerance=1e-5,
                                        pair_features=features)
    assert regression.method == "regression_em" and regression.converged
    np.testing.assert_allclose(regression.propensities, theta, atol=0.04)
    free = estimate_position_bias(log, iterations=300, tolerance=1e-5)
    assert free.method == "em"
    assert np.abs(free.propensities - theta).max() > 0.1  # where it started, not the truth
    assert np.abs(_relative_ctr(regression) - theta).max() > 0.08  # confounded by the ranking


def test_regression_em_does_not_warn_about_an_unvarying_ranking(caplog):
    log, features = simulate_fixed_ranking(POWER_CURVE, sessions=1_000)
    with caplog.at_level(logging.WARNING, logger="tfmmsearch.data.position_bias"):
        estimate_position_bias(log, iterations=5, pair_features=features)
    assert "barely identified" not in caplog.text


def test_features_that_say_nothing_leave_the_raw_ctr_curve():
    """A constant relevance puts all of the CTR's fall on examination; constant columns are
    dropped rather than making the regression singular."""
    log = simulate(POWER_CURVE, sessions=2_000)
    bias = estimate_position_bias(log, iterations=300, tolerance=1e-7,
                                  pair_features=lambda q, p: np.full((len(p), 2), [1.0, 3.0]))
    assert bias.converged
    np.testing.assert_allclose(bias.propensities, _relative_ctr(bias), atol=1e-4)


def test_pair_features_gets_each_distinct_pair_once_with_the_query_as_first_typed():
    calls = []

    def features(queries, products):
        calls.append((queries, products))
        return np.arange(len(products), dtype=np.float64)[:, None]

    sessions = [_session(0, "Red  Shirt", ["x", "y"], ["x"]),
                _session(1, "red shirt", ["y", "x", "z"], ["y"]),
                _session(2, "Blue", ["x"], ["x"])]
    bias = estimate_position_bias(sessions, iterations=3, pair_features=features)
    assert calls == [(["Red  Shirt"] * 3 + ["Blue"], ["x", "y", "z", "x"])]
    assert bias.method == "regression_em"


@pytest.mark.parametrize("answer, message", [
    (lambda n: np.zeros((n + 1, 2)), r"shape \(4, 2\) for 3 distinct"),
    (lambda n: np.zeros(n), r"shape \(3,\) for 3"),
    (lambda n: np.zeros((n, 0)), r"expected \(3, F\) with F >= 1"),
    (lambda n: np.array([[0.0, 1.0], [np.nan, 1.0], [0.0, np.inf]]),
     r"NaN or infinite values in 2 of 3 rows \(column\(s\) \[0, 1\]\)"),
    (lambda n: [["a"]] * n, "must return numbers"),
], ids=["rows", "one-dimensional", "no-columns", "nan-inf", "strings"])
def test_bad_pair_features_are_refused(answer, message):
    sessions = [_session(0, "a", ["x", "y"], ["x"]), _session(1, "b", ["x"], [])]
    with pytest.raises(ValueError, match=message):
        estimate_position_bias(sessions, pair_features=lambda q, p: answer(len(p)))


def test_an_unvarying_ranking_warns_that_the_curve_is_not_identified(caplog):
    log = simulate(POWER_CURVE, sessions=2_000, noise=0.0)
    with caplog.at_level(logging.WARNING, logger="tfmmsearch.data.position_bias"):
        estimate_position_bias(log, iterations=5)
    assert "0 of 20000 impressions (0.0%) are of query-product pairs shown at more than one " \
           "rank" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="tfmmsearch.data.position_bias"):
        estimate_position_bias(simulate(POWER_CURVE, sessions=2_000), iterations=5)
    assert "barely identified" not in caplog.text


def test_stopping_at_max_iterations_reports_not_converged():
    bias = estimate_position_bias(simulate(POWER_CURVE, sessions=2_000), iterations=3)
    assert (bias.iterations, bias.converged) == (3, False)


def test_queries_differing_in_case_and_spacing_are_one_pair():
    sessions = simulate(STEP_CURVE, sessions=2_000)
    respelled = [_session(n, s.query.upper().replace(" ", "   ") if n % 2 else s.query, s.shown,
                          s.clicked) for n, s in enumerate(sessions)]
    ours, theirs = (estimate_position_bias(log, iterations=20) for log in (sessions, respelled))
    np.testing.assert_array_equal(ours.propensities, theirs.propensities)


def test_max_rank_truncates_or_pads_with_the_last_rank():
    sessions = simulate(POWER_CURVE, sessions=2_000) + [_session(-1, "empty", [])]
    full = estimate_position_bias(sessions, iterations=20)
    assert len(full.propensities) == 10  # the longest list; the empty one adds nothing
    short = estimate_position_bias(sessions, max_rank=4, iterations=20)
    assert short.impressions.tolist() == [2_000] * 4
    assert short.clicks.tolist() == full.clicks[:4].tolist()
    long = estimate_position_bias(sessions, max_rank=13, iterations=20)
    assert long.impressions.tolist() == [2_000] * 10 + [0] * 3
    np.testing.assert_array_equal(long.propensities[:10], full.propensities)
    assert long.propensities[10:].tolist() == [full.propensities[9]] * 3
    with pytest.raises(ValueError, match="max_rank"):
        estimate_position_bias(sessions, max_rank=0)


def test_a_short_list_only_counts_at_the_ranks_it_has():
    sessions = [_session(0, "a", ["x", "y", "z"], ["x"]), _session(1, "a", ["y"], ["y"]),
                _session(2, "b", ["x", "z"], ["z"])]
    bias = estimate_position_bias(sessions, iterations=2)
    assert bias.impressions.tolist() == [3, 2, 1]
    assert bias.clicks.tolist() == [2, 1, 0]


@pytest.mark.parametrize("sessions, message", [
    ([], "empty search log"),
    ([_session(0, "a", [])], "no session showed any product"),
    ([_session(0, "a", ["x", "y"]), _session(1, "b", ["y"])], "none of the 3 impressions"),
    ([_session(0, "a", ["x", "y"], ["y"])], "nothing shown at rank 1 was clicked"),
], ids=["empty", "nothing-shown", "no-clicks", "no-rank-1-click"])
def test_unusable_logs_are_refused(sessions, message):
    with pytest.raises(ValueError, match=message):
        estimate_position_bias(iter(sessions))


def _bias() -> PositionBias:
    return PositionBias(np.array([1.0, 0.5, 0.1, 0.0]), np.array([10, 10, 10, 10]),
                        np.array([5, 2, 1, 0]), iterations=7, converged=True)


def test_weights_are_inverse_propensities_clipped():
    weights = _bias().weights(np.array([1, 2, 3, 4, 9]), clip=5.0)
    np.testing.assert_allclose(weights, [1.0, 2.0, 5.0, 5.0, 5.0])
    np.testing.assert_allclose(_bias().weights(np.array([3]), clip=20.0), [10.0])
    assert _bias().weights(np.array([4]), clip=np.inf)[0] == np.inf
    with pytest.raises(ValueError, match="clip"):
        _bias().weights(np.array([1]), clip=0.5)
    with pytest.raises(ValueError, match="ranks must be integers >= 1"):
        _bias().weights(np.array([0, 1]), clip=5.0)


def test_to_dict_from_dict_round_trip():
    bias = estimate_position_bias(simulate(STEP_CURVE, sessions=2_000), iterations=10)
    again = PositionBias.from_dict(bias.to_dict())
    np.testing.assert_array_equal(again.propensities, bias.propensities)
    np.testing.assert_array_equal(again.impressions, bias.impressions)
    np.testing.assert_array_equal(again.clicks, bias.clicks)
    assert (again.iterations, again.converged) == (bias.iterations, bias.converged)
    assert again.impressions.dtype == np.int64 and again.propensities.dtype == np.float64
    assert again.method == "em"


def test_the_method_round_trips_and_older_dicts_are_free_em():
    log, features = simulate_fixed_ranking(STEP_CURVE, sessions=500)
    values = estimate_position_bias(log, iterations=3, pair_features=features).to_dict()
    assert values["method"] == "regression_em"
    assert PositionBias.from_dict(values).method == "regression_em"
    del values["method"]  # as written before regression-EM existed
    assert PositionBias.from_dict(values).method == "em"


@pytest.mark.parametrize("change, field", [
    ({"clicks": None}, "missing field.*clicks"),
    ({"propensities": []}, "propensities is empty"),
    ({"propensities": [0.9, 0.5, 0.1, 0.0]}, r"propensities\[0\]"),
    ({"propensities": [1.0, float("nan"), 0.1, 0.0]}, "propensities must be finite"),
    ({"propensities": [1.0, "0.5", 0.1, 0.0]}, "propensities must be a list of numbers"),
    ({"impressions": [10, 10, 10]}, "impressions has 3 entries"),
    ({"clicks": [5, 2, 1, -1]}, "clicks must be >= 0"),
    ({"clicks": [5, 2, 11, 0]}, "clicks exceed impressions"),
    ({"clicks": [5, 2, 1.5, 0]}, "clicks must be a list of integers"),
    ({"iterations": -1}, "iterations"),
    ({"converged": "yes"}, "converged"),
    ({"method": "gbdt"}, "method must be one of em, regression_em"),
])
def test_from_dict_names_the_bad_field(change, field):
    values = _bias().to_dict()
    for name, value in change.items():
        if value is None:
            del values[name]
        else:
            values[name] = value
    with pytest.raises(ValueError, match=field):
        PositionBias.from_dict(values)


def test_table_puts_raw_ctr_beside_the_propensity():
    lines = _bias().table(clip=5.0).splitlines()
    assert lines[0].startswith("| rank | impressions | clicks | CTR | relative CTR | propensity")
    assert len(lines) == 2 + 4
    assert lines[3] == "| 2 | 10 | 2 | 0.2000 | 0.400 | 0.500 | 2.00 |"
    assert lines[5].endswith("| 0.000 | 5.00 |")
