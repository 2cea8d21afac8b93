"""Catalog reading and validation: every bad-row case under both policies, CSV and JSONL."""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path
from typing import NamedTuple

import pytest
from PIL import Image, ImageDraw

from tfmmsearch.data import catalog as catalog_module
from tfmmsearch.data.catalog import read_catalog, write_catalog
from tfmmsearch.data.schema import CatalogError

FORMATS = ("csv", "jsonl")


def _draw_image(path: Path, colour=(200, 30, 30), image_format: str = "JPEG") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.new("RGB", (16, 20), (255, 255, 255))
    ImageDraw.Draw(image).rectangle((3, 3, 12, 16), fill=colour)
    image.save(path, format=image_format)


def _good_row(root: Path, product_id: str, **extra) -> dict:
    image = f"images/{product_id}.jpg"
    _draw_image(root / image)
    return {"product_id": product_id, "title": f"Red shirt {product_id}", "colour": "Red",
            "image": image, **extra}


def _row(product_id: str, title: str, image: str) -> dict:
    return {"product_id": product_id, "title": title, "image": image}


def _catalog_with_bad_row(root: Path, fmt: str, bad: dict,
                          replace: tuple[bytes, bytes] | None = None) -> Path:
    """Rows p1, p2, <bad>, p4: the bad row is data row 3 and one good row follows it."""
    rows = [_good_row(root, "p1"), _good_row(root, "p2"), bad, _good_row(root, "p4")]
    path = write_catalog(root, rows, fmt=fmt, columns=["product_id", "title", "colour", "image"])
    if replace is not None:
        data = path.read_bytes()
        assert replace[0] in data
        path.write_bytes(data.replace(*replace))
    return path


class BadRow(NamedTuple):
    """A bad row, bytes to patch into the written file, and the reason and field expected."""

    row: dict
    replace: tuple[bytes, bytes] | None
    reason: str
    field: str | None


# Each case writes the files its bad row needs and returns the BadRow.
def _duplicate_id(root):
    _draw_image(root / "images/dup.jpg")
    return BadRow(_row("p1", "Another p1", "images/dup.jpg"), None, "duplicate_id", "product_id")


def _missing_image(root):
    return BadRow(_row("p3", "Ghost", "images/nothere.jpg"), None, "missing_image", "image")


def _garbage_image(root):
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "images/p3.jpg").write_bytes(b"this is not a jpeg at all" * 10)
    return BadRow(_row("p3", "Garbage", "images/p3.jpg"), None, "undecodable_image", "image")


def _truncated_image(root):
    # A valid JPEG header with the pixel data cut off: opening succeeds, decoding the pixels fails.
    buffer = io.BytesIO()
    Image.effect_noise((64, 64), 80).convert("RGB").save(buffer, format="JPEG", quality=95)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "images/p3.jpg").write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    with Image.open(root / "images/p3.jpg") as image:  # the header alone looks fine
        assert image.size == (64, 64)
    return BadRow(_row("p3", "Truncated", "images/p3.jpg"), None, "undecodable_image", "image")


def _unsupported_format(root):
    _draw_image(root / "images/p3.tif", image_format="TIFF")
    return BadRow(_row("p3", "Tiff", "images/p3.tif"), None, "unsupported_image_format", "image")


def _non_utf8_title(root):
    _draw_image(root / "images/p3.jpg")
    return BadRow(_row("p3", "Cafe PLACEHOLDER", "images/p3.jpg"),
                  (b"PLACEHOLDER", b"caf\xe9 latte \xff"), "non_utf8", "title")


def _empty_title_and_image(root):
    return BadRow(_row("p3", "  ", ""), None, "empty_title_and_image", "title")


def _parent_escape(root):
    _draw_image(root.parent / "outside.jpg")  # exists, so only the escape can be the reason
    return BadRow(_row("p3", "Escape", "../outside.jpg"), None, "unsafe_path", "image")


def _hidden_parent_escape(root):
    _draw_image(root.parent / "outside.jpg")
    return BadRow(_row("p3", "Escape", "images/../../outside.jpg"), None, "unsafe_path", "image")


def _absolute_path(root):
    _draw_image(root.parent / "absolute.jpg")
    return BadRow(_row("p3", "Absolute", str(root.parent / "absolute.jpg")), None,
                  "unsafe_path", "image")


def _empty_id(root):
    _draw_image(root / "images/p3.jpg")
    return BadRow(_row(" ", "No id", "images/p3.jpg"), None, "empty_id", "product_id")


CASES = {
    "duplicate_id": _duplicate_id,
    "missing_image": _missing_image,
    "garbage_image": _garbage_image,
    "truncated_image": _truncated_image,
    "unsupported_format": _unsupported_format,
    "non_utf8": _non_utf8_title,
    "empty_title_and_image": _empty_title_and_image,
    "parent_escape": _parent_escape,
    "hidden_parent_escape": _hidden_parent_escape,
    "absolute_path": _absolute_path,
    "empty_id": _empty_id,
}


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_row_raises_naming_file_row_and_field(tmp_path, case, fmt):
    root = tmp_path / "catalog"
    bad, replace, reason, field = CASES[case](root)
    path = _catalog_with_bad_row(root, fmt, bad, replace)
    with pytest.raises(CatalogError) as caught:
        read_catalog(root, on_bad_row="error")
    message = str(caught.value)
    assert f"products.{fmt}" in message
    assert "row 3" in message and "line " in message
    if fmt == "jsonl" and reason == "non_utf8":
        field = None  # a JSONL line that is not UTF-8 cannot be split into fields
    if field is not None:
        assert repr(field) in message
    assert (caught.value.reason, caught.value.row, caught.value.field) == (reason, 3, field)
    assert caught.value.file == str(path.resolve())


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_row_is_skipped_and_counted(tmp_path, case, fmt):
    root = tmp_path / "catalog"
    bad, replace, reason, _ = CASES[case](root)
    _catalog_with_bad_row(root, fmt, bad, replace)
    catalog = read_catalog(root, on_bad_row="skip")
    assert [p.product_id for p in catalog.products] == ["p1", "p2", "p4"]
    assert [p.row for p in catalog.products] == [1, 2, 4]
    assert dict(catalog.report.skipped) == {reason: 1}
    assert (catalog.report.total_rows, catalog.report.ok) == (4, 3)
    assert len(catalog.report.examples) == 1 and "row 3" in catalog.report.examples[0]


def test_duplicate_id_keeps_the_first_row(tmp_path):
    root = tmp_path / "catalog"
    bad, *_ = _duplicate_id(root)
    _catalog_with_bad_row(root, "csv", bad)
    catalog = read_catalog(root, on_bad_row="skip")
    assert catalog.by_id()["p1"].title == "Red shirt p1"
    assert catalog.by_id()["p1"].row == 1


def test_error_policy_stops_at_the_first_bad_row_and_skip_counts_every_reason(tmp_path):
    root = tmp_path / "catalog"
    rows = [_good_row(root, "p1"),
            _row("p2", "Ghost", "images/missing.jpg"),
            _row("p1", "Again", "images/p1.jpg"),
            _row("p4", "", ""),
            _good_row(root, "p5")]
    write_catalog(root, rows)
    with pytest.raises(CatalogError, match="row 2") as caught:
        read_catalog(root)
    assert caught.value.reason == "missing_image"
    report = read_catalog(root, on_bad_row="skip").report
    assert dict(report.skipped) == {"missing_image": 1, "duplicate_id": 1,
                                    "empty_title_and_image": 1}
    assert report.summary() == ("read 5 rows: 2 ok, 3 skipped "
                                "(duplicate_id: 1, empty_title_and_image: 1, missing_image: 1)")


@pytest.mark.parametrize("fmt", FORMATS)
def test_one_modality_items_are_legal(tmp_path, fmt):
    root = tmp_path / "catalog"
    photo_only = _good_row(root, "photo")
    photo_only["title"] = ""
    rows = [photo_only, {**_row("text", "Blue jeans", ""), "colour": "Blue"}]
    write_catalog(root, rows, fmt=fmt)
    products = read_catalog(root).by_id()
    assert not products["photo"].has_title and products["photo"].has_image
    assert products["photo"].image_path == root.resolve() / "images" / "photo.jpg"
    assert products["text"].has_title and products["text"].image_path is None
    assert products["text"].attributes == {"colour": "Blue"}


def test_non_utf8_is_detected_per_csv_row_in_any_field(tmp_path):
    root = tmp_path / "catalog"
    bad = _good_row(root, "p3", colour="PLACEHOLDER")
    _catalog_with_bad_row(root, "csv", bad, (b"PLACEHOLDER", b"R\xf6d"))
    with pytest.raises(CatalogError, match=r"row 3, field 'colour'"):
        read_catalog(root)
    catalog = read_catalog(root, on_bad_row="skip")
    assert dict(catalog.report.skipped) == {"non_utf8": 1} and len(catalog) == 3


@pytest.mark.parametrize("bad_line", [b'{"product_id": "p3", "title": oops}', b'["p3", "t", "i"]',
                                      b'"text"'])
@pytest.mark.parametrize("policy", ["error", "skip"])
def test_jsonl_lines_must_be_json_objects(tmp_path, bad_line, policy):
    root = tmp_path / "catalog"
    rows = [_good_row(root, "p1"), _good_row(root, "p2")]
    path = write_catalog(root, rows, fmt="jsonl")
    lines = path.read_bytes().splitlines()
    path.write_bytes(b"\n".join([lines[0], bad_line, lines[1]]) + b"\n")
    if policy == "error":
        with pytest.raises(CatalogError, match=r"products\.jsonl, row 2") as caught:
            read_catalog(root)
        assert caught.value.reason == "invalid_json"
    else:
        catalog = read_catalog(root, on_bad_row="skip")
        assert dict(catalog.report.skipped) == {"invalid_json": 1}
        assert [p.product_id for p in catalog.products] == ["p1", "p2"]


@pytest.mark.parametrize("bad_line, expected", [
    # json's own messages end in "at" for these two: the column must follow without a second "at"
    (b'{"product_id": "p2", "title": "unterminated', "Unterminated string starting at column 31"),
    (b'{"product_id": "p2", "title": "unterminated\n', "Invalid control character at column 44"),
    (b'{"product_id": "p2", "title": oops}\n', "Expecting value at column 31"),
])
def test_jsonl_syntax_errors_read_as_one_sentence(tmp_path, bad_line, expected):
    root = tmp_path / "catalog"
    path = write_catalog(root, [_good_row(root, "p1")], fmt="jsonl")
    path.write_bytes(path.read_bytes() + bad_line)
    with pytest.raises(CatalogError) as caught:
        read_catalog(root)
    message = str(caught.value)
    assert message.endswith(f"products.jsonl, row 2: is not valid JSON: {expected} (line 2)")
    assert " at at " not in message


def test_jsonl_row_missing_a_required_key_is_a_bad_row(tmp_path):
    root = tmp_path / "catalog"
    rows = [_good_row(root, "p1"), {"product_id": "p2", "title": "No key"}, _good_row(root, "p3")]
    write_catalog(root, rows, fmt="jsonl")
    with pytest.raises(CatalogError, match=r"row 2, field 'image'"):
        read_catalog(root)
    assert dict(read_catalog(root, on_bad_row="skip").report.skipped) == {"missing_field": 1}


def test_jsonl_values_become_strings(tmp_path):
    root = tmp_path / "catalog"
    _draw_image(root / "images/a.jpg")
    rows = [{"product_id": 17, "title": "Shoe", "image": "images/a.jpg", "year": 2013,
             "usage": None, "sizes": [7, 8]},
            {"product_id": 18, "title": "Sock", "image": ""}]
    write_catalog(root, rows, fmt="jsonl")
    catalog = read_catalog(root)
    assert catalog.columns == ["product_id", "title", "image", "year", "usage", "sizes"]
    first, second = catalog.products
    assert first.product_id == "17"
    assert first.attributes == {"year": "2013", "usage": "", "sizes": "[7, 8]"}
    assert second.attributes == {"year": "", "usage": "", "sizes": ""}


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("policy", ["error", "skip"])
def test_missing_required_column_fails_whatever_the_policy(tmp_path, fmt, policy):
    root = tmp_path / "catalog"
    rows = [{"product_id": "p1", "title": "Shirt", "colour": "Red"}]
    write_catalog(root, rows, fmt=fmt)
    with pytest.raises(CatalogError, match=r"missing required column\(s\): image") as caught:
        read_catalog(root, on_bad_row=policy)
    assert f"products.{fmt}" in str(caught.value) and caught.value.field == "image"


def test_missing_columns_are_all_named(tmp_path):
    root = tmp_path / "catalog"
    root.mkdir()
    (root / "products.csv").write_text("id,name,colour\n1,Shirt,Red\n")
    with pytest.raises(CatalogError, match=r"product_id, title, image"):
        read_catalog(root, on_bad_row="skip")


def test_products_file_must_exist_once(tmp_path):
    root = tmp_path / "catalog"
    root.mkdir()
    with pytest.raises(CatalogError, match="no products file"):
        read_catalog(root)
    write_catalog(root, [_good_row(root, "p1")], fmt="csv")
    (root / "products.jsonl").write_text("{}\n")
    with pytest.raises(CatalogError, match="both products.csv and products.jsonl"):
        read_catalog(root, on_bad_row="skip")
    with pytest.raises(CatalogError, match="not a directory"):
        read_catalog(tmp_path / "nowhere")


def test_a_read_that_keeps_nothing_is_an_error(tmp_path):
    root = tmp_path / "catalog"
    write_catalog(root, [_row("p1", "Ghost", "images/none.jpg")])
    with pytest.raises(CatalogError, match=r"no usable products \(read 1 rows: 0 ok, 1 skipped"):
        read_catalog(root, on_bad_row="skip")
    (root / "products.csv").write_text("product_id,title,image\n")
    with pytest.raises(CatalogError, match="no usable products"):
        read_catalog(root)


def test_skip_logs_summary_and_the_first_few_messages(tmp_path, caplog):
    root = tmp_path / "catalog"
    ghosts = [_row(f"g{i}", "Ghost", f"images/g{i}.jpg") for i in range(7)]
    write_catalog(root, [_good_row(root, "p1"), *ghosts])
    with caplog.at_level(logging.INFO, logger="tfmmsearch.data.catalog"):
        catalog = read_catalog(root, on_bad_row="skip")
    messages = [record.getMessage() for record in caplog.records]
    assert any(m.endswith("read 8 rows: 1 ok, 7 skipped (missing_image: 7)") for m in messages)
    skip_messages = [m for m in messages if m.startswith("skipped:")]
    assert len(skip_messages) == catalog_module.MAX_LOGGED_SKIPS < 7
    assert "row 2" in skip_messages[0] and "images/g0.jpg" in skip_messages[0]
    assert catalog.report.examples == [m.removeprefix("skipped: ") for m in skip_messages]


def test_rows_count_data_records_not_lines(tmp_path):
    root = tmp_path / "catalog"
    first = _good_row(root, "p1")
    first["title"] = "Two-line\ntitle"
    rows = [first, _good_row(root, "p2"), _row("p3", "Ghost", "images/x.jpg")]
    path = write_catalog(root, rows)
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines[:3] + [""] + lines[3:]) + "\n")  # a blank line before row 2
    with pytest.raises(CatalogError) as caught:
        read_catalog(root)
    assert caught.value.row == 3 and "(line 6)" in str(caught.value)
    assert read_catalog(root, on_bad_row="skip").by_id()["p1"].title == "Two-line\ntitle"


def test_csv_row_with_wrong_field_count(tmp_path):
    root = tmp_path / "catalog"
    path = write_catalog(root, [_good_row(root, "p1"), _good_row(root, "p2")])
    path.write_text(path.read_text() + "p3,Too,many,fields,here\n")
    with pytest.raises(CatalogError, match=r"row 3: has 5 fields but the header has 4"):
        read_catalog(root)
    assert dict(read_catalog(root, on_bad_row="skip").report.skipped) == {"wrong_field_count": 1}


def test_attributes_are_kept_as_strings(tmp_path):
    root = tmp_path / "catalog"
    rows = [_good_row(root, "p1", usage=" NA ", year="2011"),
            _good_row(root, "p2", usage="", year="")]
    write_catalog(root, rows)
    catalog = read_catalog(root)
    assert catalog.columns == ["product_id", "title", "colour", "image", "usage", "year"]
    assert catalog.by_id()["p1"].attributes == {"colour": "Red", "usage": "NA", "year": "2011"}
    assert catalog.by_id()["p2"].attributes == {"colour": "Red", "usage": "", "year": ""}


def test_check_images_false_skips_decoding_but_not_existence(tmp_path):
    root = tmp_path / "catalog"
    bad, *_ = _garbage_image(root)
    _catalog_with_bad_row(root, "csv", bad)
    assert len(read_catalog(root, check_images=False)) == 4
    (root / "images/p3.jpg").unlink()
    with pytest.raises(CatalogError, match="image file not found"):
        read_catalog(root, check_images=False)


@pytest.mark.parametrize("fmt", FORMATS)
def test_write_then_read_round_trip(tmp_path, fmt):
    root = tmp_path / "catalog"
    rows = [_good_row(root, f"p{i}", season="Summer") for i in range(3)]
    path = write_catalog(root, rows, fmt=fmt)
    assert path == root / f"products.{fmt}"
    catalog = read_catalog(root, progress=True)
    assert [(p.product_id, p.title, p.attributes) for p in catalog.products] == [
        (row["product_id"], row["title"], {"colour": "Red", "season": "Summer"}) for row in rows]
    other = "jsonl" if fmt == "csv" else "csv"
    with pytest.raises(CatalogError, match="already exists"):
        write_catalog(root, rows, fmt=other)


def test_unknown_policy_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="on_bad_row"):
        read_catalog(tmp_path, on_bad_row="ignore")


def test_jsonl_written_values_are_plain_json(tmp_path):
    root = tmp_path / "catalog"
    path = write_catalog(root, [_row("é1", "Café", "")], fmt="jsonl")
    assert json.loads(path.read_text(encoding="utf-8")) == _row("é1", "Café", "")


@pytest.mark.slow
def test_reads_the_real_myntra_catalog(myntra_dir):
    catalog = read_catalog(myntra_dir, on_bad_row="error", check_images=True)
    assert len(catalog) == 12000
    assert catalog.report.total_rows == 12000 and catalog.report.num_skipped == 0
    assert len(catalog.by_id()) == 12000
    assert catalog.columns[:2] == ["product_id", "title"] and catalog.columns[-1] == "image"
    assert all(p.has_image and p.image_path.is_file() for p in catalog.products[:50])
    assert {"gender", "article_type", "base_colour", "usage"} <= set(catalog.products[0].attributes)
