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
            where.append(f"row {row}")
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


@dataclass
class ReadReport:
    """What a read did: how many rows, how many kept, how many skipped and why."""

    source: str = ""
    total_rows: int = 0
    ok: int = 0
    skipped: Counter = field(default_factory=Counter)
    examples: list[str] = field(default_factory=list)  # the first few skip messages

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
