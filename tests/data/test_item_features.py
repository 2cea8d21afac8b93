"""Item-feature vocabularies and statistics: computed from products, worked by hand."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from tfmmsearch.config import ConfigError, ItemFeatureConfig
from tfmmsearch.data.item_features import (
    ITEM_FEATURES_FILE,
    ItemFeatureStats,
    attribute_matrix,
    categorical_values,
    compute_item_feature_stats,
    numeric_value,
)
from tfmmsearch.data.schema import Product


def products(**columns) -> list[Product]:
    """Products p0.. whose attribute `name` takes the i-th value of columns[name]."""
    count = len(next(iter(columns.values())))
    return [Product(f"p{i}", f"title {i}", None, {name: values[i] for name, values in columns.items()})
            for i in range(count)]


BRAND = ItemFeatureConfig("brand", "categorical", max_vocabulary=2, embedding_dim=4)
MATERIAL = ItemFeatureConfig("material", "multi_categorical", separator="|")
PRICE = ItemFeatureConfig("price", "numeric", transform="log1p")


def test_categorical_vocabulary_is_the_most_frequent_values_and_missing_ones_are_counted():
    items = products(brand=["Puma", "Nike", " Nike ", "Adidas", "Puma", "NA", "", "n/a", "Zara",
                            "Nike"])
    (stats,) = compute_item_feature_stats(items, [BRAND]).features
    # Nike 3 (" Nike " is stripped), Puma 2, then Adidas and Zara once each: cut at 2.
    assert stats.vocabulary == ("Nike", "Puma")
    assert (stats.present, stats.missing, stats.out_of_vocabulary) == (7, 3, 2)
    # Ties are broken by the value, so the vocabulary does not depend on catalog order.
    tied = compute_item_feature_stats(products(brand=["b", "a", "c"]), [BRAND]).features[0]
    assert tied.vocabulary == ("a", "b")
    assert compute_item_feature_stats(products(brand=["c", "b", "a"]), [BRAND]).features[0] == tied


def test_values_keep_their_case_and_missing_words_are_any_case():
    assert categorical_values("NIKE") == ["NIKE"] and categorical_values("nike") == ["nike"]
    for missing in ("", "   ", "NA", "na", " N/A ", "NaN", "null", "None"):
        assert categorical_values(missing) == [], missing
    assert categorical_values("Nai") == ["Nai"]  # only the whole word is missing


def test_multi_categorical_counts_every_present_part():
    items = products(material=["Cotton|Linen", "Cotton", " | Linen|", "NA|", "", "Silk | Cotton"])
    (stats,) = compute_item_feature_stats(items, [MATERIAL]).features
    assert categorical_values(" | Linen|", "|") == ["Linen"]
    assert stats.vocabulary == ("Cotton", "Linen", "Silk")  # 3, 2, 1
    assert (stats.present, stats.missing) == (4, 2)  # "NA|" has no present part
    assert stats.separator == "|"


def test_numeric_log1p_statistics_by_hand():
    items = products(price=["99", "1,299.00", "", "-5", "1e3", " 249.50 ", "USD 10", "0"])
    (stats,) = compute_item_feature_stats(items, [PRICE]).features
    values = np.log1p([99.0, 1000.0, 249.5, 0.0])  # "-5" is missing under log1p
    assert (stats.present, stats.missing) == (4, 4)
    assert stats.mean == pytest.approx(values.mean())
    assert stats.std == pytest.approx(values.std())
    assert numeric_value("-5", "none") == -5.0 and numeric_value("-5", "log1p") is None
    assert numeric_value("1e3", "log1p") == pytest.approx(math.log1p(1000.0))


def test_a_constant_or_empty_numeric_column_standardises_with_std_1():
    constant = compute_item_feature_stats(products(price=["5", "5"]), [PRICE]).features[0]
    assert (constant.mean, constant.std) == (pytest.approx(math.log1p(5)), 1.0)
    empty = compute_item_feature_stats(products(price=["", "NA"]), [PRICE]).features[0]
    assert (empty.mean, empty.std, empty.present) == (0.0, 1.0, 0)


def test_statistics_round_trip_through_json(tmp_path):
    items = products(brand=["Nike", "Puma", "Café"], material=["a|b", "", "b"],
                     price=["10", "", "20.5"])
    stats = compute_item_feature_stats(items, [BRAND, MATERIAL, PRICE])
    path = stats.write(tmp_path / ITEM_FEATURES_FILE)
    assert ItemFeatureStats.read(path) == stats
    assert stats.columns == ("brand", "material", "price")
    stored = json.loads(path.read_text(encoding="utf-8"))
    assert stored["features"][0]["column"] == "brand" and "Café" in path.read_text(encoding="utf-8")
    assert not list(tmp_path.glob(".*.tmp"))  # written atomically, no temporary left
    stats.check_config([BRAND, MATERIAL, PRICE])
    with pytest.raises(ValueError, match="do not match"):
        stats.check_config([BRAND, PRICE, MATERIAL])  # another column order
    with pytest.raises(ValueError, match="do not match"):
        stats.check_config([BRAND, MATERIAL, ItemFeatureConfig("price", "numeric")])  # transform
    with pytest.raises(ValueError, match="format version"):
        ItemFeatureStats.from_json({"features": []})


def test_a_column_the_catalog_lacks_is_a_config_error_naming_the_key():
    with pytest.raises(ConfigError, match=r"model\.item_features\[1\]\.column: the catalog has no "
                                          r"column 'colour'") as caught:
        compute_item_feature_stats(products(brand=["x"]), [BRAND, ItemFeatureConfig("colour")])
    assert caught.value.key == "model.item_features[1].column"
    assert len(compute_item_feature_stats(products(brand=["x"]), [])) == 0


def test_attribute_matrix_holds_the_raw_strings_in_column_order():
    items = products(brand=["Nike", ""], price=["10", "NA"])
    matrix = attribute_matrix(items, ["price", "brand"])
    assert matrix.shape == (2, 2) and matrix.tolist() == [["10", "Nike"], ["NA", ""]]
    assert attribute_matrix(items, []).shape == (2, 0)
    assert attribute_matrix(items, ["nope"]).tolist() == [[""], [""]]
