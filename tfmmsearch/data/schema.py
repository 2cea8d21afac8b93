"""The in-memory shape of a catalog: products, read reports and catalog errors.

Every reader, generator and pipeline in `tfmmsearch.data` speaks these types, so a catalog
from CSV, JSONL or the synthetic generator looks the same to the rest of the package.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from tfmmsearch.contract import has_text

REQUIRED_COLUMNS = ("product_id", "title", "image")
CATALOG_FILES = ("products.csv", "products.jsonl")


class CatalogError(ValueError):
    """Bad catalog input. The message names the file, and the row and field where known."""

    ROW_WORD = "row"  # what `row` counts, in the message (a subclass may count lines)

    def __init__(self, message: str, *, file: str | Path | None = None, row: int | None = None,
                 field: str | None = None, reason: str = "invalid"):
        self.file = str(file) if file is not None else None
        self.row = row
        self.field = field
        self.reason = reason
        where = []
        if self.file is not None:
            where.append(self.file)
        if row is not None:
            where.append(f"{self.ROW_WORD} {row}")
        if field is not None:
            where.append(f"field {field!r}")
        prefix = ", ".join(where)
        super().__init__(f"{prefix}: {message}" if prefix else message)


@dataclass(frozen=True)
class Product:
    """One catalog item. `image_path` is None when the item has no image (a legal item)."""

    product_id: str
    title: str
    image_path: Path | None
    attributes: dict[str, str] = field(default_factory=dict, hash=False, compare=False)
    row: int = 0  # 1-based data row number in the source file (header not counted)

    @property
    def has_image(self) -> bool:
        return self.image_path is not None

    @property
    def has_title(self) -> bool:
        return has_text(self.title)

    def image_bytes(self) -> bytes:
        """The encoded image as the towers read it; b"" (no image) for an item without one."""
        return image_file_bytes(self.image_path)


def image_file_bytes(path: str | Path | None) -> bytes:
    """An image file's bytes, or b"" for no path (None or ""): what every signature's image
    input holds for an item without a photo."""
    return Path(path).read_bytes() if path else b""


@dataclass
class ReadReport:
    """What a read did: how many rows, how many kept, how many skipped and why."""

    source: str = ""
    total_rows: int = 0
    ok: int = 0
    skipped: Counter = field(default_factory=Counter)
    examples: list[str] = field(default_factory=list)  # the first few skip messages

    def record_skip(self, error: CatalogError, max_examples: int) -> bool:
        """Counts a skipped row under the error's reason; True when it is kept as an example
        (the first `max_examples`), so the caller logs only those."""
        self.skipped[error.reason] += 1
        if len(self.examples) < max_examples:
            self.examples.append(str(error))
            return True
        return False

    @property
    def num_skipped(self) -> int:
        return sum(self.skipped.values())

    def summary(self) -> str:
        text = f"read {self.total_rows} rows: {self.ok} ok, {self.num_skipped} skipped"
        if self.skipped:
            reasons = ", ".join(f"{reason}: {count}" for reason, count in sorted(self.skipped.items()))
            text += f" ({reasons})"
        return text


@dataclass
class Catalog:
    """A validated catalog: its directory, the file it came from, products and the read report."""

    root: Path
    source: Path
    products: list[Product]
    columns: list[str]
    report: ReadReport = field(default_factory=ReadReport)

    def __len__(self) -> int:
        return len(self.products)

    def by_id(self) -> dict[str, Product]:
        return {product.product_id: product for product in self.products}

    def subset(self, product_ids) -> "Catalog":
        wanted = set(product_ids)
        return Catalog(self.root, self.source, [p for p in self.products if p.product_id in wanted],
                       list(self.columns), self.report)


def products_by_id(products, source: str | Path | None = None) -> dict[str, Product]:
    """product_id -> Product; a repeated id is a CatalogError naming its file and row."""
    by_id: dict[str, Product] = {}
    for product in products:
        if product.product_id in by_id:
            raise CatalogError(f"duplicate product_id {product.product_id!r}", file=source,
                               row=product.row or None, field="product_id", reason="duplicate_id")
        by_id[product.product_id] = product
    return by_id


# --------------------------------------------------------------------------- image formats

# What the in-graph decoder (`pipeline.decode_image`, traced into training, feature caching and
# the exported serving graph) decodes, written as byte patterns: (offset, bytes) pairs that must
# all match. The catalog validator and the graph both read these tables, so a file the
# validator accepts is one the graph decodes, and the reverse.
IMAGE_SIGNATURES: tuple[tuple[str, tuple[tuple[int, bytes], ...]], ...] = (
    ("JPEG", ((0, b"\xff\xd8\xff"),)),
    ("PNG", ((0, b"\x89PNG\r\n\x1a\n"),)),
    ("GIF", ((0, b"GIF87a"),)),
    ("GIF", ((0, b"GIF89a"),)),
    ("BMP", ((0, b"BM"),)),
    ("WEBP", ((0, b"RIFF"), (8, b"WEBP"))),
)
IMAGE_FORMAT_NAMES = "JPEG, PNG, GIF, BMP or WEBP"

# TensorFlow's BMP decoder reads pixels as BGR(A) bytes and ignores palettes and compression:
# an 8-bit palette BMP decodes to wrong colours, a 1-bit one fails. These are the layouts it
# decodes correctly (bits per pixel at 28, compression at 30, BI_BITFIELDS masks at 54).
BMP_LAYOUTS: tuple[tuple[tuple[int, bytes], ...], ...] = (
    ((28, b"\x18\x00"), (30, b"\x00\x00\x00\x00")),  # 24-bit, uncompressed
    ((28, b"\x20\x00"), (30, b"\x00\x00\x00\x00")),  # 32-bit, uncompressed
    ((28, b"\x20\x00"), (30, b"\x03\x00\x00\x00"),   # 32-bit, BI_BITFIELDS with BGRA masks
     (54, b"\x00\x00\xff\x00\x00\xff\x00\x00\xff\x00\x00\x00")),
)
# TensorFlow 2.21 cannot decode animated WebP (channels=3 is refused, channels=0 corrupts the
# heap), so it is rejected up front: a VP8X chunk whose flags byte has the animation bit.
WEBP_EXTENDED = (12, b"VP8X")
WEBP_FLAGS_OFFSET = 20
WEBP_ANIMATION_FLAG = 0x02
IMAGE_HEADER_BYTES = 66  # every offset above lies in the first 66 bytes


def _matches(header: bytes, patterns) -> bool:
    return all(header[offset:offset + len(magic)] == magic for offset, magic in patterns)


def sniff_image_format(header: bytes) -> str | None:
    """The format the graph decodes these bytes as (from magic bytes), or None."""
    for name, patterns in IMAGE_SIGNATURES:
        if _matches(header, patterns):
            return name
    return None


def graph_image_problem(header: bytes) -> str | None:
    """Why the in-graph decoder cannot decode an image starting with `header`, or None when it
    can (pixel data is not looked at; `header` needs the first IMAGE_HEADER_BYTES bytes)."""
    image_format = sniff_image_format(header)
    if image_format is None:
        return f"not a {IMAGE_FORMAT_NAMES} file (it starts with {header[:8]!r})"
    padded = header + bytes(IMAGE_HEADER_BYTES)
    if image_format == "BMP" and not any(_matches(padded, layout) for layout in BMP_LAYOUTS):
        bits = int.from_bytes(padded[28:30], "little")
        compression = int.from_bytes(padded[30:34], "little")
        return (f"a BMP with {bits} bits per pixel and compression {compression}; only "
                "uncompressed 24- or 32-bit BMP decodes (save it as PNG or JPEG)")
    if (image_format == "WEBP" and _matches(padded, (WEBP_EXTENDED,))
            and padded[WEBP_FLAGS_OFFSET] & WEBP_ANIMATION_FLAG):
        return "an animated WEBP; only still WEBP decodes (save the first frame, or use GIF)"
    return None
