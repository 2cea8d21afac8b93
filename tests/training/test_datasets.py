"""tf.data training input: element keys, shapes, dtypes and values, cached and raw."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from tfmmsearch.config import AttributeColumnsConfig
from tfmmsearch.data.queries import Query
from tfmmsearch.data.schema import Product
from tfmmsearch.training.datasets import training_dataset
from tfmmsearch.training.examples import build_examples
from tfmmsearch.model.feature_cache import ItemTable

SIZE = 16
BATCH = 3
COLOURS = {"Red": (255, 0, 0), "Green": (0, 255, 0), "Blue": (0, 0, 255)}
COMMON_KEYS = {"product_id", "has_title", "has_image", "item_attributes", "query_attributes",
               "sampling_probability", "query_id", "sample_weight", "positive_grade"}


@pytest.fixture(scope="module")
def catalog(tmp_path_factory):
    """Six tees: solid-colour JPEGs, one without an image, one without a title."""
    image_dir = tmp_path_factory.mktemp("images")
    products = []
    for index, (colour, gender) in enumerate(
            [(c, g) for g in ("Men", "Women") for c in COLOURS]):
        path = None
        if index != 4:
            pixels = np.full((24, 24, 3), COLOURS[colour], np.uint8)
            path = image_dir / f"{index}.jpg"
            path.write_bytes(tf.io.encode_jpeg(pixels, quality=100).numpy())
        title = "" if index == 5 else f"{gender} {colour} Tshirt"
        products.append(Product(f"p{index}", title, path, {
            "article_type": "Tshirts", "gender": gender, "base_colour": colour,
            "brand": f"Brand {index}", "price": "" if index == 1 else f"{100 + index}.00"}))
    queries = [Query("tees", {"article_type": "Tshirts"}),
               Query("red tees", {"article_type": "Tshirts", "base_colour": "Red"}),
               Query("tees for women", {"article_type": "Tshirts", "gender": "Women"})]
    examples = build_examples(queries, products, AttributeColumnsConfig(), max_per_query=None)
    assert len(examples) == 6 + 2 + 3
    return products, examples, ItemTable.from_products(products)


def elements(dataset) -> list[dict]:
    """Unbatched elements as numpy values."""
    return [{key: value.numpy() for key, value in element.items()}
            for element in dataset.unbatch()]


def check_common(element_spec, rows, examples, items):
    for key, dtype, shape in (("product_id", tf.string, [BATCH]), ("has_title", tf.bool, [BATCH]),
                              ("has_image", tf.bool, [BATCH]),
                              ("item_attributes", tf.int32, [BATCH, 4]),
                              ("query_attributes", tf.int32, [BATCH, 4]),
                              ("sampling_probability", tf.float32, [BATCH])):
        assert element_spec[key].dtype == dtype, key
        assert element_spec[key].shape.as_list() == shape, key
    assert len(rows) == len(examples) // BATCH * BATCH  # drop_remainder
    by_id = {pid: i for i, pid in enumerate(items.product_ids)}
    for row, example in zip(rows, range(len(examples))):  # shuffle=False keeps example order
        product = by_id[row["product_id"].decode()]
        query = int(examples.query_index[example])
        assert product == examples.product_index[example]
        assert row["has_title"] == items.has_title[product]
        assert row["has_image"] == items.has_image[product]
        np.testing.assert_array_equal(row["item_attributes"], examples.item_attributes[product])
        np.testing.assert_array_equal(row["query_attributes"], examples.query_attributes[query])
        assert row["sampling_probability"] == examples.sampling_probability[example]
        assert row["query_id"] == query
        assert row["sample_weight"] == examples.weight[example]
        assert row["positive_grade"] == examples.positive_grade[example]


def test_raw_elements_carry_strings_and_decoded_images(catalog):
    products, examples, items = catalog
    dataset = training_dataset(examples, items, batch_size=BATCH, seed=0, image_size=SIZE,
                               shuffle=False)
    spec = dataset.element_spec
    assert set(spec) == COMMON_KEYS | {"query", "title", "image"}
    assert spec["query"].dtype == spec["title"].dtype == tf.string
    assert spec["image"].dtype == tf.float32
    assert spec["image"].shape.as_list() == [BATCH, SIZE, SIZE, 3]
    rows = elements(dataset)
    check_common(spec, rows, examples, items)
    by_id = {pid: i for i, pid in enumerate(items.product_ids)}
    for example, row in enumerate(rows):
        product = by_id[row["product_id"].decode()]
        assert row["query"].decode() == examples.query_texts[examples.query_index[example]]
        assert row["title"].decode() == items.titles[product]
        image = row["image"]
        assert 0.0 <= image.min() and image.max() <= 1.0
        if not items.has_image[product]:
            assert not image.any()  # no image: zeros, masked by has_image
        else:
            channel = list(COLOURS).index(products[product].attributes["base_colour"])
            assert image[..., channel].mean() > 0.9
            assert np.delete(image, channel, axis=-1).mean() < 0.1


def test_cached_elements_carry_feature_rows_instead(catalog):
    products, examples, items = catalog
    def rows(count, width, sign=1.0):  # row i is filled with sign * i: its index shows
        return sign * np.arange(count, dtype=np.float32)[:, None] * np.ones((1, width), np.float32)

    cached = {"query_features": rows(len(examples.query_texts), 5),
              "title_features": rows(len(products), 7),
              "image_features": rows(len(products), 3, sign=-1.0)}
    dataset = training_dataset(examples, items, batch_size=BATCH, seed=0, image_size=SIZE,
                               cached=cached, shuffle=False)
    spec = dataset.element_spec
    assert set(spec) == COMMON_KEYS | set(cached)
    for key, width in (("query_features", 5), ("title_features", 7), ("image_features", 3)):
        assert spec[key].dtype == tf.float32 and spec[key].shape.as_list() == [BATCH, width]
    rows = elements(dataset)
    check_common(spec, rows, examples, items)
    for example, row in enumerate(rows):
        product = int(examples.product_index[example])
        np.testing.assert_array_equal(row["query_features"],
                                      cached["query_features"][examples.query_index[example]])
        np.testing.assert_array_equal(row["title_features"], cached["title_features"][product])
        np.testing.assert_array_equal(row["image_features"], cached["image_features"][product])


def test_partly_cached_mixes_features_and_raw_inputs(catalog):
    _, examples, items = catalog
    cached = {"image_features": np.zeros((len(items), 3), np.float32)}
    dataset = training_dataset(examples, items, batch_size=BATCH, seed=0, image_size=SIZE,
                               cached=cached)
    assert set(dataset.element_spec) == COMMON_KEYS | {"query", "title", "image_features"}


def test_shuffling_is_seeded_and_covers_every_pair_each_epoch(catalog):
    _, examples, items = catalog
    batch = 1  # no remainder dropped: every pair must appear once per epoch

    def order(seed):
        dataset = training_dataset(examples, items, batch_size=batch, seed=seed, image_size=SIZE,
                                   cached={"image_features": np.zeros((len(items), 3), np.float32)})
        return [(row["query"].decode(), row["product_id"].decode()) for row in elements(dataset)]

    expected = sorted((examples.query_texts[q], items.product_ids[p])
                      for q, p in zip(examples.query_index, examples.product_index))
    first = order(seed=1)
    assert sorted(first) == expected
    assert order(seed=1) == first
    assert order(seed=2) != first


def test_words_add_hashed_query_and_title_words(catalog):
    from tfmmsearch.model.lexical import MAX_QUERY_WORDS, MAX_TITLE_WORDS, word_ids

    products, examples, items = catalog
    dataset = training_dataset(examples, items, batch_size=BATCH, seed=0, image_size=SIZE,
                               cached={"image_features": np.zeros((len(items), 3), np.float32)},
                               shuffle=False, words=True)
    spec = dataset.element_spec
    assert spec["title_words"].shape.as_list() == [BATCH, MAX_TITLE_WORDS]
    assert spec["query_words"].shape.as_list() == [BATCH, MAX_QUERY_WORDS]
    titles = word_ids([p.title for p in products], MAX_TITLE_WORDS).numpy()
    queries = word_ids(examples.query_texts, MAX_QUERY_WORDS).numpy()
    for example, row in enumerate(elements(dataset)):
        np.testing.assert_array_equal(row["title_words"], titles[examples.product_index[example]])
        np.testing.assert_array_equal(row["query_words"], queries[examples.query_index[example]])


def test_log_pairs_carry_their_skipped_products_inputs(catalog):
    from tfmmsearch.data.log_pairs import LogPair
    from tfmmsearch.training.examples import AttributeIds, log_examples

    products, _, items = catalog
    examples = log_examples([LogPair("red tee", "p0", 2, 3.0, 2, ("p1",)),
                             LogPair("tee", "p2", 1, 1.0, 1, ())], products,
                            AttributeColumnsConfig(), AttributeIds.unread())
    cached = {"title_features": np.arange(len(products), dtype=np.float32)[:, None] * [1, 1],
              "image_features": -np.arange(len(products), dtype=np.float32)[:, None] * [1, 1, 1]}
    dataset = training_dataset(examples, items, batch_size=2, seed=0, image_size=SIZE,
                               cached=cached, shuffle=False)
    assert {"negative_title_features", "negative_image_features", "negative_has_title",
            "negative_has_image", "negative_product_id", "has_negative"} <= set(dataset.element_spec)
    first, second = elements(dataset)
    assert first["has_negative"] and not second["has_negative"]
    np.testing.assert_array_equal(first["negative_title_features"], [1, 1])  # p1's row
    np.testing.assert_array_equal(first["negative_image_features"], [-1, -1, -1])
    assert first["negative_product_id"] == b"p1"
    assert (first["sample_weight"], first["positive_grade"]) == (3.0, 2)
    raw = elements(training_dataset(examples, items, batch_size=2, seed=0, image_size=SIZE,
                                    shuffle=False))[0]
    assert raw["negative_title"].decode() == items.titles[1]
    assert raw["negative_image"].shape == (SIZE, SIZE, 3)
    assert raw["negative_image"][..., 1].mean() > 0.9  # p1 is the green tee


def test_item_feature_strings_travel_with_the_item_and_its_hard_negative(catalog):
    import dataclasses

    products, examples, _ = catalog
    items = ItemTable.from_products(products, ("brand", "price"))
    negatives = np.full(len(examples), -1, np.int32)
    negatives[::2] = (examples.product_index[::2] + 1) % len(products)  # every other pair
    with_negatives = dataclasses.replace(examples, negative_index=negatives)
    dataset = training_dataset(with_negatives, items, batch_size=BATCH, seed=0, image_size=SIZE,
                               shuffle=False)
    spec = dataset.element_spec
    assert spec["attribute_values"].dtype == tf.string
    assert spec["attribute_values"].shape.as_list() == [BATCH, 2]
    assert spec["negative_attribute_values"].shape.as_list() == [BATCH, 2]
    for example, row in enumerate(elements(dataset)):
        product = products[examples.product_index[example]]
        assert row["attribute_values"].tolist() == [product.attributes["brand"].encode(),
                                                    product.attributes["price"].encode()]
        if negatives[example] >= 0:
            negative = products[negatives[example]]
            assert row["has_negative"]
            assert row["negative_attribute_values"][0] == negative.attributes["brand"].encode()
            assert row["negative_product_id"] == negative.product_id.encode()
        else:
            assert not row["has_negative"]
    # Without item features the elements carry no attribute strings at all.
    plain = training_dataset(examples, ItemTable.from_products(products), batch_size=BATCH,
                             seed=0, image_size=SIZE, shuffle=False)
    assert "attribute_values" not in plain.element_spec
