"""The in-graph index (resizable, id lookup with unknown ids, empty index, attribute vectors)
and the module's item signatures for a model with item features."""

import numpy as np
import pytest
import tensorflow as tf

from tfmmsearch.contract import ATTRIBUTES_FIELD, INDEX_FIELDS, LEXICAL_FIELD
from tfmmsearch.data.catalog import read_catalog
from tfmmsearch.data.item_features import attribute_matrix
from tfmmsearch.data.prepare import resolve_catalog_dir
from tfmmsearch.exporting.catalog_index import model_index_arrays
from tfmmsearch.exporting.index_rows import IndexRows, write_index
from tfmmsearch.exporting.search_module import ItemIndex, SearchModule
from tfmmsearch.model.build import load_trained_model


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


def test_an_index_with_attributes_stores_one_vector_per_item_and_narrow_masks_are_padded():
    index = ItemIndex(4, attributes=True)
    vectors = _assign(index, ["a", "b", "c"])
    assert index.mask.shape[1] == 3
    np.testing.assert_array_equal(index.mask.numpy(), [[1, 1, 0]] * 3)  # a 2-column mask: padded
    index.assign_attributes(vectors * 2)
    np.testing.assert_allclose(index.attributes.numpy(), vectors * 2)
    with pytest.raises(tf.errors.InvalidArgumentError, match="one row per indexed item"):
        index.assign_attributes(vectors[:2])
    assert not hasattr(ItemIndex(4), "attributes")


# --------------------------------------------------------------------------- a model with item features

# `attribute_run` (tests/conftest.py): an untrained run with brand and price item features.


@pytest.fixture(scope="module")
def attribute_model(attribute_run):
    """(config, model) of the run, loaded once: each test wraps it in a SearchModule of its own."""
    return load_trained_model(attribute_run)


def test_embed_item_takes_attributes_and_gives_the_models_embeddings(attribute_model):
    config, model = attribute_model
    assert model.item_feature_columns == ("brand", "price")
    module = SearchModule(model, top_k=5)
    assert [c.decode() for c in module.item_feature_columns.numpy()] == ["brand", "price"]
    products = read_catalog(resolve_catalog_dir(config)).products[:6]
    titles = tf.constant([p.title for p in products])
    images = tf.constant([p.image_path.read_bytes() if p.image_path else b"" for p in products])
    values = attribute_matrix(products, ["brand", "price"])
    assert all(values[:, 0])  # every synthetic item has a brand
    with_values = module.embed_item(titles, images, tf.constant(values.tolist()))
    expected = model.embed_items({"title": titles, "image_bytes": images,
                                  "attribute_values": tf.constant(values.tolist())})
    np.testing.assert_allclose(with_values["embedding"].numpy(), expected["embedding"].numpy(),
                               atol=1e-5)
    assert (with_values["modality_weights"].numpy()[:, 2] > 0).all()
    # Without values ([B, 0]): the model's embeddings of the items without attributes.
    without = module.embed_item(titles, images, tf.fill([6, 0], ""))
    plain = model.embed_items({"title": titles, "image_bytes": images})
    np.testing.assert_allclose(without["embedding"].numpy(), plain["embedding"].numpy(), atol=1e-5)
    np.testing.assert_array_equal(without["modality_weights"].numpy()[:, 2], 0.0)
    assert np.abs(without["embedding"].numpy() - with_values["embedding"].numpy()).max() > 1e-4
    with pytest.raises(tf.errors.InvalidArgumentError, match="0 or 2 columns.*brand, price"):
        module.embed_item(titles, images, tf.fill([6, 1], "x"))
    stored = module.index_outputs(titles, images, tf.constant(values.tolist()))
    assert set(stored) == {*INDEX_FIELDS, ATTRIBUTES_FIELD, LEXICAL_FIELD}
    np.testing.assert_allclose(stored[ATTRIBUTES_FIELD].numpy(), expected["attributes"].numpy(),
                               atol=1e-5)


def test_rank_reads_the_indexed_attribute_vectors(attribute_model):
    config, model = attribute_model
    module = SearchModule(model, top_k=5)
    products = read_catalog(resolve_catalog_dir(config)).products[:8]
    arrays = model_index_arrays(model, config, products)
    assert arrays[ATTRIBUTES_FIELD].shape == (8, config.model.embedding_dim)
    ids = [p.product_id for p in products]
    write_index(module, IndexRows(np.array(ids, dtype=object), arrays))
    query = tf.constant(["black caps"])
    scores = module.rank(query, tf.constant([ids]))["scores"].numpy()
    embedding = model.embed_queries({"query": query})
    expected = model.rank(embedding[:, None, :], {k: tf.constant(arrays[k])[None]
                                                  for k in ("embedding", "text", "image",
                                                            "attributes", "mask")}).numpy()
    np.testing.assert_allclose(scores, expected, rtol=1e-5, atol=1e-5)
    arrays = {**arrays, ATTRIBUTES_FIELD: arrays[ATTRIBUTES_FIELD] * -1.0}
    write_index(module, IndexRows(np.array(ids, dtype=object), arrays))
    assert np.abs(module.rank(query, tf.constant([ids]))["scores"].numpy() - scores).max() > 1e-5
