"""benchmarks/search_log.py's log metrics on hand-made sessions (the real run: RESULTS.md)."""

from __future__ import annotations

from datetime import datetime, timezone

import numpy as np
import pytest

from tests.benchmarks.scripts import load_benchmark
from tfmmsearch.data.search_log import Session


bench = load_benchmark("search_log")
WHEN = datetime(2026, 11, 30, tzinfo=timezone.utc)
SHOWN = tuple(f"p{i}" for i in range(20))


def session(clicked=(), purchased=()):
    return Session("s", WHEN, "q", SHOWN, tuple(clicked), tuple(purchased))


def test_gains_are_purchase_3_click_1():
    gains = bench.session_gains([session(clicked=("p0", "p3"), purchased=("p3",))])
    assert gains[0, 0] == 1.0 and gains[0, 3] == 3.0 and gains[0].sum() == 4.0


def test_click_ndcg_of_the_logged_and_the_ideal_order():
    gains = bench.session_gains([session(clicked=("p1",), purchased=("p1",))])
    logged = np.arange(20)[None, :]
    assert bench.click_ndcg(logged, gains) == pytest.approx(1 / np.log2(3))  # bought at rank 2
    ideal = np.array([[1, 0, *range(2, 20)]])
    assert bench.click_ndcg(ideal, gains) == pytest.approx(1.0)
    no_clicks = bench.session_gains([session()])
    assert bench.click_ndcg(logged, np.concatenate([gains, no_clicks])) == pytest.approx(
        1 / np.log2(3))  # sessions without a click are left out


def test_ipw_weights_reward_finding_clicks_made_at_deep_ranks():
    gains = bench.session_gains([session(clicked=("p0",)), session(clicked=("p9",))])
    weights = np.ones(20)
    weights[9] = 10.0  # a click at rank 10 was unlikely to be examined: it counts more
    flipped = -np.tile(np.arange(20.0), (2, 1))
    flipped[1, 9] = 1.0  # the model lifts p9 to the top of the second session
    raw = bench.reranking_metrics(flipped, gains, np.ones(20))
    weighted = bench.reranking_metrics(flipped, gains, weights)
    assert raw["click_ndcg@10"] == pytest.approx(1.0)
    assert weighted["ipw_click_ndcg@10"] == pytest.approx(1.0)  # both sessions perfect
    logged = bench.reranking_metrics(-np.tile(np.arange(20.0), (2, 1)), gains, weights)
    assert logged["click_ndcg@10"] == pytest.approx((1 + 1 / np.log2(11)) / 2)


def test_purchase_recall_counts_each_purchase_once():
    position = {pid: i for i, pid in enumerate(SHOWN)}
    sessions = [session(clicked=("p2", "p5"), purchased=("p2", "p5"))]
    top = np.array([[2, 7, 8]])
    assert bench.purchase_recall(top, sessions, position) == pytest.approx(0.5)
