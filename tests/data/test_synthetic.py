"""The synthetic catalog: deterministic, well-formed, and its photos and titles say what the rows say."""

import csv
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tfmmsearch.data import synthetic
from tfmmsearch.data.catalog import read_catalog
from tfmmsearch.data.synthetic import (
    ARTICLE_TYPES, BRAND_TIERS, COLOURS, CSV_COLUMNS, FORMAL_COLOURS, FORMAL_PATTERNS, PATTERNS,
    generate_synthetic_catalog, plan_synthetic_items,
)

FULL_SIZE = 2000


def read_rows(catalog_dir: Path) -> tuple[list[str], list[dict]]:
    with (catalog_dir / "products.csv").open(encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        return list(reader.fieldnames), list(reader)


def catalog_bytes(catalog_dir: Path) -> dict[str, bytes]:
    return {str(path.relative_to(catalog_dir)): path.read_bytes()
            for path in sorted(catalog_dir.rglob("*")) if path.is_file()}


def mentions(text: str, phrase: str) -> bool:
    return re.search(rf"(?<![\w-]){re.escape(phrase)}(?![\w-])", text, flags=re.IGNORECASE) is not None


def dominant_named_colour(pixels: np.ndarray) -> str:
    """The named colour most pixels are nearest to, not counting the background (read off the border)."""
    border = np.concatenate([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]])
    palette = np.vstack([np.array(list(COLOURS.values()), dtype=np.float64), np.median(border, axis=0)])
    flat = pixels.reshape(-1, 3).astype(np.float64)
    distances = (flat ** 2).sum(1)[:, None] - 2 * flat @ palette.T + (palette ** 2).sum(1)[None, :]
    counts = np.bincount(distances.argmin(1), minlength=len(palette))[:-1]  # drop the background
    return list(COLOURS)[int(counts.argmax())]


@pytest.fixture(scope="module")
def full_catalog(tmp_path_factory) -> Path:
    """The default-size catalog, generated once for this module."""
    return generate_synthetic_catalog(tmp_path_factory.mktemp("synthetic_full"), num_items=FULL_SIZE)


def test_writes_the_default_size_catalog_with_the_catalog_columns(full_catalog):
    columns, rows = read_rows(full_catalog)
    assert columns == list(CSV_COLUMNS)
    assert len(rows) == FULL_SIZE
    assert len({row["product_id"] for row in rows}) == FULL_SIZE
    referenced = {row["image"] for row in rows if row["image"]}
    on_disk = {f"images/{path.name}" for path in (full_catalog / "images").glob("*.jpg")}
    assert referenced == on_disk
    assert all(image == f"images/{row['product_id']}.jpg" for row in rows if (image := row["image"]))


def test_attributes_follow_the_vocabularies_and_constraints(full_catalog):
    _, rows = read_rows(full_catalog)
    for row in rows:
        spec = ARTICLE_TYPES[row["article_type"]]
        assert row["master_category"] == spec.master_category
        assert row["gender"] in spec.genders
        assert row["usage"] in spec.usages
        assert row["base_colour"] in COLOURS
        if row["usage"] == "Formal":
            assert row["base_colour"] in FORMAL_COLOURS, row
    for item in plan_synthetic_items(FULL_SIZE):
        assert item.pattern in (FORMAL_PATTERNS if item.usage == "Formal" else PATTERNS)
        assert item.pattern == "solid" or ARTICLE_TYPES[item.article_type].patterned
    assert {row["article_type"] for row in rows} == set(ARTICLE_TYPES)
    assert {row["base_colour"] for row in rows} == set(COLOURS)
    assert {row["master_category"] for row in rows} == {"Apparel", "Footwear", "Accessories"}


def test_some_items_lack_one_modality_but_none_lack_both(full_catalog):
    _, rows = read_rows(full_catalog)
    no_title = [row for row in rows if not row["title"].strip()]
    no_image = [row for row in rows if not row["image"]]
    assert 0.01 * FULL_SIZE <= len(no_title) <= 0.03 * FULL_SIZE
    assert 0.01 * FULL_SIZE <= len(no_image) <= 0.03 * FULL_SIZE
    assert not [row for row in rows if not row["title"].strip() and not row["image"]]


def test_titles_omit_colour_and_type_at_the_intended_rates(full_catalog):
    _, rows = read_rows(full_catalog)
    titled = [row for row in rows if row["title"]]
    without_colour = [row for row in titled if not mentions(row["title"], row["base_colour"])]
    without_type = [row for row in titled
                    if not any(mentions(row["title"], noun)
                               for noun in ARTICLE_TYPES[row["article_type"]].title_nouns)]
    assert 0.12 <= len(without_colour) / len(titled) <= 0.18
    assert 0.07 <= len(without_type) / len(titled) <= 0.13
    # An omitted colour is not replaced by a wrong one, an omitted type not by another type.
    for row in without_colour:
        assert not any(mentions(row["title"], colour) for colour in COLOURS), row["title"]
    all_nouns = [noun for spec in ARTICLE_TYPES.values() for noun in spec.title_nouns]
    for row in without_type:
        assert not any(mentions(row["title"], noun) for noun in all_nouns), row["title"]
    for row in titled:
        assert row["title"].split()[0] in synthetic.BRANDS


def test_brand_column_is_the_brand_the_title_starts_with(full_catalog):
    _, rows = read_rows(full_catalog)
    assert {row["brand"] for row in rows} == set(synthetic.BRANDS)
    for row in rows:
        if row["title"]:
            assert row["title"].split()[0] == row["brand"], row


def test_prices_are_decimal_strings_that_follow_type_and_brand_tier(full_catalog):
    _, rows = read_rows(full_catalog)
    priced = [row for row in rows if row["price"]]
    assert 0.02 * FULL_SIZE <= FULL_SIZE - len(priced) <= 0.04 * FULL_SIZE  # a few left empty
    assert all(re.fullmatch(r"[1-9][0-9]*\.[0-9]{2}", row["price"]) for row in priced)
    prices: dict[tuple[str, str], list[float]] = {}
    for row in priced:
        prices.setdefault((row["article_type"], BRAND_TIERS[row["brand"]]), []).append(
            float(row["price"]))
    for name, spec in ARTICLE_TYPES.items():
        budget, mid, premium = (np.median(prices[(name, tier)]) for tier in ("budget", "mid", "premium"))
        assert budget < mid < premium, name
        assert 0.8 * spec.base_price <= mid <= 1.25 * spec.base_price, name
    # Article type matters beyond tier: a premium cap is still cheaper than a budget watch.
    assert max(prices[("Caps", "premium")]) < min(prices[("Watches", "budget")])


def test_brand_and_price_read_back_as_attributes(full_catalog):
    catalog = read_catalog(full_catalog, check_images=False)
    assert all(set(p.attributes) == {"gender", "master_category", "article_type", "base_colour",
                                     "usage", "brand", "price"} for p in catalog.products)
    unpriced = [p for p in catalog.products if not p.attributes["price"]]
    assert unpriced and len(unpriced) < len(catalog.products)


def test_every_image_decodes_at_image_size_and_solid_items_show_their_base_colour(full_catalog):
    _, rows = read_rows(full_catalog)
    patterns = {item.product_id: item.pattern for item in plan_synthetic_items(FULL_SIZE)}
    checked = Counter()
    for row in rows:
        if not row["image"]:
            continue
        with Image.open(full_catalog / row["image"]) as image:
            assert image.format == "JPEG"
            assert image.size == (64, 64)
            pixels = np.asarray(image.convert("RGB"))
        # Solid items, up to 30 per colour (the pixel vote is the slow part of this test).
        if patterns[row["product_id"]] == "solid" and checked[row["base_colour"]] < 30:
            assert dominant_named_colour(pixels) == row["base_colour"], row
            checked[row["base_colour"]] += 1
    assert set(checked) == set(COLOURS)


def test_images_differ_within_a_class(full_catalog):
    _, rows = read_rows(full_catalog)
    by_class = {}
    for row in rows:
        if row["image"]:
            by_class.setdefault((row["article_type"], row["base_colour"]), []).append(row["image"])
    images = max(by_class.values(), key=len)
    assert len(images) >= 5
    contents = {(full_catalog / image).read_bytes() for image in images}
    assert len(contents) == len(images)


def test_same_seed_gives_identical_files_and_another_seed_differs(tmp_path):
    first = catalog_bytes(generate_synthetic_catalog(tmp_path / "a", num_items=60, seed=3))
    again = catalog_bytes(generate_synthetic_catalog(tmp_path / "b", num_items=60, seed=3))
    other = catalog_bytes(generate_synthetic_catalog(tmp_path / "c", num_items=60, seed=4))
    assert first == again
    assert first["products.csv"] != other["products.csv"]
    shared = set(first) & set(other) - {"products.csv"}
    assert shared and all(first[name] != other[name] for name in shared)


def test_image_size_is_respected(tmp_path):
    out = generate_synthetic_catalog(tmp_path, num_items=8, image_size=32)
    images = list((out / "images").glob("*.jpg"))
    assert images
    for path in images:
        with Image.open(path) as image:
            assert image.size == (32, 32)


def test_smaller_catalogs_are_prefixes_of_larger_ones():
    small, large = plan_synthetic_items(40, seed=1), plan_synthetic_items(400, seed=1)
    for a, b in zip(small, large):
        assert (a.product_id, a.article_type, a.base_colour, a.gender, a.usage, a.pattern,
                a.brand) == (b.product_id, b.article_type, b.base_colour, b.gender, b.usage,
                             b.pattern, b.brand)
        assert not (a.price and b.price) or a.price == b.price  # only emptiness depends on size


@pytest.mark.parametrize("kwargs, message", [
    ({"num_items": 0}, "num_items"),
    ({"num_items": 2.5}, "num_items"),
    ({"seed": -1}, "seed"),
    ({"image_size": 8}, "image_size"),
])
def test_bad_arguments_are_refused_with_the_argument_named(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        generate_synthetic_catalog(tmp_path, **kwargs)
    assert not (tmp_path / "products.csv").exists()
