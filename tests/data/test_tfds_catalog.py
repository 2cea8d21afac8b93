"""The TFDS catalog builder: offline preparation, split membership, byte and pixel round-trips."""

import csv
import io
import socket
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

tf = pytest.importorskip("tensorflow")
tfds = pytest.importorskip("tensorflow_datasets")

from tfmmsearch.data.schema import Catalog, CatalogError, Product  # noqa: E402
from tfmmsearch.data.tfds_catalog import (  # noqa: E402
    catalog_dataset_dir,
    load_catalog_split,
    open_catalog_dataset,
    prepare_catalog_dataset,
    split_size,
)

NUM_ITEMS = 12
NO_IMAGE = {3, 7, 11}  # item numbers without an image
COLOURS = ("red", "blue", "green")


def _drawn_pixels(number: int) -> np.ndarray:
    """A smooth per-item image (gradients survive JPEG well), sized differently per item."""
    height, width = 20 + number, 16 + 2 * number
    rows = np.linspace(0, 1, height)[:, None]
    cols = np.linspace(0, 1, width)[None, :]
    red = 40 + 180 * rows * np.ones_like(cols)
    green = 30 + 200 * cols * np.ones_like(rows)
    blue = np.full((height, width), (number * 19) % 256)
    return np.stack([red, green, blue], axis=-1).round().astype(np.uint8)


def write_catalog(root: Path) -> Catalog:
    """12 products in products.csv with JPEGs under images/; three items have no image."""
    (root / "images").mkdir(parents=True)
    products = []
    with (root / "products.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["product_id", "title", "colour", "image"])
        for number in range(NUM_ITEMS):
            product_id = f"sku-{number:02d}"
            title = f"Item {number} – {COLOURS[number % 3]} shirt"
            relative = ""
            if number not in NO_IMAGE:
                relative = f"images/{product_id}.jpg"
                Image.fromarray(_drawn_pixels(number)).save(root / relative, quality=95)
            writer.writerow([product_id, title, COLOURS[number % 3], relative])
            products.append(Product(product_id, title, root / relative if relative else None,
                                    {"colour": COLOURS[number % 3]}, row=number + 1))
    return Catalog(root, root / "products.csv", products, ["product_id", "title", "colour",
                                                           "image"])


SPLITS = {
    "train": ["sku-05", "sku-00", "sku-03", "sku-09", "sku-01", "sku-10", "sku-06", "sku-07"],
    "validation": ["sku-02", "sku-11"],
    "test": ["sku-08", "sku-04"],
}


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """The 12-item catalog prepared once, with Python-level network connections refused."""
    root = tmp_path_factory.mktemp("catalog")
    catalog = write_catalog(root)
    data_dir = root / "tfds"

    def refuse(*args, **kwargs):
        raise AssertionError("preparing a local catalog must not open network connections")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(socket.socket, "connect", refuse)
        builder = prepare_catalog_dataset(catalog, SPLITS, data_dir, attribute_columns=["colour"])
    return catalog, data_dir, builder


def _records(dataset) -> list[dict]:
    return [{name: value.numpy() for name, value in example.items()} for example in dataset]


def test_each_split_holds_exactly_its_products_in_order(prepared):
    catalog, data_dir, builder = prepared
    seen = []
    for split, ids in SPLITS.items():
        records = _records(load_catalog_split(data_dir, split, decode_image=False))
        got = [record["product_id"].decode() for record in records]
        assert got == ids
        assert builder.info.splits[split].num_examples == len(ids)
        seen.extend(got)
    assert sorted(seen) == sorted(product.product_id for product in catalog.products)
    assert len(set(seen)) == NUM_ITEMS


def test_titles_attributes_and_jpeg_bytes_round_trip(prepared):
    catalog, data_dir, _ = prepared
    by_id = catalog.by_id()
    for split in SPLITS:
        for record in _records(load_catalog_split(data_dir, split, decode_image=False)):
            product = by_id[record["product_id"].decode()]
            assert record["title"].decode("utf-8") == product.title
            assert record["colour"].decode() == product.attributes["colour"]
            assert bool(record["has_image"]) == product.has_image
            if product.has_image:
                assert record["image"] == product.image_path.read_bytes()
            else:  # the documented placeholder: a tiny black JPEG
                with Image.open(io.BytesIO(record["image"])) as placeholder:
                    assert placeholder.format == "JPEG"
                    assert placeholder.size == (1, 1)
                    assert np.asarray(placeholder).max() <= 2


def test_decoded_images_match_the_drawn_pixels(prepared):
    _, data_dir, _ = prepared
    checked = 0
    for split in SPLITS:
        for record in _records(load_catalog_split(data_dir, split)):
            number = int(record["product_id"].decode().split("-")[1])
            if number in NO_IMAGE:
                continue
            original = _drawn_pixels(number).astype(np.float32)
            assert record["image"].shape == original.shape
            assert record["image"].dtype == np.uint8
            assert np.abs(record["image"].astype(np.float32) - original).mean() < 3.0
            checked += 1
    assert checked == NUM_ITEMS - len(NO_IMAGE)


def test_reads_back_without_the_generation_code(prepared):
    _, data_dir, builder = prepared
    features = {"product_id", "title", "image", "has_image", "colour"}
    for source in (data_dir, catalog_dataset_dir(data_dir)):
        assert set(open_catalog_dataset(source).info.features.keys()) == features
    from_builder = [r["product_id"] for r in _records(load_catalog_split(builder, "test"))]
    assert [value.decode() for value in from_builder] == SPLITS["test"]


def test_fixed_image_size_resizes_every_image(tmp_path):
    catalog = write_catalog(tmp_path / "catalog")
    splits = {"train": ["sku-00", "sku-01", "sku-03"]}
    builder = prepare_catalog_dataset(catalog, splits, tmp_path / "tfds", image_size=12)
    assert builder.info.features["image"].shape == (12, 12, 3)
    records = _records(load_catalog_split(tmp_path / "tfds", "train"))
    for record in records:
        assert record["image"].shape == (12, 12, 3)
    expected = np.asarray(Image.fromarray(_drawn_pixels(1)).resize((12, 12),
                                                                 Image.Resampling.BILINEAR))
    assert np.abs(records[1]["image"].astype(np.float32) - expected).mean() < 6.0
    assert not records[2]["has_image"] and records[2]["image"].max() <= 2


def test_same_inputs_reuse_the_directory_and_changes_rebuild_it(tmp_path):
    catalog = write_catalog(tmp_path / "catalog")
    splits = {"train": ["sku-00", "sku-01"], "test": ["sku-02"]}
    data_dir = tmp_path / "tfds"
    prepare_catalog_dataset(catalog, splits, data_dir)
    shard = next(catalog_dataset_dir(data_dir).glob("*-train.tfrecord*"))
    first_mtime = shard.stat().st_mtime_ns
    prepare_catalog_dataset(catalog, splits, data_dir)
    assert shard.stat().st_mtime_ns == first_mtime

    renamed = [Product(p.product_id, "renamed " + p.title, p.image_path, p.attributes, p.row)
               for p in catalog.products]
    prepare_catalog_dataset(renamed, splits, data_dir)
    titles = [r["title"].decode() for r in _records(load_catalog_split(data_dir, "train"))]
    assert all(title.startswith("renamed ") for title in titles)


def test_bad_inputs_fail_with_clear_errors(tmp_path):
    catalog = write_catalog(tmp_path / "catalog")
    with pytest.raises(CatalogError, match="sku-99"):
        prepare_catalog_dataset(catalog, {"train": ["sku-00", "sku-99"]}, tmp_path / "a")
    with pytest.raises(ValueError, match="sku-01.*'train'.*'test'"):
        prepare_catalog_dataset(catalog, {"train": ["sku-01"], "test": ["sku-01"]},
                                tmp_path / "b")
    with pytest.raises(ValueError, match="attribute column"):
        prepare_catalog_dataset(catalog, {"train": ["sku-00"]}, tmp_path / "c",
                                attribute_columns=["title"])
    (tmp_path / "catalog" / "images" / "sku-04.jpg").unlink()
    with pytest.raises(CatalogError, match=r"products\.csv, row 5, field 'image'"):
        prepare_catalog_dataset(catalog, {"train": ["sku-04"]}, tmp_path / "d")
    (tmp_path / "catalog" / "images" / "sku-05.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(CatalogError, match=r"row 6, field 'image'.*cannot read image"):
        prepare_catalog_dataset(catalog, {"train": ["sku-05"]}, tmp_path / "e")


def test_loading_a_missing_dataset_or_split_fails_clearly(prepared, tmp_path):
    _, data_dir, _ = prepared
    with pytest.raises(FileNotFoundError, match="prepare_catalog_dataset"):
        load_catalog_split(tmp_path / "nothing-here", "train")
    with pytest.raises(KeyError, match="'dev'"):
        load_catalog_split(data_dir, "dev")


def test_an_empty_split_reads_back_as_an_empty_dataset(tmp_path):
    catalog = write_catalog(tmp_path / "catalog")
    data_dir = tmp_path / "tfds"
    prepare_catalog_dataset(catalog, {"train": ["sku-00", "sku-01"], "test": []}, data_dir)
    assert split_size(data_dir, "train") == 2 and split_size(data_dir, "test") == 0
    empty = load_catalog_split(data_dir, "test", decode_image=False)
    assert _records(empty) == []
    assert set(empty.element_spec) == {"product_id", "title", "image", "has_image"}
    with pytest.raises(ValueError, match="every split is empty"):
        prepare_catalog_dataset(catalog, {"train": []}, tmp_path / "other")
