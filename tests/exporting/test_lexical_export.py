"""A lexical ranking head end to end: the export stores title words, and every path agrees."""

from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from tests.conftest import make_untrained_run
from tfmmsearch.data.catalog import read_catalog
from tfmmsearch.data.prepare import resolve_catalog_dir
from tfmmsearch.evaluation.exported_system import ExportedSearchSystem, LoadedExport
from tfmmsearch.evaluation.model_system import TrainedModelSystem
from tfmmsearch.exporting.export import export, reindex
from tfmmsearch.model.lexical import MAX_QUERY_WORDS, MAX_TITLE_WORDS, query_coverage, word_ids
from tfmmsearch.model.build import load_run_config, load_trained_model

pytestmark = pytest.mark.heavy  # trains or exports in its fixtures: scheduled first

QUERIES = ["black caps", "red dress for women", "blue shoes", "white tshirt"]


@pytest.fixture(scope="module")
def lexical_run(tmp_path_factory, tiny_hub_cache):
    return make_untrained_run(tmp_path_factory.mktemp("lexical"), tiny_hub_cache,
                              ["model.ranking_lexical=true"])


@pytest.fixture(scope="module")
def products(lexical_run):
    return read_catalog(resolve_catalog_dir(load_run_config(lexical_run))).products[:30]


@pytest.fixture(scope="module")
def lexical_model(lexical_run):
    """(config, model) of the run, loaded once: the tests below only call the model."""
    return load_trained_model(lexical_run)


@pytest.fixture(scope="module")
def version(lexical_run, products, tmp_path_factory):
    return export(lexical_run, base_dir=tmp_path_factory.mktemp("lexical_export") / "tiny",
                  top_k=100, products=products)


def test_the_head_reads_the_coverage(lexical_model):
    config, model = lexical_model
    assert model.ranking_head.lexical
    dim = config.model.embedding_dim
    rng = np.random.default_rng(0)
    vectors = {key: tf.constant(rng.normal(size=(1, 3, dim)), tf.float32) for key in ("embedding", "text", "image")}
    items = {**vectors, "mask": tf.ones([1, 3, 2])}
    query = tf.constant(rng.normal(size=(1, 1, dim)), tf.float32)
    covered = model.rank(query, items, tf.constant([[1.0, 0.5, 0.0]])).numpy()
    uncovered = model.rank(query, items, tf.zeros([1, 3])).numpy()
    assert covered[0, 2] == pytest.approx(uncovered[0, 2], abs=1e-6)
    assert np.abs(covered[0, :2] - uncovered[0, :2]).max() > 1e-6
    # Without its title the item's words do not count.
    no_title = {**items, "mask": tf.constant([[[0.0, 1.0]] * 3])}
    np.testing.assert_allclose(model.rank(query, no_title, tf.constant([[1.0, 0.5, 0.0]])).numpy(),
                               model.rank(query, no_title, tf.zeros([1, 3])).numpy(), atol=1e-6)
    with pytest.raises(ValueError, match="word coverage"):
        model.ranking_head(query, *vectors.values(), items["mask"])


def test_export_stores_title_words_and_serves_what_the_model_scores(lexical_model, products,
                                                                    version):
    loaded = LoadedExport(version)
    titles = [p.title for p in products]
    paths = [str(p.image_path) if p.image_path else "" for p in products]
    arrays = loaded.index_arrays(titles, paths)
    np.testing.assert_array_equal(arrays["title_words"], word_ids(titles, MAX_TITLE_WORDS).numpy())
    config, model = lexical_model
    served = ExportedSearchSystem("export", loaded, "serving_default").score(QUERIES, titles, paths, "full")
    reference = TrainedModelSystem("model", model, rerank=100).score(QUERIES, titles, paths, "full")
    for q in range(len(QUERIES)):  # the served order never contradicts the model's own scores
        along = reference[q][np.argsort(-served[q], kind="stable")]
        assert np.all(np.diff(along) <= 1e-3), (q, along[:10])
    # `rank` on the saved version agrees with the model given the same coverage.
    module = tf.saved_model.load(str(version))
    ids = [[p.product_id for p in products[:5]]]
    ranked = module.signatures["rank"](query=tf.constant(QUERIES[:1]),
                                       product_ids=tf.constant(ids))["scores"].numpy()
    items = model.embed_items({"title": tf.constant(titles[:5]),
                               "image_bytes": tf.constant([Path(p).read_bytes() for p in paths[:5]])})
    query = model.embed_queries({"query": tf.constant(QUERIES[:1])})
    coverage = query_coverage(word_ids(QUERIES[:1], MAX_QUERY_WORDS)[:, None, :],
                              word_ids(titles[:5], MAX_TITLE_WORDS)[None])
    expected = model.rank(query[:, None, :], {k: items[k][None] for k in ("embedding", "text", "image", "mask")},
                          coverage).numpy()
    np.testing.assert_allclose(ranked, expected, rtol=1e-4, atol=1e-4)


def test_reindexing_a_lexical_export_keeps_words_for_every_item(lexical_run, version):
    catalog_dir = resolve_catalog_dir(load_run_config(lexical_run))
    new_version = reindex(version.parent, catalog_dir)
    module = tf.saved_model.load(str(new_version))
    size = int(tf.shape(module.index.product_ids)[0])
    assert size == len(read_catalog(catalog_dir).products) > 30
    assert int(tf.shape(module.index.title_words)[0]) == size
    out = module.signatures["serving_default"](query=tf.constant(QUERIES))
    assert out["product_ids"].shape == (len(QUERIES), size)  # top_k 100 > catalog
