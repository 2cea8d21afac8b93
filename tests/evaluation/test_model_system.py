"""TrainedModelSystem with item features: the evaluators' items get their attribute values."""

from __future__ import annotations

import numpy as np
import pytest

from tfmmsearch.data.schema import Product
from tfmmsearch.evaluation.evaluate import model_systems
from tfmmsearch.evaluation.model_system import ProductAttributes, TrainedModelSystem
from tfmmsearch.evaluation.protocol import FULL, IMAGE_ONLY, items_for_mode
from tfmmsearch.model.build import load_trained_model

# `attribute_run` (tests/conftest.py): an untrained run with brand and price item features.


def test_attributes_are_found_by_title_and_image_or_by_image_alone(tmp_path):
    products = [Product("a", "Red Tee", tmp_path / "a.jpg", {"brand": "Nike", "price": "10"}),
                Product("b", "", tmp_path / "b.jpg", {"brand": "Puma"}),
                Product("c", "Blue Cap", None, {"brand": "Nike", "price": "5"})]
    lookup = ProductAttributes(products, ("brand", "price"))
    values = lookup.values(["Red Tee", "", "Blue Cap", "Unknown"],
                           [str(tmp_path / "a.jpg"), str(tmp_path / "a.jpg"), "", ""])
    assert values.tolist() == [["Nike", "10"], ["Nike", "10"], ["Nike", "5"], ["", ""]]
    assert lookup.values(["", "x"], [str(tmp_path / "b.jpg"), ""])[0].tolist() == ["Puma", ""]


def test_a_model_with_item_features_is_scored_with_its_products_attributes(attribute_run):
    from tfmmsearch.data.catalog import read_catalog
    from tfmmsearch.data.prepare import resolve_catalog_dir

    config, model = load_trained_model(attribute_run)
    products = read_catalog(resolve_catalog_dir(config)).products
    titles = [p.title for p in products]
    paths = [str(p.image_path) if p.image_path else "" for p in products]
    queries = ["black caps", "red dress"]
    with_attributes = model_systems(model, products=products)[0]
    without = TrainedModelSystem("no attributes", model)
    scores = with_attributes.score(queries, titles, paths, FULL)
    assert not np.allclose(scores, without.score(queries, titles, paths, FULL))
    outputs = with_attributes.item_outputs(items_for_mode(titles, IMAGE_ONLY), paths)
    weights = outputs["modality_weights"]
    # The attribute modality takes part; an item with neither title nor photo left cannot be
    # placed (nothing identifies it) and has none.
    placed = np.array([bool(p.attributes.get("brand")) and p.image_path is not None
                       for p in products])
    assert placed.sum() > 40 and (weights[placed, 2] > 0).all()
    with pytest.raises(ValueError, match="the model reads"):
        TrainedModelSystem("wrong", model, attributes=ProductAttributes(products, ("brand",)))
