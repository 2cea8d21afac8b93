"""attribute_errors on a hand-made catalog whose counts can be worked out on paper."""

import numpy as np
import pytest

from tfmmsearch.data.queries import Query, grade_matrix
from tfmmsearch.data.schema import Product
from tfmmsearch.evaluation.error_analysis import attribute_errors

COLUMNS = {"article_type": "type", "gender": "gender", "base_colour": "colour", "usage": "usage"}


def product(index, type_, colour, gender="Men", usage="Casual"):
    return Product(str(index), f"title {index}", None,
                   {"type": type_, "colour": colour, "gender": gender, "usage": usage})


PRODUCTS = [
    product(0, "Shirts", "Navy Blue"),            # grade 2 for q0
    product(1, "Shirts", "Blue"),                 # grade 1 for q0: colour wrong
    product(2, "Tshirts", "Navy Blue"),           # grade 0 for q0: type wrong
    product(3, "Shirts", "navy blue", "Women"),   # grade 1 for q0: gender wrong (colour matches, any case)
    product(4, "Shirts", "NA"),                   # grade 1 for q0: unknown colour never matches
    product(5, "Shirts", "Navy Blue"),            # grade 2 for q0
]
QUERIES = [Query("navy shirts for men", {"article_type": "Shirts", "base_colour": "Navy Blue",
                                         "gender": "Men"}),
           Query("tees", {"article_type": "Tshirts"})]


def test_counts_wrong_attributes_only_where_the_ideal_has_grade_2():
    grades = grade_matrix(QUERIES, PRODUCTS, COLUMNS)
    assert grades.tolist() == [[2, 1, 0, 1, 1, 2], [0, 0, 2, 0, 0, 0]]
    # q0: two grade-2 products exist, so slots 0-1 are fillable; the ranking puts p1, p0 there
    # (p1 blamed: colour) and then p2, p3, p4. q1: one fillable slot, filled by p2 (correct).
    top_k = np.array([[1, 0, 2, 3, 4], [2, 0, 1, 3, 4]])
    result = attribute_errors(top_k, grades, QUERIES, PRODUCTS, COLUMNS, k=5)
    assert result["fillable_grade2_slots"] == 3
    assert result["blamed_slots"] == 1
    assert result["wrong_attribute"] == {"base_colour": 1}
    assert result["queries_naming"] == {"article_type": 2, "gender": 1, "base_colour": 1}
    # q0 top 5 grades: 1, 2, 0, 1, 1; q1: 2, 0, 0, 0, 0. Ideal q0: 2, 2, 1, 1, 1; q1: 2, 0, 0, 0, 0.
    assert result["grade_counts"] == {"0": 5, "1": 3, "2": 2}
    assert result["ideal_grade_counts"] == {"0": 4, "1": 3, "2": 3}


def test_a_product_failing_several_attributes_counts_once_per_attribute():
    grades = grade_matrix(QUERIES[:1], PRODUCTS, COLUMNS)
    # p2 (type wrong) and p3 (gender wrong) take both fillable slots; p4's unknown colour is unseen.
    result = attribute_errors(np.array([[2, 3, 4]]), grades, QUERIES[:1], PRODUCTS, COLUMNS, k=3)
    assert result["blamed_slots"] == 2
    assert result["wrong_attribute"] == {"article_type": 1, "gender": 1}


def test_shapes_that_do_not_fit_are_refused():
    grades = grade_matrix(QUERIES, PRODUCTS, COLUMNS)
    with pytest.raises(ValueError, match="2 queries x 6 products"):
        attribute_errors(np.zeros((1, 5), int), grades, QUERIES, PRODUCTS, COLUMNS)
