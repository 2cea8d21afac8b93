"""Reading and validating a product catalog directory (products.csv or products.jsonl + images).

Everything downstream (tf.data pipelines, training, the exported index) trusts the products it
gets, so every row is checked here, once, where a bad value can still be reported with the file,
row and field it came from. Under `on_bad_row="error"` the first bad row raises `CatalogError`;
under `"skip"` bad rows are counted by reason in `ReadReport` and logged, never dropped silently.

Row numbers are 1-based and count data records: the CSV header and blank lines are not counted,
a quoted CSV value spanning several lines is still one row. Messages also give the physical line
number, so a row can be found in an editor.
"""

from __future__ import annotations

import csv
import json
import logging
import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath

from PIL import Image

from tfmmsearch.data.schema import (
    CATALOG_FILES,
    IMAGE_HEADER_BYTES,
    REQUIRED_COLUMNS,
    Catalog,
    CatalogError,
    Product,
    ReadReport,
    graph_image_problem,
    sniff_image_format,
)
from tfmmsearch.progress import progress as progress_reporter

logger = logging.getLogger(__name__)

BAD_ROW_POLICIES = ("error", "skip")

# Reasons a row can be rejected; the keys of ReadReport.skipped.
NON_UTF8 = "non_utf8"
INVALID_JSON = "invalid_json"
WRONG_FIELD_COUNT = "wrong_field_count"
MISSING_FIELD = "missing_field"
EMPTY_ID = "empty_id"
DUPLICATE_ID = "duplicate_id"
EMPTY_TITLE_AND_IMAGE = "empty_title_and_image"
UNSAFE_PATH = "unsafe_path"
MISSING_IMAGE = "missing_image"
UNDECODABLE_IMAGE = "undecodable_image"
UNSUPPORTED_IMAGE_FORMAT = "unsupported_image_format"

# PIL names each format the graph decodes (schema.IMAGE_SIGNATURES) by: MPO is camera JPEG.
PIL_FORMATS = {"JPEG": ("JPEG", "MPO"), "PNG": ("PNG",), "GIF": ("GIF",), "BMP": ("BMP",),
               "WEBP": ("WEBP",)}

MAX_LOGGED_SKIPS = 5  # skip messages logged (and kept in ReadReport.examples) per read


@dataclass
class _RawRow:
    """One data record as parsed from the file, before validation; `error` when it did not parse."""

    row: int
    line: int
    values: dict[str, str] | None = None
    error: CatalogError | None = None


# --------------------------------------------------------------------------- locating the file


def find_catalog_file(root: str | Path) -> Path:
    """The one products file in `root`; an error when there is none or there are both."""
    root = Path(root)
    if not root.is_dir():
        raise CatalogError(f"catalog directory not found (or not a directory): {root}", file=root)
    present = [root / name for name in CATALOG_FILES if (root / name).is_file()]
    if not present:
        raise CatalogError(f"no products file: expected one of {', '.join(CATALOG_FILES)}",
                           file=root)
    if len(present) > 1:
        raise CatalogError(
            f"both {' and '.join(p.name for p in present)} are present; keep exactly one so the "
            "catalog is unambiguous", file=root)
    return present[0]


# --------------------------------------------------------------------------- parsing


def has_undecodable_text(value: str) -> bool:
    """True for text holding bytes that were not UTF-8 (kept as lone surrogates by the reader)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _header_problem(columns: list[str]) -> tuple[str, str | None, str] | None:
    """(message, field, reason) for a CSV header no row could be read against, else None."""
    if any(has_undecodable_text(name) for name in columns):
        return "the header is not valid UTF-8", None, "bad_header"
    missing = [name for name in REQUIRED_COLUMNS if name not in columns]
    if missing:
        return (f"missing required column(s): {', '.join(missing)} "
                f"(header has: {', '.join(columns)})", missing[0], "missing_column")
    if "" in columns:
        position = columns.index("") + 1
        return f"the header has an empty column name (column {position})", None, "bad_header"
    repeated = sorted({name for name in columns if columns.count(name) > 1})
    if repeated:
        return f"the header repeats column(s) {', '.join(repeated)}", repeated[0], "bad_header"
    return None


def _parse_csv(path: Path) -> tuple[list[str], Iterator[_RawRow]]:
    """The header and a lazy stream of rows. Bytes that are not UTF-8 are kept as surrogates so
    that one bad row is reported as that row instead of failing the whole file."""
    handle = path.open("r", encoding="utf-8-sig", errors="surrogateescape", newline="")
    reader = csv.reader(handle)
    try:
        header = next(reader)
    except StopIteration:
        handle.close()
        raise CatalogError("the file is empty (no header row)", file=path) from None
    except csv.Error as error:
        handle.close()
        raise CatalogError(f"the header is not valid CSV: {error}", file=path) from None
    columns = [name.strip() for name in header]
    problem = _header_problem(columns)
    if problem is not None:
        handle.close()
        message, field, reason = problem
        raise CatalogError(message, file=path, field=field, reason=reason)

    def rows() -> Iterator[_RawRow]:
        with handle:
            row = 0
            while True:
                try:
                    record = next(reader)
                except StopIteration:
                    return
                except csv.Error as error:
                    # The reader cannot resynchronise after this, so no policy can skip it.
                    raise CatalogError(f"malformed CSV near line {reader.line_num}: {error}",
                                       file=path, row=row + 1) from None
                if not record or (len(record) == 1 and not record[0].strip()):
                    continue  # blank line
                row += 1
                if len(record) != len(columns):
                    error = CatalogError(
                        f"has {len(record)} fields but the header has {len(columns)} "
                        f"(line {reader.line_num})", file=path, row=row, reason=WRONG_FIELD_COUNT)
                    yield _RawRow(row, reader.line_num, error=error)
                    continue
                yield _RawRow(row, reader.line_num, values=dict(zip(columns, record)))

    return columns, rows()


def _json_value_text(value) -> str:
    """Attribute values are strings: null is empty, strings as they are, the rest as JSON text."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False)


def json_error_text(error: json.JSONDecodeError) -> str:
    """json's message with its column: some messages already end in "at" ("Unterminated string
    starting at"), which must not become "at at"."""
    if error.msg.endswith(" at"):
        return f"{error.msg} column {error.colno}"
    return f"{error.msg} at column {error.colno}"


def json_objects(path: Path) -> Iterator[tuple[int, dict | None, str | None, str | None]]:
    """The non-blank lines of a JSONL file as (line number, object, problem, reason): the
    object when the line is a JSON object, else None with what is wrong with it (not UTF-8,
    not JSON, not an object) and the reason it is counted under. A UTF-8 BOM is ignored.
    Catalogs and search logs read JSONL through this one reader."""
    with path.open("rb") as handle:
        for line_number, raw in enumerate(handle, start=1):
            if line_number == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]
            if not raw.strip():
                continue
            try:
                obj = json.loads(raw.decode("utf-8"))
            except UnicodeDecodeError as error:
                yield line_number, None, f"is not valid UTF-8 (byte {error.start})", NON_UTF8
                continue
            except json.JSONDecodeError as error:
                yield line_number, None, f"is not valid JSON: {json_error_text(error)}", INVALID_JSON
                continue
            if not isinstance(obj, dict):
                yield (line_number, None, f"is a JSON {type(obj).__name__}, not an object",
                       INVALID_JSON)
                continue
            yield line_number, obj, None, None


def _parse_jsonl(path: Path) -> tuple[list[str], Iterator[_RawRow]]:
    """Reads every line once (JSONL has no header, so columns are the keys seen, in order)."""
    parsed: list[_RawRow] = []
    columns: dict[str, None] = {}  # an ordered set
    for row, (line_number, obj, problem, reason) in enumerate(json_objects(path), start=1):
        if obj is None:  # rows count data lines, so the message names the line too
            parsed.append(_RawRow(row, line_number, error=CatalogError(
                f"{problem} (line {line_number})", file=path, row=row, reason=reason)))
            continue
        values = {str(key).strip(): _json_value_text(value) for key, value in obj.items()}
        columns.update(dict.fromkeys(values))
        parsed.append(_RawRow(row, line_number, values=values))
    if not parsed:
        raise CatalogError("the file has no rows", file=path)
    present = set(columns)
    missing = [name for name in REQUIRED_COLUMNS if name not in present]
    if missing and columns:
        # No row names the field at all: a schema mistake, not a bad row.
        raise CatalogError(f"missing required column(s): {', '.join(missing)} (no row has them)",
                           file=path, field=missing[0], reason="missing_column")
    return list(columns), iter(parsed)


# --------------------------------------------------------------------------- validation


def _is_unsafe_image_path(relative: str) -> bool:
    """Image paths must stay inside the catalog directory: no absolute paths, no '..' escapes.

    The check is on the text of the path; symlinks inside the catalog are followed as the
    catalog's owner set them up (an images/ link to a shared disk is a normal layout)."""
    if PurePosixPath(relative).is_absolute() or PureWindowsPath(relative).is_absolute():
        return True
    if PureWindowsPath(relative).drive or relative.startswith("\\"):
        return True
    normalised = os.path.normpath(relative.replace("\\", "/"))
    return normalised == ".." or normalised.startswith("../")


def _image_problem(path: Path) -> tuple[str, str] | None:
    """(reason, message) when the file is not an image the in-graph decoder decodes fully, else
    None. PIL decodes every pixel first, so broken data (truncated, corrupt, not an image) is
    `undecodable_image`; a sound image the graph cannot decode (`schema.graph_image_problem`,
    the graph's own rules) is `unsupported_image_format`."""
    try:
        with path.open("rb") as handle:
            header = handle.read(IMAGE_HEADER_BYTES)
        with Image.open(path) as image:
            image_format = image.format
            image.load()  # decodes every pixel: truncated or corrupt data fails here, not at open
            width, height = image.size
    except Exception as error:  # noqa: BLE001 - any failure means the pixels cannot be used
        return UNDECODABLE_IMAGE, f"image cannot be decoded ({type(error).__name__}: {error})"
    problem = graph_image_problem(header)
    if problem is not None:
        return UNSUPPORTED_IMAGE_FORMAT, f"image is {problem} (PIL reads it as {image_format})"
    expected = PIL_FORMATS[sniff_image_format(header)]
    if image_format not in expected:
        return UNDECODABLE_IMAGE, f"image starts like {expected[0]} but PIL reads {image_format}"
    if width == 0 or height == 0:
        return UNDECODABLE_IMAGE, f"image has no pixels ({width}x{height})"
    return None


class _RowValidator:
    """Turns parsed rows into Products, or a CatalogError saying what is wrong with the row."""

    def __init__(self, root: Path, source: Path, columns: list[str], check_images: bool):
        self.root = root
        self.source = source
        self.attribute_columns = [name for name in columns if name not in REQUIRED_COLUMNS]
        self.check_images = check_images
        self.first_row_of_id: dict[str, int] = {}

    def _error(self, raw: _RawRow, message: str, field: str | None, reason: str) -> CatalogError:
        return CatalogError(f"{message} (line {raw.line})", file=self.source, row=raw.row,
                            field=field, reason=reason)

    def validate(self, raw: _RawRow) -> Product:
        if raw.error is not None:
            raise raw.error
        values = raw.values
        for name, value in values.items():
            if has_undecodable_text(value):
                raise self._error(raw, "value is not valid UTF-8", name, NON_UTF8)
        for name in REQUIRED_COLUMNS:
            if name not in values:
                raise self._error(raw, "required field is missing", name, MISSING_FIELD)

        product_id = values["product_id"].strip()
        if not product_id:
            raise self._error(raw, "product_id is empty", "product_id", EMPTY_ID)
        first_row = self.first_row_of_id.setdefault(product_id, raw.row)
        if first_row != raw.row:
            raise self._error(
                raw, f"duplicate product_id {product_id!r} (first seen at row {first_row})",
                "product_id", DUPLICATE_ID)

        title = values["title"].strip()
        image = values["image"].strip()
        if not title and not image:
            raise self._error(raw, "title and image are both empty; an item needs at least one",
                              "title", EMPTY_TITLE_AND_IMAGE)
        image_path = self._checked_image_path(raw, image) if image else None
        attributes = {name: values.get(name, "").strip() for name in self.attribute_columns}
        return Product(product_id=product_id, title=title, image_path=image_path,
                       attributes=attributes, row=raw.row)

    def _checked_image_path(self, raw: _RawRow, relative: str) -> Path:
        if _is_unsafe_image_path(relative):
            raise self._error(raw, f"image path {relative!r} leaves the catalog directory",
                              "image", UNSAFE_PATH)
        path = self.root / os.path.normpath(relative.replace("\\", "/"))
        if not path.is_file():
            raise self._error(raw, f"image file not found: {relative}", "image", MISSING_IMAGE)
        if self.check_images:
            problem = _image_problem(path)
            if problem is not None:
                reason, message = problem
                raise self._error(raw, f"{relative}: {message}", "image", reason)
        return path


# --------------------------------------------------------------------------- public API


def _count_lines(path: Path) -> int:
    with path.open("rb") as handle:
        return sum(chunk.count(b"\n") for chunk in iter(lambda: handle.read(1 << 20), b""))


def progress_over_rows(rows: Iterable, source: Path, enabled: bool) -> Iterable:
    """`rows` with a progress report over the file's line count (less a CSV header) when enabled."""
    if not enabled:
        return rows
    total = _count_lines(source) - (1 if source.suffix == ".csv" else 0)
    return progress_reporter(rows, total=max(total, 0), desc=f"reading {source.name}", unit="row")


def validate_rows(rows: Iterable, validate, source: Path, on_bad_row: str, progress: bool
                  ) -> tuple[list, ReadReport]:
    """Runs `validate` over every raw row: its results, and the read report.

    The one bad-row policy of every input file (catalogs, search logs): with "error" the
    first CatalogError (or subclass) propagates, naming its file/row/field; with "skip" the
    row is counted under its reason and the first few are logged. The summary is logged too.
    """
    report = ReadReport(source=str(source))
    kept = []
    for raw in progress_over_rows(rows, source, progress):
        report.total_rows += 1
        try:
            kept.append(validate(raw))
        except CatalogError as error:
            if on_bad_row == "error":
                raise
            if report.record_skip(error, MAX_LOGGED_SKIPS):
                logger.warning("skipped: %s", error)
    report.ok = len(kept)
    (logger.warning if report.num_skipped else logger.info)("%s: %s", source, report.summary())
    return kept, report


def read_catalog(root: str | Path, on_bad_row: str = "error", check_images: bool = True,
                 progress: bool = False) -> Catalog:
    """Reads and validates the catalog in directory `root`.

    `on_bad_row="error"` raises CatalogError at the first bad row; `"skip"` keeps going and
    counts skipped rows by reason in `catalog.report` (see the reason constants in this module).
    For duplicate product ids the first row that names the id keeps it. Values are stripped of
    surrounding whitespace; other columns land in `Product.attributes` as strings (`NA` stays
    `NA`). An empty image field gives `image_path=None`. Image files must exist inside `root`; with
    `check_images` every image is also fully decoded (pixels, not just the header). Rows are
    numbered as the module docstring says. Schema problems (no or two products files, missing
    required columns, unreadable header) raise whatever the policy, and so does a read that
    leaves no products at all.
    """
    if on_bad_row not in BAD_ROW_POLICIES:
        raise ValueError(f"on_bad_row must be one of {BAD_ROW_POLICIES}, got {on_bad_row!r}")
    root = Path(os.path.abspath(root))
    source = find_catalog_file(root)
    if source.suffix == ".csv":
        columns, rows = _parse_csv(source)
    else:
        columns, rows = _parse_jsonl(source)

    validator = _RowValidator(root, source, columns, check_images)
    try:
        products, report = validate_rows(rows, validator.validate, source, on_bad_row, progress)
    finally:
        if hasattr(rows, "close"):
            rows.close()  # the CSV stream holds the file open until it is closed or exhausted
    if not products:
        raise CatalogError(f"no usable products ({report.summary()})", file=source,
                           reason="no_products")
    return Catalog(root=root, source=source, products=products, columns=columns, report=report)


def _csv_text(value) -> str:
    return "" if value is None else str(value)


def write_catalog(root: str | Path, rows: Iterable[Mapping[str, object]], fmt: str = "csv",
                  columns: list[str] | None = None) -> Path:
    """Writes `rows` (dicts) as root/products.csv or root/products.jsonl and returns the file.

    Columns default to the keys in first-seen order. CSV values are written as text (None as
    empty); JSONL keeps the values as given. Refuses to leave both file formats in `root`.
    Nothing is validated: tests use this to write deliberately bad catalogs.
    """
    if fmt not in ("csv", "jsonl"):
        raise ValueError(f"fmt must be 'csv' or 'jsonl', got {fmt!r}")
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    target = root / f"products.{fmt}"
    other = root / f"products.{'jsonl' if fmt == 'csv' else 'csv'}"
    if other.exists():
        raise CatalogError(f"{other.name} already exists; a catalog holds one products file",
                           file=root)
    rows = list(rows)
    if columns is None:
        seen: dict[str, None] = {}
        for row in rows:
            seen.update(dict.fromkeys(row))
        columns = list(seen)
    if fmt == "csv":
        with target.open("w", encoding="utf-8", newline="") as handle:
            writer = csv.writer(handle, lineterminator="\n")
            writer.writerow(columns)
            for row in rows:
                writer.writerow(_csv_text(row.get(name)) for name in columns)
    else:
        with target.open("w", encoding="utf-8") as handle:
            for row in rows:
                record = {name: row[name] for name in columns if name in row}
                handle.write(json.dumps(record, ensure_ascii=False) + "\n")
    return target
