"""Training examples on a five-product catalog whose pairs and ids are worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest

from tfmmsearch.config import AttributeColumnsConfig
from tfmmsearch.data.queries import Query
from tfmmsearch.data.schema import Product
from tfmmsearch.training.examples import AttributeIds, build_examples

COLUMNS = AttributeColumnsConfig()


def product(pid, article_type, gender, colour, usage) -> Product:
    return Product(pid, f"{gender} {colour} {article_type}", None,
                   {"article_type": article_type, "gender": gender, "base_colour": colour,
                    "usage": usage})


PRODUCTS = [
    product("p0", "Tshirts", "Men", "Navy Blue", "Casual"),
    product("p1", "Tshirts", "Men", "Red", "Casual"),
    product("p2", "tshirts", "Women", "NA", "Casual"),  # same type, other case; colour unknown
    product("p3", "Jeans", "Men", "Navy Blue", "Casual"),
    product("p4", "Jeans", "Women", "Blue", "Sports"),
]
# Vocabularies in order of first appearance, casefolded; NA is not a value.
#   article_type: tshirts 0, jeans 1   gender: men 0, women 1
#   base_colour: navy blue 0, red 1, blue 2   usage: casual 0, sports 1
PRODUCT_IDS = [[0, 0, 0, 0], [0, 0, 1, 0], [0, 1, -1, 0], [1, 0, 0, 0], [1, 1, 2, 1]]

QUERIES = [
    Query("tshirts", {"article_type": "Tshirts"}),                       # p0 p1 p2
    Query("navy tshirts for men", {"article_type": "Tshirts", "gender": "Men",
                                   "base_colour": "Navy Blue"}),          # p0
    Query("jeans", {"article_type": "Jeans"}),                           # p3 p4
    Query("red jeans", {"article_type": "Jeans", "base_colour": "Red"}),  # none
    Query("kurtas", {"article_type": "Kurtas"}),                         # none; unknown value
]
QUERY_IDS = [[0, -1, -1, -1], [0, 0, 0, -1], [1, -1, -1, -1], [1, -1, 1, -1], [-1, -1, -1, -1]]


def test_attribute_ids_by_hand():
    ids = AttributeIds.from_products(PRODUCTS, COLUMNS)
    assert ids.vocabularies["article_type"] == {"tshirts": 0, "jeans": 1}
    assert ids.vocabularies["base_colour"] == {"navy blue": 0, "red": 1, "blue": 2}
    products = ids.of_products(PRODUCTS, COLUMNS)
    assert products.dtype == np.int32
    np.testing.assert_array_equal(products, PRODUCT_IDS)
    np.testing.assert_array_equal(ids.of_queries(QUERIES), QUERY_IDS)
    assert ids.of_queries([]).shape == (0, 4)


def test_pairs_and_indices_by_hand():
    examples = build_examples(QUERIES, PRODUCTS, COLUMNS, max_per_query=None)
    assert examples.query_texts == [q.text for q in QUERIES]  # every query, with pairs or not
    pairs = sorted(zip(examples.query_index.tolist(), examples.product_index.tolist()))
    assert pairs == [(0, 0), (0, 1), (0, 2), (1, 0), (2, 3), (2, 4)]
    assert len(examples) == 6
    assert examples.query_index.dtype == examples.product_index.dtype == np.int32
    np.testing.assert_array_equal(examples.query_attributes, QUERY_IDS)
    np.testing.assert_array_equal(examples.item_attributes, PRODUCT_IDS)


def test_sampling_probability_is_the_product_frequency_among_pairs():
    examples = build_examples(QUERIES, PRODUCTS, COLUMNS, max_per_query=None)
    assert examples.sampling_probability.dtype == np.float32
    expected = {0: 2 / 6, 1: 1 / 6, 2: 1 / 6, 3: 1 / 6, 4: 1 / 6}  # p0 answers two queries
    for index, probability in zip(examples.product_index, examples.sampling_probability):
        assert probability == pytest.approx(expected[int(index)])
    per_product = dict(zip(examples.product_index.tolist(), examples.sampling_probability))
    assert sum(per_product.values()) == pytest.approx(1.0)


def test_max_per_query_caps_pairs_deterministically():
    capped = build_examples(QUERIES, PRODUCTS, COLUMNS, max_per_query=1, seed=3)
    assert sorted(capped.query_index.tolist()) == [0, 1, 2]
    allowed = {0: {0, 1, 2}, 1: {0}, 2: {3, 4}}
    for query, item in zip(capped.query_index, capped.product_index):
        assert int(item) in allowed[int(query)]
    again = build_examples(QUERIES, PRODUCTS, COLUMNS, max_per_query=1, seed=3)
    np.testing.assert_array_equal(capped.product_index, again.product_index)
    # One pair each: every chosen product is sampled with its frequency among the 3 pairs.
    counts = np.bincount(capped.product_index, minlength=len(PRODUCTS))
    np.testing.assert_allclose(capped.sampling_probability, counts[capped.product_index] / 3)


def test_catalog_wide_ids_are_kept_for_a_split():
    """Training examples of a split use the whole catalog's ids, so splits agree on them."""
    catalog_ids = AttributeIds.from_products(PRODUCTS, COLUMNS)
    jeans = PRODUCTS[3:]
    examples = build_examples(QUERIES[2:3], jeans, COLUMNS, max_per_query=None,
                              attribute_ids=catalog_ids)
    np.testing.assert_array_equal(examples.item_attributes, PRODUCT_IDS[3:])
    np.testing.assert_array_equal(examples.product_index, [0, 1])  # indices into the split
    own_ids = build_examples(QUERIES[2:3], jeans, COLUMNS, max_per_query=None)
    assert own_ids.item_attributes[0, 0] == 0  # alone, the split would number jeans 0


def test_no_grade_2_pair_is_a_clear_error():
    with pytest.raises(ValueError, match="no training pairs"):
        build_examples(QUERIES[3:], PRODUCTS, COLUMNS)


# --------------------------------------------------------------------------- search-log pairs


def log_pair(query, product_id, grade=1, weight=1.0, skipped=()):
    from tfmmsearch.data.log_pairs import LogPair

    return LogPair(query, product_id, grade, weight, 1, tuple(skipped))


def test_log_examples_carry_weights_grades_and_one_skipped_negative():
    from tfmmsearch.training.examples import NO_NEGATIVE, log_examples

    pairs = [log_pair("blue jeans", "p3", 2, 3.0, skipped=("p4",)),
             log_pair("blue jeans", "p4", 1, 2.0),
             log_pair("tee", "p0", 1, 1.0, skipped=("p1", "p2"))]
    ids = AttributeIds.from_products(PRODUCTS, COLUMNS)
    examples = log_examples(pairs, PRODUCTS, COLUMNS, ids, seed=0)
    assert examples.query_texts == ["blue jeans", "tee"]
    np.testing.assert_array_equal(examples.query_index, [0, 0, 1])
    np.testing.assert_array_equal(examples.product_index, [3, 4, 0])
    np.testing.assert_array_equal(examples.weight, [3.0, 2.0, 1.0])
    np.testing.assert_array_equal(examples.positive_grade, [2, 1, 1])
    assert examples.negative_index[0] == 4 and examples.negative_index[1] == NO_NEGATIVE
    assert examples.negative_index[2] in (1, 2)
    assert (examples.query_attributes == -1).all()  # a typed query names no attribute
    assert examples.product_ids == [p.product_id for p in PRODUCTS]
    without = log_examples(pairs, PRODUCTS, COLUMNS, ids, with_negatives=False)
    assert not without.has_negatives


def test_unread_attribute_ids_never_look_at_the_columns():
    unread = AttributeIds.unread()
    broken = [product("x", "Tshirts", "Men", "Red", "Casual")]
    broken[0].attributes.clear()  # a catalog without the columns at all
    assert (unread.of_products(broken, COLUMNS) == -1).all()


def test_mixing_gives_each_source_its_share_of_the_weight():
    from tfmmsearch.training.examples import log_examples, mix_examples

    ids = AttributeIds.from_products(PRODUCTS, COLUMNS)
    jeans = PRODUCTS[3:]  # attribute pairs from a split, mixed over the whole catalog
    attributes = build_examples(QUERIES[2:3], jeans, COLUMNS, max_per_query=None,
                                attribute_ids=ids)
    log = log_examples([log_pair("jeans", "p0", 2, 5.0, skipped=("p1",)),
                        log_pair("tees", "p1", 1, 1.0), log_pair("tees", "p2", 1, 2.0),
                        log_pair("tees", "p3", 1, 2.0)], PRODUCTS, COLUMNS, ids)
    mixed = mix_examples([(attributes, 1.0), (log, 3.0)], PRODUCTS, COLUMNS, ids)
    assert len(mixed) == 2 + 4
    assert mixed.weight.mean() == pytest.approx(1.0)
    assert mixed.weight[:2].sum() == pytest.approx(0.25 * 6)  # attribute pairs: 1 / (1 + 3)
    assert mixed.weight[2:].sum() == pytest.approx(0.75 * 6)
    np.testing.assert_allclose(mixed.weight[2:] / mixed.weight[3], [5.0, 1.0, 2.0, 2.0])
    # "jeans" is typed in the log and generated from attributes: one query, attribute ids kept
    assert mixed.query_texts == ["jeans", "tees"]
    np.testing.assert_array_equal(mixed.query_attributes[0], QUERY_IDS[2])
    np.testing.assert_array_equal(mixed.product_index, [3, 4, 0, 1, 2, 3])  # catalog positions
    np.testing.assert_array_equal(mixed.negative_index, [-1, -1, 1, -1, -1, -1])
    np.testing.assert_array_equal(mixed.positive_grade, [2, 2, 2, 1, 1, 1])
    counts = np.bincount(mixed.product_index, minlength=len(PRODUCTS))
    np.testing.assert_allclose(mixed.sampling_probability, counts[mixed.product_index] / 6)
    with pytest.raises(ValueError, match="no training pairs"):
        mix_examples([(attributes, 0.0)], PRODUCTS, COLUMNS, ids)
