"""Streaming training input (`training.item_source: tfds`) against the in-memory tables.

One epoch streamed from the TFDS train split must hold exactly the in-memory path's pairs,
each with the same features; frozen features come from TFRecord shards written once, in the
split's order, atomically; and `train()` runs on it end to end.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from tests.conftest import REPO_ROOT
from tfmmsearch.config import AttributeColumnsConfig
from tfmmsearch.data.queries import Query
from tfmmsearch.data.schema import Product
from tfmmsearch.data.tfds_catalog import prepare_catalog_dataset
from tfmmsearch.model.feature_cache import FeatureStore, ItemTable
from tfmmsearch.model.feature_shards import FeatureShards, item_feature_shards
from tfmmsearch.model.search_model import Encoders
from tfmmsearch.training.datasets import training_dataset
from tfmmsearch.training.examples import build_examples
from tfmmsearch.training.streaming import streaming_training_dataset

pytestmark = pytest.mark.heavy  # trains or exports in its fixtures: scheduled first

SIZE = 16
COLOURS = {"Red": (255, 0, 0), "Green": (0, 255, 0), "Blue": (0, 0, 255)}


class Catalog:
    """Eight tees (one without an image, one without a title); seven are in the train split,
    stored in TFDS in an order unlike the catalog's, one in validation."""

    def __init__(self, root: Path):
        image_dir = root / "images"
        image_dir.mkdir()
        self.products = []
        pairs = [(c, g) for g in ("Men", "Women") for c in COLOURS] + [("Red", "Unisex")] * 2
        for index, (colour, gender) in enumerate(pairs):
            path = None
            if index != 4:
                pixels = np.full((24, 20 + index, 3), COLOURS[colour], np.uint8)
                path = image_dir / f"{index}.jpg"
                path.write_bytes(tf.io.encode_jpeg(pixels, quality=100).numpy())
            title = "" if index == 5 else f"{gender} {colour} Tshirts"
            self.products.append(Product(f"p{index}", title, path, {
                "article_type": "Tshirts", "gender": gender, "base_colour": colour,
                "brand": f"Brand {index % 3}", "price": "" if index == 2 else f"{100 + index}"}))
        self.train = [p for p in self.products if p.product_id != "p6"]  # catalog order
        self.split_ids = [p.product_id for p in reversed(self.train)]  # TFDS order
        queries = [Query("tees", {"article_type": "Tshirts"}),
                   Query("red tees", {"article_type": "Tshirts", "base_colour": "Red"}),
                   Query("tees for women", {"article_type": "Tshirts", "gender": "Women"})]
        self.examples = build_examples(queries, self.train, AttributeColumnsConfig(),
                                       max_per_query=None)
        assert len(self.examples) == 7 + 3 + 3
        self.items = ItemTable.from_products(self.train)
        self.product_ids = self.items.product_ids
        self.tfds_dir = root / "tfds"
        self.builder = prepare_catalog_dataset(
            self.products, {"train": self.split_ids, "validation": ["p6"]}, self.tfds_dir)

    def memory(self, batch_size=1, shuffle=False, **kwargs):
        return training_dataset(self.examples, self.items, batch_size=batch_size, seed=0,
                                image_size=SIZE, shuffle=shuffle, **kwargs)

    def streamed(self, batch_size=1, seed=0, **kwargs):
        return streaming_training_dataset(self.examples, self.product_ids, self.builder,
                                          self.split_ids, batch_size=batch_size, seed=seed,
                                          image_size=SIZE, **kwargs)


@pytest.fixture(scope="module")
def catalog(tmp_path_factory) -> Catalog:
    return Catalog(tmp_path_factory.mktemp("streaming"))


def rows(dataset) -> list[dict]:
    return [{key: value.numpy() for key, value in element.items()}
            for element in dataset.unbatch()]


def pair_key(row) -> tuple[str, str]:
    query = row["query"].decode() if "query" in row else tuple(row["query_features"])
    return query, row["product_id"].decode()


def assert_same_pairs(memory_rows, streamed_rows, exact=True):
    """The same multiset of (query, product) pairs, each pair with the same features."""
    assert Counter(map(pair_key, streamed_rows)) == Counter(map(pair_key, memory_rows))
    expected = {pair_key(row): row for row in memory_rows}
    for row in streamed_rows:
        reference = expected[pair_key(row)]
        assert set(row) == set(reference)
        for key, value in row.items():
            if exact or np.asarray(value).dtype.kind != "f":
                np.testing.assert_array_equal(value, reference[key], err_msg=key)
            else:
                np.testing.assert_allclose(value, reference[key], rtol=1e-5, atol=1e-6,
                                           err_msg=key)


def test_one_streamed_epoch_is_the_in_memory_epoch(catalog):
    memory, streamed = rows(catalog.memory(words=True)), rows(catalog.streamed(words=True))
    assert len(streamed) == len(catalog.examples)
    assert_same_pairs(memory, streamed)
    by_id = {row["product_id"].decode(): row for row in streamed}
    assert not by_id["p4"]["has_image"] and not by_id["p4"]["image"].any()  # placeholder: zeros
    assert not by_id["p5"]["has_title"] and by_id["p5"]["has_image"]
    assert by_id["p0"]["image"][..., 0].mean() > 0.9  # decoded red, letterboxed like a file
    assert "p6" not in by_id  # another split's product is never read


def test_item_feature_strings_stream_like_the_in_memory_ones(catalog):
    columns = ("brand", "price")
    items = ItemTable.from_products(catalog.train, columns)
    memory = rows(training_dataset(catalog.examples, items, batch_size=1, seed=0,
                                   image_size=SIZE, shuffle=False))
    by_id = {p.product_id: p for p in catalog.products}
    values = np.array([[by_id[pid].attributes[c] for c in columns] for pid in catalog.split_ids],
                      dtype=object)
    streamed = rows(catalog.streamed(attribute_values=values))
    assert_same_pairs(memory, streamed)
    row = next(r for r in streamed if r["product_id"] == b"p2")
    assert row["attribute_values"].tolist() == [b"Brand 2", b""]
    batched = catalog.streamed(4, attribute_values=values)
    assert batched.element_spec["attribute_values"].shape.as_list() == [4, 2]
    assert batched.element_spec == training_dataset(catalog.examples, items, batch_size=4, seed=0,
                                                    image_size=SIZE).element_spec
    with pytest.raises(ValueError, match="attribute_values has 6 rows for 7 items"):
        catalog.streamed(attribute_values=values[1:])


def test_batches_match_the_in_memory_element_spec(catalog):
    batch = 4  # 13 pairs: 3 full batches, the remainder dropped as in memory
    for kwargs in ({}, {"words": True}):
        memory, streamed = catalog.memory(batch, **kwargs), catalog.streamed(batch, **kwargs)
        assert streamed.element_spec == memory.element_spec
        assert streamed.cardinality().numpy() == len(catalog.examples) // batch
        assert len(list(streamed)) == len(catalog.examples) // batch
    kept = catalog.streamed(batch, drop_remainder=False)
    assert kept.cardinality().numpy() == math.ceil(len(catalog.examples) / batch)
    assert sum(len(b["product_id"]) for b in kept) == len(catalog.examples)


def test_shuffling_is_seeded_and_redrawn_each_epoch(catalog):
    def order(dataset):
        return [pair_key(row) for row in rows(dataset)]

    dataset = catalog.streamed(seed=3, item_buffer=2, pair_buffer=4)
    first, second = order(dataset), order(dataset)
    assert Counter(first) == Counter(second)
    assert first != second  # a new order per epoch
    assert order(catalog.streamed(seed=3, item_buffer=2, pair_buffer=4)) == first
    assert order(catalog.streamed(seed=4, item_buffer=2, pair_buffer=4)) != first
    unshuffled = order(catalog.streamed(shuffle=False))
    assert [pid for _, pid in unshuffled] == sorted(
        (pid for _, pid in unshuffled), key=catalog.split_ids.index)  # split order, item by item


def test_a_split_out_of_the_runs_order_fails_naming_it(catalog):
    wrong = [catalog.split_ids[1], catalog.split_ids[0], *catalog.split_ids[2:]]
    dataset = streaming_training_dataset(catalog.examples, catalog.product_ids, catalog.builder,
                                         wrong, batch_size=1, seed=0, image_size=SIZE)
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match="not in the order of the product ids this run expects"):
        list(dataset)
    with pytest.raises(ValueError, match="holds 7 products, 6 were expected"):
        streaming_training_dataset(catalog.examples, catalog.product_ids, catalog.builder,
                                   catalog.split_ids[1:], batch_size=1, seed=0, image_size=SIZE)


# --------------------------------------------------------------------------- feature shards


@pytest.fixture(scope="module")
def frozen(tiny_config, tmp_path_factory, catalog):
    """The tiny config's frozen encoders, and in-memory features of the catalog (an .npz)."""
    from tfmmsearch.model.build import build_encoders

    config = tiny_config("towers.image.image_size=16")
    encoders = build_encoders(config)
    cache_dir = tmp_path_factory.mktemp("feature_cache")
    cached = FeatureStore(config, encoders, catalog.items, cache_dir).item_features()
    assert set(cached) == {"title_features", "image_features"}
    return config, encoders, cached


def split_store(catalog, config, encoders, cache_dir) -> FeatureStore:
    """A FeatureStore over the train split in its TFDS order (what the shard writer takes)."""
    by_id = {p.product_id: p for p in catalog.train}
    items = ItemTable.from_products([by_id[pid] for pid in catalog.split_ids])
    return FeatureStore(config, encoders, items, cache_dir)


def test_cached_features_stream_from_shards_equal_to_the_in_memory_ones(catalog, frozen, tmp_path):
    config, encoders, cached = frozen
    shards = item_feature_shards(split_store(catalog, config, encoders, tmp_path), catalog.builder,
                                 "train", items_per_shard=3, batch_size=2)
    assert shards.files == tuple(f"train-0000{i}-of-00003.tfrecord" for i in range(3))
    assert [p.name for p in sorted(tmp_path.iterdir())] == [shards.directory.name]
    assert shards.dims == {"title_features": cached["title_features"].shape[1],
                           "image_features": cached["image_features"].shape[1]}
    records = list(shards.dataset().as_numpy_iterator())
    assert [r["product_id"].decode() for r in records] == catalog.split_ids

    query_features = np.random.default_rng(0).normal(
        size=(len(catalog.examples.query_texts), 5)).astype(np.float32)
    memory = rows(catalog.memory(cached={**cached, "query_features": query_features}))
    streamed = rows(catalog.streamed(shards=[shards], query_features=query_features))
    assert "image" not in streamed[0] and "title" not in streamed[0]
    assert_same_pairs(memory, streamed, exact=True)


def test_shards_are_written_once_and_reused(catalog, frozen, tmp_path, caplog):
    config, encoders, _ = frozen
    caplog.set_level(logging.INFO, logger="tfmmsearch.model.feature_shards")
    store = split_store(catalog, config, encoders, tmp_path)
    first = item_feature_shards(store, catalog.builder, "train")
    assert "wrote title_features+image_features feature shards" in caplog.text
    mtimes = {p: p.stat().st_mtime_ns for p in first.directory.iterdir()}
    caplog.clear()
    again = item_feature_shards(store, catalog.builder, "train")
    assert again == first and "reusing" in caplog.text and "wrote" not in caplog.text
    assert {p: p.stat().st_mtime_ns for p in first.directory.iterdir()} == mtimes
    # Another encoder is another key: new shards, the old ones untouched.
    other = split_store(catalog, tiny_other_text(config), encoders, tmp_path)
    assert item_feature_shards(other, catalog.builder, "train").directory != first.directory


def tiny_other_text(config):
    import dataclasses

    text = dataclasses.replace(config.towers.text, seq_length=config.towers.text.seq_length + 1)
    return dataclasses.replace(config, towers=dataclasses.replace(config.towers, text=text))


class FailsOnSecondTrace:
    """An image encoder that dies once some records are written (a crash mid-cache)."""

    def __init__(self, encoder):
        self.encoder, self.calls = encoder, 0

    def __call__(self, batch, training=False):
        self.calls += 1
        if self.calls > 1:
            raise RuntimeError("simulated crash")
        return self.encoder(batch, training=training)


def test_a_crash_while_writing_leaves_no_cache(catalog, frozen, tmp_path):
    config, encoders, _ = frozen
    broken = Encoders(text=encoders.text, image=FailsOnSecondTrace(encoders.image),
                      query=encoders.query)
    store = split_store(catalog, config, broken, tmp_path)
    with pytest.raises(RuntimeError, match="simulated crash"):
        item_feature_shards(store, catalog.builder, "train", batch_size=4)  # batches 4, then 3
    assert broken.image.calls == 2
    assert list(tmp_path.iterdir()) == []  # neither shards nor a temporary directory
    shards = item_feature_shards(split_store(catalog, config, encoders, tmp_path), catalog.builder,
                                 "train", batch_size=4)
    assert FeatureShards.read(shards.directory).count == len(catalog.split_ids)


def test_a_damaged_shard_directory_is_an_error_naming_it(catalog, frozen, tmp_path):
    config, encoders, _ = frozen
    store = split_store(catalog, config, encoders, tmp_path)
    shards = item_feature_shards(store, catalog.builder, "train")
    (shards.directory / shards.files[0]).unlink()
    with pytest.raises(ValueError, match=f"{shards.files[0]}.*delete {shards.directory}"):
        item_feature_shards(store, catalog.builder, "train")


# --------------------------------------------------------------------------- train()


def test_train_streams_from_tfds_and_reuses_its_feature_shards(tiny_config, tmp_path, caplog):
    from tfmmsearch.training.train import train

    caplog.set_level(logging.INFO, logger="tfmmsearch")
    config = tiny_config("training.item_source=tfds", "training.epochs=1")
    cache_dir = Path(config.data.work_dir) / "feature_cache"
    before = set(cache_dir.glob("shards-*"))
    result = train(config, tmp_path / "first", verbose=0)
    assert len(result.history["loss"]) == 1 and np.isfinite(result.history["loss"]).all()
    assert np.isfinite(result.history["retrieval_loss"]).all()
    assert "items from tfds" in caplog.text
    written = set(cache_dir.glob("shards-*")) - before
    assert len(written) == 1 and "wrote title_features+image_features" in caplog.text
    shards = FeatureShards.read(written.pop())
    assert (Path(config.data.work_dir) / "tfds" / "catalog_dataset" / "1.0.0").is_dir()
    mtimes = {p: p.stat().st_mtime_ns for p in shards.directory.iterdir()}

    caplog.clear()
    train(config, tmp_path / "second", verbose=0)
    assert "reusing title_features+image_features feature shards" in caplog.text
    assert "wrote title_features" not in caplog.text
    assert {p: p.stat().st_mtime_ns for p in shards.directory.iterdir()} == mtimes
    import json
    metrics = json.loads((tmp_path / "first" / "metrics.json").read_text())
    assert metrics["steps_per_epoch"] == metrics["train_pairs"] // config.training.batch_size


def test_item_source_is_a_checked_choice_defaulting_to_memory():
    from tfmmsearch.config import ConfigError, load_config

    assert load_config(None, []).training.item_source == "memory"
    assert load_config(REPO_ROOT / "configs" / "demo.yaml").training.item_source == "tfds"
    with pytest.raises(ConfigError, match="training.item_source: 'disk' is not one of memory, tfds"):
        load_config(None, ["training.item_source=disk"])


def test_log_pairs_stream_over_every_split_they_touch(catalog):
    """Search-log pairs name products of any split: the stream reads the splits one after
    another and gives each pair once, with the pair's weight, grade and query id."""
    from tfmmsearch.data.log_pairs import LogPair
    from tfmmsearch.training.examples import AttributeIds, log_examples

    pairs = [LogPair("red tee", "p6", 2, 3.0, 1, ()), LogPair("red tee", "p0", 1, 1.5, 2, ()),
             LogPair("tee", "p1", 1, 1.0, 1, ())]
    examples = log_examples(pairs, catalog.products, AttributeColumnsConfig(),
                            AttributeIds.unread(), with_negatives=False)
    ids = [p.product_id for p in catalog.products]
    dataset = streaming_training_dataset(
        examples, ids, catalog.builder, catalog.split_ids + ["p6"], batch_size=1, seed=0,
        image_size=SIZE, splits=("train", "validation"), shuffle=False)
    streamed = {(row["query"].decode(), row["product_id"].decode()):
                (row["sample_weight"], row["positive_grade"], row["query_id"])
                for row in rows(dataset)}
    assert streamed == {("red tee", "p6"): (3.0, 2, 0), ("red tee", "p0"): (1.5, 1, 0),
                        ("tee", "p1"): (1.0, 1, 1)}
    with pytest.raises(ValueError, match="not in split 'train'"):  # one split is not enough
        streaming_training_dataset(examples, ids, catalog.builder, catalog.split_ids,
                                   batch_size=1, seed=0, image_size=SIZE)
    negatives = log_examples([LogPair("tee", "p1", 1, 1.0, 2, ("p0",))], catalog.products,
                             AttributeColumnsConfig(), AttributeIds.unread())
    with pytest.raises(ValueError, match="item_source: memory"):
        streaming_training_dataset(negatives, ids, catalog.builder, catalog.split_ids,
                                   batch_size=1, seed=0, image_size=SIZE)
