"""Export reuses training's cached encoder features and gets the same index as raw inputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from tests.conftest import make_untrained_run
from tfmmsearch.contract import INDEX_FIELDS
from tfmmsearch.data.catalog import read_catalog
from tfmmsearch.data.prepare import resolve_catalog_dir
from tfmmsearch.exporting.catalog_index import cached_item_features, model_index_arrays
from tfmmsearch.model.build import cached_inputs, load_trained_model
from tfmmsearch.model.feature_cache import FeatureStore, ItemTable


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, tiny_hub_cache):
    """This module's own untrained run: its first test needs the run's feature cache empty and
    then fills it, which the session's shared `tiny_run` must neither show nor see."""
    return make_untrained_run(tmp_path_factory.mktemp("catalog_index_run"), tiny_hub_cache)


class _Forbidden:
    def __call__(self, *args, **kwargs):
        raise AssertionError("an encoder ran although its features were cached")


def test_cached_features_are_reused_and_match_the_raw_path(tiny_run):
    config, model = load_trained_model(tiny_run)
    assert cached_inputs(config) == {"title_features", "image_features", "query_features"}
    products = read_catalog(resolve_catalog_dir(config)).products
    assert not cached_item_features(model, config, products[40:])[1].any()  # nothing cached yet
    raw = model_index_arrays(model, config, products[40:])  # every item through the encoders

    FeatureStore(config, model.encoders, ItemTable.from_products(products),
                 Path(config.data.work_dir) / "feature_cache").item_features()  # as training does
    features, hit = cached_item_features(model, config, products[40:])  # rows of the catalog's cache
    assert hit.all() and set(features) == {"title_features", "image_features"}

    text, image = model.encoders.text, model.encoders.image
    model.encoders.text = model.encoders.image = _Forbidden()
    try:
        reused = model_index_arrays(model, config, products[40:])
    finally:
        model.encoders.text, model.encoders.image = text, image
    for field in INDEX_FIELDS:
        np.testing.assert_allclose(reused[field], raw[field], atol=1e-5)

    # And the raw path is the model's own embed_items on titles and image bytes.
    direct = model.embed_items({
        "title": tf.constant([p.title for p in products[40:]]),
        "image_bytes": tf.constant([p.image_path.read_bytes() if p.image_path else b""
                                    for p in products[40:]])})
    np.testing.assert_allclose(raw["embedding"], direct["embedding"].numpy(), atol=1e-5)


def test_products_missing_from_the_cache_are_encoded(tiny_run, tmp_path):
    config, model = load_trained_model(tiny_run)
    products = read_catalog(resolve_catalog_dir(config)).products[:5]
    renamed = [type(p)(p.product_id + "-new", p.title, p.image_path, p.attributes, p.row)
               for p in products]
    _, hit = cached_item_features(model, config, renamed)
    assert not hit.any()
    arrays = model_index_arrays(model, config, renamed)
    reference = model_index_arrays(model, config, products)
    np.testing.assert_allclose(arrays["embedding"], reference["embedding"], atol=1e-5)
    assert arrays["embedding"].shape == (5, config.model.embedding_dim)
    assert pytest.approx(np.linalg.norm(arrays["embedding"], axis=1), abs=1e-4) == 1.0
