"""The in-graph index: resizable, id lookup with unknown ids, empty index."""

import numpy as np
import tensorflow as tf

from tfmmsearch.exporting.search_module import ItemIndex


def _assign(index, ids, dim=4):
    n = len(ids)
    rng = np.random.default_rng(n)
    vectors = rng.normal(size=(n, dim)).astype("float32")
    index.assign(tf.constant(ids, tf.string), vectors, vectors, vectors,
                 np.ones((n, 2), "float32"), np.full((n, 2), 0.5, "float32"))
    return vectors


def test_lookup_finds_ids_and_flags_unknown_ones():
    index = ItemIndex(4)
    _assign(index, ["p3", "p1", "p2"])
    positions, known = index.lookup(tf.constant([["p1", "nope", "p3"], ["", "p2", "p1"]]))
    np.testing.assert_array_equal(known.numpy(), [[True, False, True], [False, True, True]])
    ids = index.product_ids.numpy()
    assert [ids[p].decode() for p in positions.numpy()[0][[0, 2]]] == ["p1", "p3"]
    assert ids[positions.numpy()[1][1]].decode() == "p2"


def test_index_can_be_replaced_by_one_of_another_size():
    index = ItemIndex(4)
    _assign(index, ["a", "b"])
    vectors = _assign(index, ["a", "b", "c", "d", "e"])
    assert int(index.size) == 5
    np.testing.assert_allclose(index.embeddings.numpy(), vectors)
    _, known = index.lookup(tf.constant(["e", "z"]))
    np.testing.assert_array_equal(known.numpy(), [True, False])


def test_empty_index_knows_nothing():
    index = ItemIndex(4)
    _, known = index.lookup(tf.constant([["a", ""]]))
    np.testing.assert_array_equal(known.numpy(), [[False, False]])
