"""The exported SavedModel scored through its serving signatures, checked against the in-process model."""

import numpy as np
import pytest
import tensorflow as tf

from tfmmsearch.data.catalog import read_catalog
from tfmmsearch.data.prepare import resolve_catalog_dir
from tfmmsearch.evaluation import exported_system
from tfmmsearch.evaluation.exported_system import ExportedSearchSystem, LoadedExport
from tfmmsearch.evaluation.model_system import TrainedModelSystem
from tfmmsearch.model.build import load_run_config, load_trained_model

QUERIES = ["black caps", "red dress for women", "blue shoes", "green watch", "white tshirt", ""]


@pytest.fixture(scope="module")
def products(tiny_run):
    return read_catalog(resolve_catalog_dir(load_run_config(tiny_run))).products[:40]


@pytest.fixture(scope="module")
def export_top100(exported_subset):
    """An export with top_k 100 (tests/conftest.py); the systems below swap its index for the
    items they score."""
    return exported_subset[0]


@pytest.fixture(scope="module")
def loaded(export_top100):
    return LoadedExport(export_top100.parent)  # a base directory resolves to its latest version


@pytest.fixture(scope="module")
def in_process(tiny_run):
    return load_trained_model(tiny_run)


def _items(products):
    return [p.title for p in products], [str(p.image_path) if p.image_path else "" for p in products]


def _assert_served_order_agrees(served: np.ndarray, reference: np.ndarray, tolerance: float):
    """Along the served order, the reference scores never rise by more than `tolerance`."""
    for q in range(len(served)):
        if np.all(reference[q] == -np.inf):  # a blank query: nothing served either
            assert np.all(served[q] == -np.inf), q
            continue
        order = np.argsort(-served[q], kind="stable")
        along = reference[q][order]
        assert np.all(np.diff(along) <= tolerance), (q, along[:10])


@pytest.mark.parametrize("signature, rerank, tolerance", [("retrieve", 0, 1e-4),
                                                          ("serving_default", 100, 1e-3)])
def test_exported_ranking_matches_the_in_process_model(loaded, in_process, products, signature,
                                                       rerank, tolerance):
    config, model = in_process
    titles, paths = _items(products)
    served = ExportedSearchSystem("export", loaded, signature).score(QUERIES, titles, paths, "full")
    reference = TrainedModelSystem("model", model, rerank=rerank).score(QUERIES, titles, paths, "full")
    assert served.shape == (len(QUERIES), len(products))
    assert QUERIES[-1] == "" and np.all(served[-1] == -np.inf)  # a blank query finds nothing
    assert np.isfinite(served[:-1]).all()  # 40 items, top_k 100: every item returned, in served order
    _assert_served_order_agrees(served, reference, tolerance)


def test_item_sets_are_embedded_once_and_swapped(loaded, products, monkeypatch):
    calls = []
    real = exported_system.embed_items
    monkeypatch.setattr(exported_system, "embed_items", lambda *a, **k: calls.append(1) or real(*a, **k))
    fresh = LoadedExport(loaded.path)
    system = ExportedSearchSystem("export", fresh, "retrieve")
    titles, paths = _items(products[:12])
    full = system.score(QUERIES, titles, paths, "full")
    blank = system.score(QUERIES, [""] * 12, paths, "image_only")
    again = system.score(QUERIES, titles, paths, "full")
    assert len(calls) == 2
    np.testing.assert_array_equal(full, again)
    assert not np.array_equal(full, blank)
    assert int(tf.shape(fresh.module.index.product_ids)[0]) == 12
    # The index now holds the full items again: text present for every titled product.
    assert fresh.module.index.mask.numpy()[:, 0].sum() == sum(bool(t.strip()) for t in titles)


def test_an_export_returning_fewer_than_the_protocols_100_is_refused(exported, products):
    system = ExportedSearchSystem("top10", LoadedExport(exported), "serving_default")
    titles, paths = _items(products)
    with pytest.raises(ValueError, match="--top-k 100"):
        system.score(["black caps"], titles, paths, "full")


def test_a_missing_signature_fails_at_construction(loaded):
    with pytest.raises(KeyError, match="no signature 'nearest'"):
        ExportedSearchSystem("x", loaded, "nearest")
