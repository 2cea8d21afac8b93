"""Index updates without retraining: a new catalog, upserts, deletes and attribute patches.

A shop's catalog changes all day; the towers do not. An update loads the latest export, works
out the new rows and writes them as the next version (exporting/export.py: atomic, one writer):

- replace (`tfmmsearch index --catalog C`): the index holds exactly C's products;
- upsert (`--upsert C`): C's products are added or replace the indexed ones with their ids,
  every other product stays;
- delete (`--delete IDS`): a text file, one product id per line (blank lines and `#` comments
  skipped);
- patch (`--patch FILE`): JSONL `{"product_id": ..., "price": "899"}` or CSV with a
  `product_id` column: new values of filterable columns (export.filters) only.

Only products whose content hash (index_rows.content_hash: title, image bytes, item-feature
values) is new go through the item tower; the others keep their stored vectors. A patch
re-embeds nothing, so it refuses a column the model reads as an item feature (its vectors
would then disagree with the value): such a change is an upsert.
"""

from __future__ import annotations

import csv
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from tfmmsearch.contract import CONTENT_HASH_FIELD, FILTER_VALUES_FIELD
from tfmmsearch.data.item_features import attribute_matrix
from tfmmsearch.data.schema import CatalogError, Product
from tfmmsearch.exporting.errors import UpdateError
from tfmmsearch.exporting.index_rows import (
    IndexRows,
    export_attribute_columns,
    export_filters,
    product_hashes,
)

logger = logging.getLogger(__name__)

# products -> their index fields, rows in the products' order. An embedder that counts bad
# rows instead of failing (the Beam one: an image a worker cannot read or decode) leaves them
# out and names the rows it holds under EMBEDDED_IDS; the update then skips those products.
Embed = Callable[[list[Product]], dict[str, np.ndarray]]
EMBEDDED_IDS = "product_id"


@dataclass
class IndexUpdate:
    """What to change; `catalog` (a full replacement) excludes the other three."""

    catalog: list[Product] | None = None
    upsert: list[Product] = field(default_factory=list)
    delete: list[str] = field(default_factory=list)
    patch: dict[str, dict[str, str]] = field(default_factory=dict)  # id -> column -> value


@dataclass
class UpdateReport:
    """What an update did, counted (logged, and printed by the CLI)."""

    size: int = 0
    embedded: int = 0  # products the item tower ran for
    reused: int = 0  # products whose stored vectors were kept (content unchanged)
    added: int = 0
    replaced: int = 0
    deleted: int = 0
    removed_by_replace: int = 0
    patched: int = 0
    unknown_deletes: list[str] = field(default_factory=list)
    unknown_patches: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # bad rows the embedder could not embed
    # An IVF index: whether k-means ran anew, and its `IVFIndex.drift()` after the update.
    lists_rebuilt: bool = False
    list_drift: dict | None = None

    def summary(self) -> str:
        parts = [f"{self.size} items", f"{self.embedded} embedded",
                 f"{self.reused} unchanged and reused"]
        for label, count in (("added", self.added), ("replaced", self.replaced),
                             ("deleted", self.deleted), ("dropped (not in the new catalog)",
                                                         self.removed_by_replace),
                             ("patched", self.patched)):
            if count:
                parts.append(f"{count} {label}")
        for label, ids in (("ids to delete", self.unknown_deletes),
                           ("ids to patch", self.unknown_patches)):
            if ids:
                parts.append(f"{len(ids)} {label} not in the index, skipped ({_shown(ids)})")
        if self.skipped:
            parts.append(f"{len(self.skipped)} bad rows could not be embedded, skipped "
                         f"({_shown(self.skipped)})")
        if self.list_drift is not None:
            parts.append(self._lists_summary())
        return "; ".join(parts)

    def _lists_summary(self) -> str:
        drift = self.list_drift
        state = "rebuilt by k-means" if self.lists_rebuilt else "kept"
        text = (f"IVF: {drift['lists']} lists {state}, largest list {drift['imbalance']:.1f}x "
                f"the mean ({drift['built_imbalance']:.1f}x when built), mean cosine to the "
                f"centroid {drift['cohesion']:.3f} ({drift['built_cohesion']:.3f} when built)")
        if drift["rebuild"]:
            text += " - the lists have drifted: rebuild them with `tfmmsearch index --rebuild-lists`"
        return text


def _shown(ids: list[str]) -> str:
    return ", ".join(ids[:5]) + (", ..." if len(ids) > 5 else "")


# --------------------------------------------------------------------------- reading inputs


def read_ids_file(path: str | Path) -> list[str]:
    """Product ids, one per line; blank lines and lines starting with # are skipped."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as error:
        raise CatalogError(f"cannot read ids: {error.strerror}", file=path) from None
    except UnicodeDecodeError:
        raise CatalogError("not UTF-8 text", file=path) from None
    return [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]


class PatchFileError(CatalogError):
    """A bad line of a JSONL patch (a CSV patch counts rows, as catalogs do)."""

    ROW_WORD = "line"


def read_patch_file(path: str | Path) -> dict[str, dict[str, str]]:
    """Patch rows (JSONL objects or CSV rows with a product_id), id -> column -> value."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise CatalogError(f"cannot read the patch: {error.strerror}", file=path) from None
    except UnicodeDecodeError:
        raise CatalogError("not UTF-8 text", file=path) from None
    if path.suffix.lower() == ".csv":
        error_type = CatalogError
        rows = list(enumerate(csv.DictReader(text.splitlines()), 2))  # row 1 is the header
    else:
        error_type = PatchFileError
        rows = []
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as error:
                raise PatchFileError(f"not JSON ({error.msg} at column {error.colno})",
                                     file=path, row=number) from None
            if not isinstance(row, dict):
                raise PatchFileError("expected a JSON object", file=path, row=number)
            rows.append((number, row))
    patch: dict[str, dict[str, str]] = {}
    for number, row in rows:
        product_id = row.get("product_id")
        if not isinstance(product_id, (str, int)) or not str(product_id).strip():
            raise error_type("required", file=path, row=number, field="product_id")
        values = {}
        for column, value in row.items():
            if column == "product_id":
                continue
            if value is not None and not isinstance(value, (str, int, float, bool)):
                raise error_type(f"expected a string or a number, got {type(value).__name__}",
                                 file=path, row=number, field=column)
            values[column] = "" if value is None else str(value)
        if not values:
            raise error_type("names no column to change", file=path, row=number)
        patch.setdefault(str(product_id).strip(), {}).update(values)
    return patch


# --------------------------------------------------------------------------- planning


def _embedded_rows(module, current: IndexRows, products: list[Product], embed: Embed,
                   report: UpdateReport) -> IndexRows:
    """Rows for `products` in their order: stored vectors where the content is unchanged,
    the item tower's output for the rest; filter values and hashes from the products.
    Products the embedder left out (bad rows, see `Embed`) are not among the rows."""
    columns = export_attribute_columns(module)
    images = [_image_or_none(p) for p in products]
    hashes = product_hashes(products, columns, [image or b"" for image in images])
    # An image this process cannot read has no content to compare: the product goes to the
    # embedder, which fails on it (in process) or counts it as a bad row (Beam).
    hashes[[i for i, image in enumerate(images) if image is None]] = ""
    stored = current.fields.get(CONTENT_HASH_FIELD)
    where = current.position_of()
    reuse = np.array([stored is not None and p.product_id in where
                      and stored[where[p.product_id]] not in ("", None)
                      and stored[where[p.product_id]] == hashes[i]
                      for i, p in enumerate(products)], dtype=bool)
    fresh = [p for p, keep in zip(products, reuse) if not keep]
    arrays = embed(fresh) if fresh else {}
    if EMBEDDED_IDS in arrays:
        embedded = set(arrays[EMBEDDED_IDS])
        bad = [p.product_id for p in fresh if p.product_id not in embedded]
        if bad:
            report.skipped += bad
            keep = np.array([p.product_id not in set(bad) for p in products], dtype=bool)
            products = [p for p, k in zip(products, keep) if k]
            hashes, reuse = hashes[keep], reuse[keep]
            fresh = [p for p in fresh if p.product_id in embedded]
        if list(arrays[EMBEDDED_IDS]) != [p.product_id for p in fresh]:
            raise UpdateError("the embedder returned rows for other products than it was "
                              "given, or in another order")
    report.embedded += len(fresh)
    report.reused += int(reuse.sum())
    kept = current.take([where[p.product_id] for p, keep in zip(products, reuse) if keep])
    if fresh:
        # Hashes and filter values are set below for every row; the tower gives the rest.
        blank = {name: np.zeros((len(fresh),) + values.shape[1:], values.dtype)
                 for name, values in current.fields.items()}
        embedded = IndexRows(np.array([p.product_id for p in fresh], dtype=object),
                             {name: arrays.get(name, blank[name]) for name in current.fields})
    else:
        embedded = current.take([])
    # Back into the products' order: kept rows fill the reused slots, embedded ones the rest.
    order = np.empty(len(products), dtype=np.int64)
    order[np.flatnonzero(reuse)] = np.arange(int(reuse.sum()))
    order[np.flatnonzero(~reuse)] = int(reuse.sum()) + np.arange(len(fresh))
    rows = IndexRows.concat([kept, embedded]).take(order)
    if CONTENT_HASH_FIELD in current.fields:
        rows.fields[CONTENT_HASH_FIELD] = hashes
    filters = export_filters(module)
    if FILTER_VALUES_FIELD in current.fields:
        rows.fields[FILTER_VALUES_FIELD] = attribute_matrix(products, tuple(filters))
    return rows


def _image_or_none(product: Product) -> bytes | None:
    try:
        return product.image_bytes()
    except OSError:
        return None


def _patched(module, rows: IndexRows, patch: dict[str, dict[str, str]], report: UpdateReport
             ) -> IndexRows:
    filters = list(export_filters(module))
    features = set(export_attribute_columns(module) or ())
    for product_id, values in patch.items():
        for column in values:
            if column in features:
                raise UpdateError(
                    f"patch of {product_id!r}: {column!r} is an item feature of this model, so "
                    "its vectors depend on it; send the product's full row with --upsert")
            if column not in filters:
                raise UpdateError(
                    f"patch of {product_id!r}: {column!r} is not a filterable column of this "
                    f"export (filterable: {', '.join(filters) or 'none'}); a patch changes "
                    "filter values only, --upsert changes anything else")
    where = rows.position_of()
    report.unknown_patches = sorted(pid for pid in patch if pid not in where)
    values = rows.fields[FILTER_VALUES_FIELD].copy() if patch else None
    for product_id, changes in patch.items():
        if product_id in where:
            for column, value in changes.items():
                values[where[product_id], filters.index(column)] = value
            report.patched += 1
    if patch:
        rows.fields[FILTER_VALUES_FIELD] = values
    return rows


def plan_update(module, current: IndexRows, update: IndexUpdate, embed: Embed
                ) -> tuple[IndexRows, UpdateReport]:
    """The rows of the next version and what changed (nothing is written here)."""
    report = UpdateReport()
    if update.catalog is not None and (update.upsert or update.delete or update.patch):
        raise UpdateError("a full catalog replaces the index: give it alone, or use "
                          "upsert/delete/patch")
    if update.patch and FILTER_VALUES_FIELD not in current.fields:
        raise UpdateError("this export stores no filterable columns (exported before filters "
                          "existed): nothing to patch")
    if update.catalog is not None:
        rows = _embedded_rows(module, current, update.catalog, embed, report)
        new_ids = set(rows.product_ids)
        report.removed_by_replace = sum(1 for pid in current.product_ids if pid not in new_ids)
        report.added = sum(1 for pid in new_ids if pid not in current.position_of())
        report.size = len(rows)
        return rows, report
    upserted = {p.product_id for p in update.upsert}
    both = sorted(upserted & set(update.delete))
    if both:
        raise UpdateError(f"{len(both)} products are both upserted and deleted "
                          f"({', '.join(both[:5])}): say which one you mean")
    duplicates = len(update.upsert) - len(upserted)
    if duplicates:
        raise UpdateError(f"the upsert names {duplicates} product ids more than once")
    where = current.position_of()
    report.unknown_deletes = sorted(pid for pid in set(update.delete) if pid not in where)
    gone = set(update.delete) & set(where)
    report.deleted = len(gone)
    new_rows = _embedded_rows(module, current, update.upsert, embed, report)
    new_where = new_rows.position_of()
    # A bad row of the upsert is skipped as a catalog read skips it: an indexed product keeps
    # its stored row, a new one is not added.
    upserted -= set(report.skipped)
    report.replaced = sum(1 for pid in upserted if pid in where)
    report.added = len(upserted) - report.replaced
    # Kept products stay in place (replaced ones take their new rows there); new ones follow.
    parts, kept = [], []
    for position, product_id in enumerate(current.product_ids):
        if product_id in gone:
            continue
        if product_id in new_where:
            if kept:
                parts.append(current.take(kept))
                kept = []
            parts.append(new_rows.take([new_where[product_id]]))
        else:
            kept.append(position)
    parts.append(current.take(kept))
    parts.append(new_rows.take([new_where[p.product_id] for p in update.upsert
                                if p.product_id not in where and p.product_id in new_where]))
    rows = IndexRows.concat(parts)
    rows = _patched(module, rows, update.patch, report)
    report.size = len(rows)
    return rows, report
