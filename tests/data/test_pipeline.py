"""tf.data pipelines: shapes, dtypes, pixel values, missing images, seeded shuffling, batching,
the TFDS-backed pipeline agreeing with the file pipeline, and query/item pair joins."""

import csv
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

tf = pytest.importorskip("tensorflow")

from tfmmsearch.data.pipeline import (  # noqa: E402
    catalog_dataset,
    decode_image,
    query_item_pairs_dataset,
    tfds_split_dataset,
)
from tfmmsearch.data.schema import Catalog, CatalogError, Product  # noqa: E402

SIZE = 8
NO_IMAGE = {2, 9}


def colour_of(number: int) -> tuple[int, int, int]:
    """A distinct solid colour per item, so an image identifies its product."""
    return ((number * 61 + 20) % 256, (number * 103 + 90) % 256, (number * 29 + 200) % 256)


def write_catalog(root: Path, count: int = 10) -> Catalog:
    """`count` products with solid-colour JPEGs of varying sizes; items in NO_IMAGE have none."""
    (root / "images").mkdir(parents=True)
    products = []
    with (root / "products.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["product_id", "title", "usage", "image"])
        for number in range(count):
            relative = ""
            if number not in NO_IMAGE:
                relative = f"images/{number}.jpg"
                Image.new("RGB", (10 + number, 14), colour_of(number)).save(root / relative,
                                                                           quality=95)
            usage = "sports" if number % 2 else "casual"
            writer.writerow([f"p{number}", f"title {number}", usage, relative])
            products.append(Product(f"p{number}", f"title {number}",
                                    root / relative if relative else None, {"usage": usage},
                                    row=number + 1))
    return Catalog(root, root / "products.csv", products, ["product_id", "title", "usage",
                                                           "image"])


@pytest.fixture
def catalog(tmp_path) -> Catalog:
    return write_catalog(tmp_path / "catalog")


def _ids(dataset) -> list[str]:
    return [pid.decode() for batch in dataset for pid in batch["product_id"].numpy()]


def _centre(image: np.ndarray) -> np.ndarray:
    """The 4x4 middle of an image: the photo itself, whatever margins letterboxing added."""
    return image[SIZE // 2 - 2:SIZE // 2 + 2, SIZE // 2 - 2:SIZE // 2 + 2]


def _number(product_id: bytes) -> int:
    return int(product_id.decode()[1:])


def test_batches_have_the_documented_shapes_and_dtypes(catalog):
    batch = next(iter(catalog_dataset(catalog, image_size=SIZE, batch_size=4,
                                      attribute_columns=["usage"])))
    assert set(batch) == {"product_id", "title", "image", "has_image", "usage"}
    assert batch["image"].shape == (4, SIZE, SIZE, 3) and batch["image"].dtype == tf.float32
    assert batch["product_id"].shape == (4,) and batch["product_id"].dtype == tf.string
    assert batch["title"].dtype == tf.string and batch["usage"].dtype == tf.string
    assert batch["has_image"].shape == (4,) and batch["has_image"].dtype == tf.bool
    assert [t.decode() for t in batch["title"].numpy()] == [f"title {n}" for n in range(4)]
    assert [u.decode() for u in batch["usage"].numpy()] == ["casual", "sports"] * 2


def test_pixels_are_the_item_colour_in_unit_range_and_missing_images_are_zero(catalog):
    checked = set()
    for batch in catalog_dataset(catalog, image_size=SIZE, batch_size=3):
        images = batch["image"].numpy()
        assert images.min() >= 0.0 and images.max() <= 1.0
        for product_id, image, has_image in zip(batch["product_id"].numpy(), images,
                                                batch["has_image"].numpy()):
            number = _number(product_id)
            if number in NO_IMAGE:
                assert not has_image
                assert not image.any()
            else:
                assert has_image
                expected = np.array(colour_of(number), np.float32) / 255.0
                np.testing.assert_allclose(_centre(image), np.broadcast_to(expected, (4, 4, 3)),
                                           atol=0.03)
            checked.add(number)
    assert checked == set(range(10))


def test_decode_image_of_empty_bytes_is_zeros_and_works_on_png():
    assert not decode_image(tf.constant(b""), 4).numpy().any()
    png = tf.io.encode_png(tf.fill([3, 5, 3], tf.constant(255, tf.uint8))).numpy()
    np.testing.assert_allclose(decode_image(tf.constant(png), 4).numpy(), 1.0, atol=1e-6)


def test_product_ids_select_and_order_the_items(catalog):
    wanted = ["p7", "p2", "p0"]
    dataset = catalog_dataset(catalog, image_size=SIZE, batch_size=2, product_ids=wanted)
    assert _ids(dataset) == wanted
    with pytest.raises(CatalogError, match="'p42'"):
        catalog_dataset(catalog, image_size=SIZE, batch_size=2, product_ids=["p42"])


def test_shuffling_is_repeatable_with_a_seed_and_differs_across_seeds(catalog):
    def two_epochs(seed):
        dataset = catalog_dataset(catalog, image_size=SIZE, batch_size=4, shuffle=True,
                                  seed=seed)
        return _ids(dataset), _ids(dataset)

    first_run, second_run = two_epochs(7), two_epochs(7)
    assert first_run == second_run
    epoch_one, epoch_two = first_run
    assert sorted(epoch_one) == sorted(epoch_two) == sorted(f"p{n}" for n in range(10))
    assert epoch_one != epoch_two  # reshuffled each epoch, reproducibly
    assert two_epochs(8)[0] != epoch_one
    assert epoch_one != [f"p{n}" for n in range(10)]


def test_drop_remainder_controls_the_last_batch(catalog):
    kept = [len(b["product_id"]) for b in catalog_dataset(catalog, image_size=SIZE,
                                                          batch_size=4)]
    dropped = [len(b["product_id"]) for b in catalog_dataset(catalog, image_size=SIZE,
                                                             batch_size=4,
                                                             drop_remainder=True)]
    assert kept == [4, 4, 2]
    assert dropped == [4, 4]
    static = catalog_dataset(catalog, image_size=SIZE, batch_size=4, drop_remainder=True)
    assert static.element_spec["image"].shape.as_list() == [4, SIZE, SIZE, 3]


def test_missing_image_file_fails_before_iteration_naming_the_row(catalog):
    (catalog.root / "images" / "5.jpg").unlink()
    with pytest.raises(CatalogError, match=r"products\.csv, row 6, field 'image'"):
        catalog_dataset(catalog, image_size=SIZE, batch_size=2)


def test_tfds_split_pipeline_matches_the_file_pipeline(catalog, tmp_path):
    from tfmmsearch.data.tfds_catalog import prepare_catalog_dataset

    splits = {"train": ["p4", "p2", "p0", "p9", "p1", "p6"], "test": ["p3", "p5"]}
    prepare_catalog_dataset(catalog, splits, tmp_path / "tfds", attribute_columns=["usage"])
    from_tfds = list(tfds_split_dataset(tmp_path / "tfds", "train", image_size=SIZE,
                                        batch_size=4))
    from_files = list(catalog_dataset(catalog, image_size=SIZE, batch_size=4,
                                      product_ids=splits["train"], attribute_columns=["usage"]))
    assert [len(b["product_id"]) for b in from_tfds] == [4, 2]
    for tfds_batch, file_batch in zip(from_tfds, from_files):
        assert set(tfds_batch) == set(file_batch)
        for name in ("product_id", "title", "has_image", "usage"):
            assert tfds_batch[name].numpy().tolist() == file_batch[name].numpy().tolist()
        np.testing.assert_allclose(tfds_batch["image"].numpy(), file_batch["image"].numpy(),
                                   atol=1e-6)
    assert not from_tfds[0]["image"][1].numpy().any()  # p2 has no image: zeros, not placeholder

    def order(seed):
        dataset = tfds_split_dataset(tmp_path / "tfds", "train", image_size=SIZE, batch_size=6,
                                     shuffle=True, seed=seed, drop_remainder=True)
        return _ids(dataset)

    assert order(3) == order(3)
    assert sorted(order(3)) == sorted(splits["train"])
    assert order(4) != order(3)


def test_pairs_join_each_query_with_its_product(catalog):
    pairs = [(f"query about {n}", f"p{n}") for n in (5, 2, 5, 8, 0, 9, 3)]
    dataset = query_item_pairs_dataset(pairs, catalog, image_size=SIZE, batch_size=3,
                                       attribute_columns=["usage"], shuffle=True, seed=1)
    joined = []
    for batch in dataset:
        assert set(batch) == {"query", "item"}
        item = batch["item"]
        assert item["image"].shape[1:] == (SIZE, SIZE, 3)
        for index, query in enumerate(batch["query"].numpy()):
            number = int(query.decode().rsplit(" ", 1)[1])
            assert item["product_id"][index].numpy().decode() == f"p{number}"
            assert item["title"][index].numpy().decode() == f"title {number}"
            assert bool(item["has_image"][index]) == (number not in NO_IMAGE)
            pixels = item["image"][index].numpy()
            expected = (np.zeros(3) if number in NO_IMAGE
                        else np.array(colour_of(number), np.float32) / 255.0)
            np.testing.assert_allclose(_centre(pixels).mean(axis=(0, 1)), expected, atol=0.03)
            joined.append(query.decode())
    assert sorted(joined) == sorted(query for query, _ in pairs)
    with pytest.raises(CatalogError, match=r"pair 1 .*'p77'"):
        query_item_pairs_dataset([("a", "p1"), ("b", "p77")], catalog, image_size=SIZE,
                                 batch_size=2)


def test_decode_image_letterboxes_on_white_keeping_the_aspect_ratio():
    # A black 2x4 (portrait) photo -> a square with the photo centred and white side margins.
    portrait = tf.io.encode_png(tf.zeros([4, 2, 3], tf.uint8)).numpy()
    image = decode_image(tf.constant(portrait), 8).numpy()
    assert image.shape == (8, 8, 3)
    np.testing.assert_allclose(image[:, 3:5], 0.0, atol=1e-6)  # the photo, unstretched
    np.testing.assert_allclose(image[:, [0, 7]], 1.0, atol=1e-6)  # white margins
    landscape = decode_image(tf.io.encode_png(tf.zeros([2, 4, 3], tf.uint8)), 8).numpy()
    np.testing.assert_allclose(landscape, np.transpose(image, (1, 0, 2)), atol=1e-6)
