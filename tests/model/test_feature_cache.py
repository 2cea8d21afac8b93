"""Frozen-tower feature caching: item tables, batched encoding, and the on-disk cache."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from tfmmsearch.data.schema import Product
from tfmmsearch.model.feature_cache import (
    ItemTable,
    cache_key,
    encode_images,
    encode_texts,
    load_or_compute,
)


class Computer:
    """A compute function that counts its calls."""

    def __init__(self, values):
        self.values, self.calls = values, 0

    def __call__(self):
        self.calls += 1
        return self.values


def test_load_or_compute_caches_and_second_call_reads_the_file(tmp_path):
    values = np.arange(12, dtype=np.float32).reshape(4, 3)
    compute = Computer(values)
    first = load_or_compute(tmp_path / "cache", "titles", "k1", compute)
    np.testing.assert_array_equal(first, values)
    assert compute.calls == 1
    assert [p.name for p in (tmp_path / "cache").iterdir()] == ["titles-k1.npz"]

    def fail():
        raise AssertionError("a cached key must not be recomputed")

    second = load_or_compute(tmp_path / "cache", "titles", "k1", fail)
    np.testing.assert_array_equal(second, values)
    assert second.dtype == np.float32

    # The file is what is read: change it on disk and the next call returns the change.
    np.savez(tmp_path / "cache" / "titles-k1.npz", values=values * 2)
    np.testing.assert_array_equal(load_or_compute(tmp_path / "cache", "titles", "k1", fail),
                                  values * 2)


def test_another_key_or_name_recomputes(tmp_path):
    compute = Computer(np.ones((2, 2), np.float32))
    load_or_compute(tmp_path, "titles", "k1", compute)
    load_or_compute(tmp_path, "titles", "k2", compute)
    load_or_compute(tmp_path, "images", "k1", compute)
    assert compute.calls == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "images-k1.npz", "titles-k1.npz", "titles-k2.npz"]  # no temporary files left


def test_cache_key_is_stable_and_sensitive():
    key = cache_key(ids=["a", "b"], encoder="tiny", seq=16)
    assert key == cache_key(seq=16, encoder="tiny", ids=["a", "b"])  # order of parts is irrelevant
    assert len(key) == 16 and int(key, 16) >= 0
    assert key != cache_key(ids=["a", "b"], encoder="tiny", seq=32)
    assert key != cache_key(ids=["b", "a"], encoder="tiny", seq=16)
    assert key != cache_key(ids=["a", "b"], encoder="other", seq=16)


def test_item_table_from_products(tmp_path):
    products = [Product("a", "Red Tee", tmp_path / "a.jpg"), Product("b", "  ", None)]
    table = ItemTable.from_products(products)
    assert len(table) == 2
    assert table.product_ids == ["a", "b"]
    assert table.titles == ["Red Tee", "  "]
    assert table.image_paths == [str(tmp_path / "a.jpg"), ""]
    np.testing.assert_array_equal(table.has_title, [True, False])
    np.testing.assert_array_equal(table.has_image, [True, False])
    assert table.has_title.dtype == table.has_image.dtype == bool


def test_encode_texts_batches_give_the_same_vectors():
    text = tf.keras.Input((), dtype=tf.string)
    length = tf.keras.layers.Lambda(
        lambda t: tf.stack([tf.cast(tf.strings.length(t), tf.float32),
                            tf.cast(tf.strings.length(t), tf.float32) ** 2], axis=-1))(text)
    encoder = tf.keras.Model(text, length)
    texts = ["a", "bb", "", "dddd", "eeeee"]
    whole = encode_texts(encoder, texts, batch_size=256)
    assert whole.dtype == np.float32 and whole.shape == (5, 2)
    np.testing.assert_array_equal(whole[:, 0], [1, 2, 0, 4, 5])
    np.testing.assert_array_equal(encode_texts(encoder, texts, batch_size=2), whole)


def test_encode_images_reads_files_and_blanks_missing_ones(tmp_path):
    paths = []
    for name, colour in (("red", (255, 0, 0)), ("blue", (0, 0, 255))):
        path = tmp_path / f"{name}.jpg"
        pixels = np.full((20, 20, 3), colour, np.uint8)
        path.write_bytes(tf.io.encode_jpeg(pixels, quality=100).numpy())
        paths.append(str(path))
    paths.insert(1, "")  # an item without an image
    image = tf.keras.Input((8, 8, 3))
    encoder = tf.keras.Model(image, tf.keras.layers.GlobalAveragePooling2D()(image))
    features = encode_images(encoder, paths, image_size=8, batch_size=2)
    assert features.dtype == np.float32 and features.shape == (3, 3)
    np.testing.assert_allclose(features, [[1, 0, 0], [0, 0, 0], [0, 0, 1]], atol=0.02)
    np.testing.assert_array_equal(encode_images(encoder, paths, image_size=8, batch_size=32),
                                  features)

