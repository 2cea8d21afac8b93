"""The TFDS split pipeline (shapes, dtypes, pixel values, missing images, seeded shuffling,
batching) and in-graph image decoding (letterboxing, PNG, empty bytes)."""

import csv
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

tf = pytest.importorskip("tensorflow")
pytest.importorskip("tensorflow_datasets")

from tfmmsearch.data.pipeline import decode_image, read_image, tfds_split_dataset  # noqa: E402
from tfmmsearch.data.schema import Catalog, Product  # noqa: E402
from tfmmsearch.data.tfds_catalog import prepare_catalog_dataset  # noqa: E402

SIZE = 8
NO_IMAGE = {2, 9}
# The prepared split's order (not catalog order), so reading it back in order is checked.
ORDER = ["p4", "p2", "p0", "p9", "p1", "p6", "p3", "p8", "p5", "p7"]


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


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> tuple[Catalog, Path]:
    """The catalog and a data_dir holding it as one TFDS split, "train", in ORDER."""
    root = tmp_path_factory.mktemp("pipeline")
    catalog = write_catalog(root / "catalog")
    prepare_catalog_dataset(catalog, {"train": ORDER}, root / "tfds",
                            attribute_columns=["usage"])
    return catalog, root / "tfds"


def _dataset(prepared, **options):
    return tfds_split_dataset(prepared[1], "train", image_size=SIZE, **options)


def _ids(dataset) -> list[str]:
    return [pid.decode() for batch in dataset for pid in batch["product_id"].numpy()]


def _centre(image: np.ndarray) -> np.ndarray:
    """The 4x4 middle of an image: the photo itself, whatever margins letterboxing added."""
    return image[SIZE // 2 - 2:SIZE // 2 + 2, SIZE // 2 - 2:SIZE // 2 + 2]


def _number(product_id: bytes) -> int:
    return int(product_id.decode()[1:])


def test_batches_have_the_documented_shapes_and_dtypes_in_split_order(prepared):
    batch = next(iter(_dataset(prepared, batch_size=4)))
    assert set(batch) == {"product_id", "title", "image", "has_image", "usage"}
    assert batch["image"].shape == (4, SIZE, SIZE, 3) and batch["image"].dtype == tf.float32
    assert batch["product_id"].shape == (4,) and batch["product_id"].dtype == tf.string
    assert batch["title"].dtype == tf.string and batch["usage"].dtype == tf.string
    assert batch["has_image"].shape == (4,) and batch["has_image"].dtype == tf.bool
    numbers = [int(pid[1:]) for pid in ORDER[:4]]
    assert [t.decode() for t in batch["title"].numpy()] == [f"title {n}" for n in numbers]
    assert [u.decode() for u in batch["usage"].numpy()] == [
        "sports" if n % 2 else "casual" for n in numbers]
    assert _ids(_dataset(prepared, batch_size=3)) == ORDER


def test_pixels_are_the_item_colour_in_unit_range_and_missing_images_are_zero(prepared):
    catalog, _ = prepared
    paths = {p.product_id: p.image_path for p in catalog.products}
    checked = set()
    for batch in _dataset(prepared, batch_size=3):
        images = batch["image"].numpy()
        assert images.min() >= 0.0 and images.max() <= 1.0
        for product_id, image, has_image in zip(batch["product_id"].numpy(), images,
                                                batch["has_image"].numpy()):
            number = _number(product_id)
            if number in NO_IMAGE:
                assert not has_image
                assert not image.any()  # zeros, not the stored black placeholder's pixels
            else:
                assert has_image
                expected = np.array(colour_of(number), np.float32) / 255.0
                np.testing.assert_allclose(_centre(image), np.broadcast_to(expected, (4, 4, 3)),
                                           atol=0.03)
                # The stored bytes decode exactly as the catalog's own file does.
                from_file = read_image(tf.constant(str(paths[product_id.decode()])), SIZE)
                np.testing.assert_allclose(image, from_file.numpy(), atol=1e-6)
            checked.add(number)
    assert checked == set(range(10))


def test_decode_image_of_empty_bytes_is_zeros_and_works_on_png():
    assert not decode_image(tf.constant(b""), 4).numpy().any()
    png = tf.io.encode_png(tf.fill([3, 5, 3], tf.constant(255, tf.uint8))).numpy()
    np.testing.assert_allclose(decode_image(tf.constant(png), 4).numpy(), 1.0, atol=1e-6)


def test_shuffling_is_repeatable_with_a_seed_and_differs_across_seeds(prepared):
    def two_epochs(seed):
        dataset = _dataset(prepared, batch_size=4, shuffle=True, seed=seed)
        return _ids(dataset), _ids(dataset)

    first_run, second_run = two_epochs(7), two_epochs(7)
    assert first_run == second_run
    epoch_one, epoch_two = first_run
    assert sorted(epoch_one) == sorted(epoch_two) == sorted(ORDER)
    assert epoch_one != epoch_two  # reshuffled each epoch, reproducibly
    assert two_epochs(8)[0] != epoch_one
    assert epoch_one != ORDER


def test_drop_remainder_controls_the_last_batch(prepared):
    kept = [len(b["product_id"]) for b in _dataset(prepared, batch_size=4)]
    dropped = [len(b["product_id"]) for b in _dataset(prepared, batch_size=4,
                                                      drop_remainder=True)]
    assert kept == [4, 4, 2]
    assert dropped == [4, 4]
    static = _dataset(prepared, batch_size=4, drop_remainder=True)
    assert static.element_spec["image"].shape.as_list() == [4, SIZE, SIZE, 3]
    with pytest.raises(ValueError, match="batch_size"):
        _dataset(prepared, batch_size=0)


def test_decode_image_letterboxes_on_white_keeping_the_aspect_ratio():
    # A black 2x4 (portrait) photo -> a square with the photo centred and white side margins.
    portrait = tf.io.encode_png(tf.zeros([4, 2, 3], tf.uint8)).numpy()
    image = decode_image(tf.constant(portrait), 8).numpy()
    assert image.shape == (8, 8, 3)
    np.testing.assert_allclose(image[:, 3:5], 0.0, atol=1e-6)  # the photo, unstretched
    np.testing.assert_allclose(image[:, [0, 7]], 1.0, atol=1e-6)  # white margins
    landscape = decode_image(tf.io.encode_png(tf.zeros([2, 4, 3], tf.uint8)), 8).numpy()
    np.testing.assert_allclose(landscape, np.transpose(image, (1, 0, 2)), atol=1e-6)
