"""Attribute queries: hand-checked grades, the vectorised grader, phrasing variety and held-out templates."""

import csv
import dataclasses
import json
import random
import re
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from tfmmsearch.config import AttributeColumnsConfig
from tfmmsearch.data import phrasing
from tfmmsearch.data.queries import (
    Query,
    attribute_sets,
    drop_unanswerable,
    generate_queries,
    grade,
    grade_matrix,
    phrase_attribute_set,
    training_pairs,
)
from tfmmsearch.data.schema import Product

COLUMNS = AttributeColumnsConfig()


def _product(product_id, article_type, gender, colour, usage):
    attributes = {"article_type": article_type, "gender": gender, "base_colour": colour,
                  "usage": usage, "season": "Summer"}
    return Product(product_id, f"title {product_id}", None, attributes)


# Unknown values: "NA" and "" (p3 usage, p5 gender/colour, p7 type).
PRODUCTS = [
    _product("p1", "Tshirts", "Men", "Navy Blue", "Casual"),
    _product("p2", "Tshirts", "Men", "Black", "Sports"),
    _product("p3", "Tshirts", "Women", "Navy Blue", "NA"),
    _product("p4", "Casual Shoes", "Men", "White", "Casual"),
    _product("p5", "Tshirts", "NA", "", "Casual"),
    _product("p6", "Watches", "Unisex", "Black", "Casual"),
    _product("p7", "NA", "Men", "Navy Blue", "Casual"),
    _product("p8", "Sports Shoes", "Women", "Navy Blue", "Sports"),
]

MEN_NAVY_TEES = Query("navy tee for men", {"article_type": "Tshirts", "gender": "Men",
                                           "base_colour": "Navy Blue"}, 0)
CASUAL_TEES = Query("casual tees", {"article_type": "Tshirts", "usage": "Casual"}, 1)
TEES = Query("tees", {"article_type": "Tshirts"}, 2)
MENS_TRAINERS = Query("mens trainers", {"article_type": "Sports Shoes", "gender": "Men"}, 3)
WATCHES = Query("black casual unisex watch", {"article_type": "Watches", "gender": "Unisex",
                                              "base_colour": "Black", "usage": "Casual"}, 4)
TEAL_TEES = Query("teal tees", {"article_type": "Tshirts", "base_colour": "Teal"}, 5)

# Worked by hand from PROTOCOL.md: rows follow PRODUCTS p1..p8.
EXPECTED = {
    MEN_NAVY_TEES: [2, 1, 1, 0, 1, 0, 0, 0],  # p3 wrong gender, p5 gender/colour unknown
    CASUAL_TEES: [2, 1, 1, 0, 2, 0, 0, 0],    # p3 usage NA -> 1, p7 type NA -> 0
    TEES: [2, 2, 2, 0, 2, 0, 0, 0],
    MENS_TRAINERS: [0, 0, 0, 0, 0, 0, 0, 1],  # only a women's pair: no grade 2 anywhere
    WATCHES: [0, 0, 0, 0, 0, 2, 0, 0],
    TEAL_TEES: [1, 1, 1, 0, 1, 0, 0, 0],      # a colour no product has
}


def _random_catalog(count, seed):
    rng = random.Random(seed)
    values = {"article_type": ["Tshirts", "Shirts", "Watches", "Caps", "NA"],
              "gender": ["Men", "Women", "Unisex", "NA", ""],
              "base_colour": ["Black", "Navy Blue", "White", "NA"],
              "usage": ["Casual", "Sports", "Formal", ""]}
    return [_product(f"r{i}", *(rng.choice(values[role]) for role in phrasing.ROLES))
            for i in range(count)]


# --------------------------------------------------------------------------- grades


@pytest.mark.parametrize("query", list(EXPECTED), ids=lambda q: q.text)
def test_grade_matches_hand_computation(query):
    assert [grade(query, product, COLUMNS) for product in PRODUCTS] == EXPECTED[query]


def test_grade_matrix_matches_hand_computation():
    queries = list(EXPECTED)
    grades = grade_matrix(queries, PRODUCTS, COLUMNS)
    assert grades.dtype == np.int8 and grades.shape == (len(queries), len(PRODUCTS))
    np.testing.assert_array_equal(grades, np.array([EXPECTED[q] for q in queries]))


def test_grade_matrix_equals_grade_for_every_pair():
    products = _random_catalog(300, seed=1)
    queries = generate_queries(products, COLUMNS, seed=2, phrasings_per_set=1) + list(EXPECTED)
    grades = grade_matrix(queries, products, COLUMNS)
    expected = np.array([[grade(q, p, COLUMNS) for p in products] for q in queries])
    np.testing.assert_array_equal(grades, expected)
    assert set(np.unique(grades)) == {0, 1, 2}


def test_values_compare_after_whitespace_and_case_are_normalised():
    product = _product("x", " tshirts ", "MEN", "navy  blue", "casual")
    assert grade(MEN_NAVY_TEES, product, COLUMNS) == 2
    assert grade_matrix([MEN_NAVY_TEES], [product], COLUMNS)[0, 0] == 2


def test_custom_column_names_from_a_mapping():
    columns = {"article_type": "kind", "gender": "sex"}  # no colour or usage columns
    products = [Product("a", "t", None, {"kind": "Tshirts", "sex": "Men"}),
                Product("b", "t", None, {"kind": "Tshirts", "sex": "Women"})]
    query = Query("mens tees", {"article_type": "Tshirts", "gender": "Men"})
    assert [grade(query, p, columns) for p in products] == [2, 1]
    assert grade_matrix([query], products, columns).tolist() == [[2, 1]]
    with pytest.raises(ValueError, match="does not map"):
        grade_matrix([MEN_NAVY_TEES], products, columns)
    with pytest.raises(ValueError, match="unknown roles"):
        grade(query, products[0], {"article_type": "kind", "colour": "c"})
    queries = generate_queries(products, columns)
    assert {tuple(sorted(q.attributes)) for q in queries} == {("article_type",), ("article_type", "gender")}


def test_query_rejects_unknown_values_and_roles_and_is_json_ready():
    with pytest.raises(ValueError, match="base_colour has no usable value"):
        Query("x", {"article_type": "Tshirts", "base_colour": "NA"})
    with pytest.raises(ValueError, match="must name article_type"):
        Query("x", {"gender": "Men"})
    with pytest.raises(ValueError, match="unknown attribute roles"):
        Query("x", {"article_type": "Tshirts", "season": "Summer"})
    assert hash(MEN_NAVY_TEES) == hash(Query("navy tee for men", {"article_type": "Tshirts"}, 0))
    row = json.loads(json.dumps(dataclasses.asdict(MEN_NAVY_TEES)))
    assert Query(**row) == MEN_NAVY_TEES


# --------------------------------------------------------------------------- dropping, sets


def test_queries_without_a_grade_2_product_are_dropped():
    kept = drop_unanswerable(list(EXPECTED), PRODUCTS, COLUMNS)
    assert kept == [MEN_NAVY_TEES, CASUAL_TEES, TEES, WATCHES]
    grades = grade_matrix(list(EXPECTED), PRODUCTS, COLUMNS)
    assert [q for q, row in zip(EXPECTED, grades) if (row == 2).any()] == kept


def test_generated_queries_on_another_product_set_are_dropped_when_unanswerable():
    products = _random_catalog(200, seed=3)
    queries = generate_queries(products, COLUMNS, seed=0, phrasings_per_set=1)
    subset = products[:20]
    kept = drop_unanswerable(queries, subset, COLUMNS)
    assert 0 < len(kept) < len(queries)
    answerable = (grade_matrix(queries, subset, COLUMNS) == 2).any(axis=1)
    assert kept == [q for q, ok in zip(queries, answerable) if ok]


def test_attribute_sets_come_from_known_product_values():
    sets = attribute_sets(PRODUCTS, COLUMNS)
    assert sets[(("article_type", "Tshirts"),)] == 4
    assert sets[(("article_type", "Tshirts"), ("gender", "Men"))] == 2
    assert sets[(("article_type", "Tshirts"), ("base_colour", "Navy Blue"))] == 2
    assert sets[(("article_type", "Tshirts"), ("usage", "Casual"))] == 2
    all_values = {value for attribute_set in sets for _, value in attribute_set}
    assert not all_values & {"NA", ""}
    # p1 alone: 1 + 3 + 3 + 1 subsets of its three extras, each with the type.
    with_p1_values = [s for s in sets if set(s) <= {("article_type", "Tshirts"), ("gender", "Men"),
                                                    ("base_colour", "Navy Blue"), ("usage", "Casual")}]
    assert len(with_p1_values) == 8
    assert max(len(s) for s in attribute_sets(PRODUCTS, COLUMNS, max_extra_attributes=1)) == 2
    assert set(attribute_sets(PRODUCTS, COLUMNS, min_support=2)) == {
        (("article_type", "Tshirts"),), (("article_type", "Tshirts"), ("gender", "Men")),
        (("article_type", "Tshirts"), ("base_colour", "Navy Blue")),
        (("article_type", "Tshirts"), ("usage", "Casual"))}
    with pytest.raises(ValueError, match="max_extra_attributes"):
        attribute_sets(PRODUCTS, COLUMNS, max_extra_attributes=4)
    with pytest.raises(ValueError, match="no product has a value in the article_type column 'kind'"):
        attribute_sets(PRODUCTS, {"article_type": "kind"})


def test_generate_queries_covers_every_set_with_a_grade_2_product():
    queries = generate_queries(PRODUCTS, COLUMNS, seed=0, phrasings_per_set=3)
    assert {q.attribute_key for q in queries} == set(attribute_sets(PRODUCTS, COLUMNS))
    assert (grade_matrix(queries, PRODUCTS, COLUMNS) == 2).any(axis=1).all()
    for query in queries:
        assert query.text == query.text.strip() and "  " not in query.text


def test_max_sets_caps_sets_and_mixes_sizes():
    products = _random_catalog(400, seed=4)
    queries = generate_queries(products, COLUMNS, seed=0, phrasings_per_set=2, max_sets=12)
    keys = {q.attribute_key for q in queries}
    assert len(keys) == 12
    assert Counter(len(key) for key in keys) == {1: 3, 2: 3, 3: 3, 4: 3}


# --------------------------------------------------------------------------- phrasing


def test_generation_is_deterministic_by_seed_and_ignores_product_order():
    products = _random_catalog(150, seed=5)
    first = generate_queries(products, COLUMNS, seed=11)
    assert generate_queries(products, COLUMNS, seed=11) == first
    shuffled = products[:]
    random.Random(0).shuffle(shuffled)
    assert generate_queries(shuffled, COLUMNS, seed=11) == first
    assert [q.text for q in generate_queries(products, COLUMNS, seed=12)] != [q.text for q in first]
    # A set is phrased the same whichever other sets exist (e.g. in a smaller split).
    subset_queries = generate_queries(products[:30], COLUMNS, seed=11)
    subset_keys = {q.attribute_key for q in subset_queries}
    assert subset_queries == [q for q in first if q.attribute_key in subset_keys]


def test_a_set_gets_many_distinct_phrasings_word_orders_and_synonyms():
    attribute_set = (("article_type", "Tshirts"), ("gender", "Men"), ("base_colour", "Navy Blue"),
                     ("usage", "Sports"))
    all_ids = [t.template_id for t in phrasing.TEMPLATES]
    texts = []
    for seed in range(10):
        queries = phrase_attribute_set(attribute_set, all_ids, count=12, seed=seed)
        assert len(queries) == 12 and len({q.text for q in queries}) == 12
        assert len({q.phrasing_id for q in queries}) == 12
        texts += [q.text for q in queries]
    words = Counter(word for text in texts for word in re.findall(r"[\w'-]+", text))
    for synonym in ("tee", "tees", "t-shirt", "t-shirts", "men's", "mens", "him", "navy",
                    "sporty", "athletic", "wear"):
        assert words[synonym] > 0, synonym
    assert any(text.startswith(("tee", "t-shirt", "t shirt", "tshirt")) for text in texts)
    assert any(text.endswith(("men", "him", "guys")) for text in texts)
    per_set = Counter(q.attribute_key for q in generate_queries(PRODUCTS, COLUMNS, phrasings_per_set=6))
    assert per_set[attribute_set[:3]] == 6


def test_repeated_words_are_collapsed():
    attributes = {"article_type": "Casual Shoes", "usage": "Casual", "gender": "Men"}
    rng = random.Random(0)
    for template in phrasing.TEMPLATES:
        for _ in range(5):
            words = template.render(attributes, rng).split()
            assert all(a != b for a, b in zip(words, words[1:])), words


def test_heldout_templates_are_disjoint_from_training_ones():
    train_ids = set(phrasing.template_ids_for("train", seed=0, heldout_fraction=0.2))
    heldout_ids = set(phrasing.template_ids_for("heldout", seed=0, heldout_fraction=0.2))
    assert not train_ids & heldout_ids
    assert train_ids | heldout_ids == {t.template_id for t in phrasing.TEMPLATES}
    assert len(heldout_ids) == round(0.2 * len(phrasing.TEMPLATES))
    products = _random_catalog(200, seed=6)
    train = generate_queries(products, COLUMNS, phrasing_split="train", phrasings_per_set=6)
    heldout = generate_queries(products, COLUMNS, phrasing_split="heldout", phrasings_per_set=6)
    assert {q.phrasing_id for q in train} <= train_ids
    assert {q.phrasing_id for q in heldout} == heldout_ids
    patterns = {phrasing.TEMPLATES[i].pattern for i in heldout_ids}
    assert not patterns & {phrasing.TEMPLATES[i].pattern for i in train_ids}
    assert len({phrasing.heldout_template_ids(seed) for seed in range(5)}) > 1


def test_bad_phrasing_arguments_raise():
    with pytest.raises(ValueError, match="heldout_fraction > 0"):
        generate_queries(PRODUCTS, COLUMNS, phrasing_split="heldout", heldout_fraction=0.0)
    with pytest.raises(ValueError, match="phrasing_split"):
        generate_queries(PRODUCTS, COLUMNS, phrasing_split="test")
    with pytest.raises(ValueError, match="heldout_fraction"):
        generate_queries(PRODUCTS, COLUMNS, heldout_fraction=1.0)
    with pytest.raises(ValueError, match="phrasings_per_set"):
        generate_queries(PRODUCTS, COLUMNS, phrasings_per_set=0)


def test_template_parse_rejects_incomplete_patterns():
    with pytest.raises(ValueError, match="exactly once"):
        phrasing.Template.parse(99, "{type:pl} {gender:pre}")
    with pytest.raises(ValueError, match="no form"):
        phrasing.Template.parse(99, "{type:pl} {gender:pre} {colour:xx} {usage:pre}")
    with pytest.raises(ValueError, match="only"):
        phrasing.Template.parse(99, "buy {type:pl} {gender:pre} {colour:adj} {usage:pre}")


def test_type_nouns_share_spellings_and_fall_back_with_number():
    assert phrasing.type_nouns("T-shirts") == phrasing.type_nouns("Tshirts")
    assert ("sneaker", "sneakers") in phrasing.type_nouns("Casual Shoes")
    assert phrasing.type_nouns("Water Bottle") == (("water bottle", "water bottles"),)
    assert phrasing.type_nouns("Basketballs") == (("basketball", "basketballs"),)
    assert phrasing.type_nouns("Waist Pouch") == (("waist pouch", "waist pouches"),)
    assert phrasing.type_nouns("Rain Trousers") == (("rain trousers", "rain trousers"),)
    assert phrasing.type_nouns("Mask and Peel") == (("mask and peel", "mask and peel"),)
    assert phrasing.type_nouns("Accessories") == (("accessory", "accessories"),)
    synthetic = ["T-shirts", "Shirts", "Trousers", "Jeans", "Dresses", "Casual Shoes", "Sports Shoes",
                 "Formal Shoes", "Watches", "Handbags", "Backpacks", "Caps", "Sunglasses"]
    missing = [t for t in synthetic if phrasing.normalise_key(t) not in phrasing.TYPE_NOUNS]
    assert not missing
    assert phrasing.colour_phrases("Navy Blue", "adj") == ("navy", "navy blue")
    assert phrasing.colour_phrases("Teal", "in") == ("in teal",)
    assert phrasing.gender_phrases("Kids", "suf") == ("for kids",)


# --------------------------------------------------------------------------- training pairs


def test_training_pairs_are_the_grade_2_pairs():
    queries = [MEN_NAVY_TEES, TEES]
    pairs = training_pairs(queries, PRODUCTS, COLUMNS)
    assert pairs == [("navy tee for men", "p1", 2), ("tees", "p1", 2), ("tees", "p2", 2),
                     ("tees", "p3", 2), ("tees", "p5", 2)]
    with_grade_1 = training_pairs([MEN_NAVY_TEES], PRODUCTS, COLUMNS, min_grade=1)
    assert with_grade_1 == [("navy tee for men", pid, g)
                            for pid, g in [("p1", 2), ("p2", 1), ("p3", 1), ("p5", 1)]]
    capped = training_pairs(queries, PRODUCTS, COLUMNS, max_per_query=2, seed=1)
    assert Counter(text for text, _, _ in capped) == {"navy tee for men": 1, "tees": 2}
    assert set(capped) <= set(pairs)


# --------------------------------------------------------------------------- real catalog


def _read_myntra(path: Path) -> list[Product]:
    products = []
    with path.open(newline="", encoding="utf-8") as handle:
        for row_number, row in enumerate(csv.DictReader(handle), start=1):
            attributes = {k: v for k, v in row.items() if k not in ("product_id", "title", "image")}
            products.append(Product(row["product_id"], row["title"], path.parent / row["image"],
                                    attributes, row_number))
    return products


@pytest.mark.slow
def test_myntra_queries_all_have_a_grade_2_product(myntra_dir):
    products = _read_myntra(myntra_dir / "products.csv")
    type_counts = Counter(p.attributes["article_type"] for p in products)
    frequent = [t for t, n in type_counts.items() if n >= 50]
    assert not [t for t in frequent if phrasing.normalise_key(t) not in phrasing.TYPE_NOUNS]

    sets = attribute_sets(products, COLUMNS)
    queries = generate_queries(products, COLUMNS, seed=0, phrasings_per_set=4, max_sets=250)
    start = time.perf_counter()
    grades = grade_matrix(queries, products, COLUMNS)
    seconds = time.perf_counter() - start
    assert grades.shape == (len(queries), len(products))
    assert (grades == 2).any(axis=1).all()
    assert len(queries) >= 3 * 250 and len({q.attribute_key for q in queries}) == 250
    spot = random.Random(0).sample(range(len(queries)), 5)
    for q in spot:
        for p in random.Random(q).sample(range(len(products)), 200):
            assert grades[q, p] == grade(queries[q], products[p], COLUMNS)
    assert seconds < 10.0
    print(f"\nmyntra: {len(products)} products, {len(sets)} attribute sets, {len(queries)} queries "
          f"on 250 sets; grade_matrix {grades.shape} in {seconds:.2f} s")
