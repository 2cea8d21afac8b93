"""The synthetic search log: valid, shaped like a lexical shop's log, and true to its click model."""

import json
import re
import time
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pytest

from tfmmsearch.data.bm25 import BM25Index
from tfmmsearch.data.catalog import read_catalog
from tfmmsearch.data.phrasing import colour_phrases, type_phrases
from tfmmsearch.data.schema import Product
from tfmmsearch.data.search_log import read_search_log
from tfmmsearch.data.synthetic import (
    ARTICLE_TYPES, BRANDS, COLOURS, CSV_COLUMNS, generate_synthetic_catalog, plan_synthetic_items,
)
from tfmmsearch.data.synthetic_log import (
    GENDER_WORDS, NOISE_WORDS, SHOWN_PER_SESSION, USAGE_WORDS, ClickModel,
    generate_synthetic_search_log,
)

NUM_ITEMS = 2000
NUM_SESSIONS = 3000
DAYS = 30


def plan_products(num_items: int, seed: int = 0) -> list[Product]:
    """The synthetic catalog's products as read_catalog gives them, without drawing photos."""
    products = []
    for item in plan_synthetic_items(num_items, seed):
        row = dict(zip(CSV_COLUMNS, item.csv_row()))
        attributes = {name: row[name] for name in CSV_COLUMNS
                      if name not in ("product_id", "title", "image")}
        products.append(Product(item.product_id, item.title, None, attributes))
    return products


def is_exact(product: Product, intent: dict) -> bool:
    return all(product.attributes.get(role, "").casefold() == value.casefold()
               for role, value in intent.items())


@pytest.fixture(scope="module")
def products() -> list[Product]:
    return plan_products(NUM_ITEMS)


@pytest.fixture(scope="module")
def simulated(products, tmp_path_factory):
    """The default-size log with its truth, generated once: (log path, rows, truth, seconds)."""
    out = tmp_path_factory.mktemp("synthetic_log")
    started = time.perf_counter()
    path = generate_synthetic_search_log(products, out / "search_log.jsonl",
                                         num_sessions=NUM_SESSIONS, days=DAYS,
                                         truth_path=out / "truth.json")
    seconds = time.perf_counter() - started
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    truth = json.loads((out / "truth.json").read_text(encoding="utf-8"))
    return path, rows, truth, seconds


def test_is_fast_and_leaves_only_its_files(simulated):
    path, _, _, seconds = simulated
    assert seconds < 10.0, f"{NUM_SESSIONS} sessions took {seconds:.1f} s"  # ~0.3 s measured
    assert sorted(p.name for p in path.parent.iterdir()) == ["search_log.jsonl", "truth.json"]


def test_reads_back_as_a_valid_log_over_the_requested_days(simulated, products):
    path, rows, _, _ = simulated
    log = read_search_log(path, product_ids=[p.product_id for p in products])
    assert log.report.num_skipped == 0 and len(log) == NUM_SESSIONS
    start = date(2026, 10, 1)
    assert log.days() == [start + timedelta(days=d) for d in range(DAYS)]
    stamps = [session.timestamp for session in log.sessions]
    assert stamps == sorted(stamps)
    assert len({row["session_id"] for row in rows}) == NUM_SESSIONS
    assert [list(row) for row in rows[:1]] == [["session_id", "timestamp", "query", "shown",
                                                "clicked", "purchased"]]


def test_shown_is_twenty_distinct_products_and_clicks_and_purchases_nest(simulated):
    _, rows, _, _ = simulated
    for row in rows:
        assert len(row["shown"]) == len(set(row["shown"])) == SHOWN_PER_SESSION
        assert set(row["purchased"]) <= set(row["clicked"]) <= set(row["shown"])
        assert row["clicked"] == [pid for pid in row["shown"] if pid in row["clicked"]]
    clicks = sum(len(row["clicked"]) for row in rows)
    purchases = sum(len(row["purchased"]) for row in rows)
    no_clicks = sum(not row["clicked"] for row in rows)
    assert 0.1 * NUM_SESSIONS < no_clicks < 0.7 * NUM_SESSIONS
    assert 0.05 * clicks < purchases < 0.5 * clicks


def test_shown_is_the_bm25_top_twenty_reordered_only_in_perturbed_sessions(simulated, products):
    _, rows, truth, _ = simulated
    ids = np.array([p.product_id for p in products])
    picked = range(0, NUM_SESSIONS, 10)
    scores = BM25Index([p.title for p in products]).score([rows[i]["query"] for i in picked])
    top = ids[np.argsort(-scores, axis=1, kind="stable")[:, :SHOWN_PER_SESSION]]
    for i, expected in zip(picked, top):
        if truth["sessions"][i]["perturbed"]:
            assert set(rows[i]["shown"]) == set(expected)
        else:
            assert rows[i]["shown"] == expected.tolist()
    # Most queries spell some title word, so the shop showed lexical matches first.
    assert np.mean(scores.max(axis=1) > 0) > 0.8


def test_click_through_rate_falls_with_rank(simulated):
    _, rows, _, _ = simulated
    clicks = np.zeros(SHOWN_PER_SESSION)
    for row in rows:
        for pid in row["clicked"]:
            clicks[row["shown"].index(pid)] += 1
    ctr = clicks / len(rows)
    buckets = [ctr[0], ctr[1], ctr[2:5].mean(), ctr[5:10].mean(), ctr[10:].mean()]
    assert all(a > b for a, b in zip(buckets, buckets[1:])), np.round(buckets, 4)


def test_exact_match_clicks_follow_the_hidden_theta_curve(simulated, products):
    _, rows, truth, _ = simulated
    model = ClickModel(**truth["click_model"])
    np.testing.assert_allclose(truth["theta"], model.theta(SHOWN_PER_SESSION))
    theta = truth["theta"]
    assert theta[0] == 1.0 and all(a > b for a, b in zip(theta, theta[1:]))
    by_id = {p.product_id: p for p in products}
    shown = np.zeros(SHOWN_PER_SESSION)
    clicked = np.zeros(SHOWN_PER_SESSION)
    bought_other = 0
    for row, session in zip(rows, truth["sessions"]):
        assert session["session_id"] == row["session_id"]
        for rank, pid in enumerate(row["shown"]):
            if is_exact(by_id[pid], session["intent"]):
                shown[rank] += 1
                clicked[rank] += pid in row["clicked"]
            else:
                bought_other += pid in row["purchased"]
    assert bought_other == 0  # purchases only of products that match the whole intent
    estimate = clicked / shown / model.exact  # P(click | exact, rank) / relevance = theta
    np.testing.assert_allclose(estimate[:5], truth["theta"][:5], atol=0.07)


def test_every_intent_comes_from_the_catalog_and_has_an_exact_match(simulated, products):
    _, _, truth, _ = simulated
    intents = {json.dumps(s["intent"], sort_keys=True) for s in truth["sessions"]}
    for key in intents:
        intent = json.loads(key)
        assert "article_type" in intent
        assert set(intent) <= {"article_type", "gender", "base_colour", "usage", "brand"}
        assert any(is_exact(p, intent) for p in products), intent
    named = [role for s in truth["sessions"] for role in s["intent"]]
    assert {"gender", "base_colour", "usage", "brand"} <= set(named)


def test_queries_are_shopper_style_with_brands_noise_words_and_typos(simulated):
    _, rows, _, _ = simulated
    queries = [row["query"] for row in rows]
    brands = {brand.lower() for brand in BRANDS}
    with_brand = [q for q in queries if brands & set(q.split())]
    assert 0.1 * len(queries) < len(with_brand) < 0.6 * len(queries)
    assert sum(bool(set(NOISE_WORDS) & set(q.split())) for q in queries) > 0.05 * len(queries)
    # Terse keyword queries, not the attribute-query templates' "... for men in navy".
    assert all(q == q.lower() and " for " not in f" {q} " and len(q.split()) <= 9 for q in queries)
    known = set(NOISE_WORDS) | brands
    for words in (*GENDER_WORDS.values(), *USAGE_WORDS.values()):
        known |= {token for word in words for token in word.split()}
    for name in ARTICLE_TYPES:
        known |= {t for form in ("sg", "pl") for p in type_phrases(name, form) for t in p.split()}
    for colour in COLOURS:
        known |= {token for phrase in colour_phrases(colour, "adj") for token in phrase.split()}
    misspelt = [q for q in queries if set(q.split()) - known]
    assert 0.02 * len(queries) < len(misspelt) < 0.2 * len(queries), misspelt[:5]


def test_repeated_queries_are_sometimes_shown_in_another_order(simulated):
    _, rows, truth, _ = simulated
    orders: dict[str, set[tuple[str, ...]]] = {}
    for row in rows:
        orders.setdefault(row["query"], set()).add(tuple(row["shown"]))
    repeated = [q for q, shown in orders.items() if len(shown) > 1]
    assert len(repeated) >= 20
    for query in repeated:  # a reordering, not another result set
        assert len({frozenset(shown) for shown in orders[query]}) == 1, query
    sessions = truth["sessions"]
    assert 0.1 < np.mean([s["perturbed"] for s in sessions]) < 0.4
    by_id = {row["session_id"]: row for row in rows}
    repeats = [s for s in sessions if s["repeat_of"] is not None]
    assert 0.1 * len(sessions) < len(repeats) < 0.3 * len(sessions)
    assert all(by_id[s["session_id"]]["query"] == by_id[s["repeat_of"]]["query"] for s in repeats)


def test_same_seed_same_bytes_other_seed_differs(products, tmp_path):
    def log_bytes(name: str, seed: int) -> tuple[bytes, bytes]:
        path = generate_synthetic_search_log(products[:300], tmp_path / name / "log.jsonl",
                                             num_sessions=200, days=5, seed=seed,
                                             truth_path=tmp_path / name / "truth.json")
        return path.read_bytes(), (tmp_path / name / "truth.json").read_bytes()

    first, again, other = log_bytes("a", 1), log_bytes("b", 1), log_bytes("c", 2)
    assert first == again
    assert first[0] != other[0] and first[1] != other[1]


def test_a_read_catalog_smaller_than_twenty_and_without_brands_works(tmp_path):
    catalog_dir = generate_synthetic_catalog(tmp_path / "catalog", num_items=12, image_size=16)
    products = read_catalog(catalog_dir).products
    path = generate_synthetic_search_log(products, tmp_path / "log.jsonl", num_sessions=50, days=3,
                                         start="2027-01-30")
    log = read_search_log(path, product_ids=[p.product_id for p in products])
    assert log.report.num_skipped == 0
    assert log.days() == [date(2027, 1, 30), date(2027, 1, 31), date(2027, 2, 1)]
    assert all(len(session.shown) == 12 for session in log.sessions)
    # A catalog with article types only (no gender, colour, usage or brand) still simulates.
    plain = [Product(p.product_id, p.title, None, {"article_type": p.attributes["article_type"]})
             for p in products]
    generate_synthetic_search_log(plain, tmp_path / "plain.jsonl", num_sessions=20, days=1,
                                  truth_path=tmp_path / "plain_truth.json")
    truth = json.loads((tmp_path / "plain_truth.json").read_text())
    assert all(list(s["intent"]) == ["article_type"] for s in truth["sessions"])


@pytest.mark.parametrize("change, message", [
    ({"num_sessions": 0}, "num_sessions"),
    ({"num_sessions": 2.5}, "num_sessions"),
    ({"days": 0}, "days"),
    ({"seed": -1}, "seed"),
    ({"start": "first of october"}, "start"),
    ({"start": 20261001}, "start"),
    ({"out_name": "log.csv"}, "jsonl"),
    ({"products": []}, "products"),
    ({"products": ["100001"]}, "products"),
    ({"products": [Product("1", "Red Cap", None, {"gender": "Men"})]}, "article_type"),
    ({"products": [Product("1", "a", None, {"article_type": "Caps"})] * 2}, "duplicate"),
    ({"click_model": "steep"}, "click_model"),
])
def test_bad_arguments_are_refused_by_name_and_nothing_is_written(products, tmp_path, change,
                                                                   message):
    kwargs = {"products": products[:50], "out_name": "log.jsonl", **change}
    out_path = tmp_path / kwargs.pop("out_name")
    with pytest.raises(ValueError, match=message):
        generate_synthetic_search_log(kwargs.pop("products"), out_path, **kwargs)
    assert list(tmp_path.iterdir()) == []


def test_click_model_parameters_are_checked():
    with pytest.raises(ValueError, match="eta"):
        ClickModel(eta=-1)
    with pytest.raises(ValueError, match="purchase"):
        ClickModel(purchase=1.5)
    assert ClickModel(eta=0).theta(3).tolist() == [1.0, 1.0, 1.0]  # no position bias at all
