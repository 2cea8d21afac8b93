"""In-graph grades follow PROTOCOL.md: 2 all named match, 1 type only, 0 otherwise."""

import numpy as np
import tensorflow as tf

from tfmmsearch.model.grades import attribute_grades


def test_grades_by_hand():
    # columns: article_type, gender, colour, usage; -1 = not named (query) / unknown (item)
    queries = tf.constant([[1, -1, -1, -1],   # "tshirts"
                           [1, 0, 5, -1],     # "mens navy tshirts"
                           [2, -1, 5, -1]])   # "navy shoes"
    items = tf.constant([[1, 0, 5, 3],        # mens navy tshirt
                         [1, 1, 5, 3],        # womens navy tshirt
                         [1, 0, -1, 3],       # mens tshirt, colour unknown
                         [2, 0, 5, 3]])       # navy shoe
    expected = np.array([[2, 2, 2, 0],
                         [2, 1, 1, 0],
                         [0, 0, 0, 2]])
    np.testing.assert_array_equal(attribute_grades(queries, items).numpy(), expected)


def test_unknown_item_type_never_matches():
    assert int(attribute_grades(tf.constant([[-1, -1, -1, -1]]), tf.constant([[-1, 0, 0, 0]]))[0, 0]) == 0
