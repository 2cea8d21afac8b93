"""An export's index as rows of numpy arrays: read from a (loaded) SearchModule, changed, written back.

Every way of changing an index (a fresh export, re-indexing a catalog, an upsert, a delete, a
patch) ends in `write_index`, which assigns every stored field for the same items in one go:
the id lookup, the BM25 postings and the filter keys are rebuilt from these rows inside the
graph, so they cannot drift from each other whichever update came before.

`content_hash` says what an item was embedded from (title, image bytes, item-feature values
in the export's column order). Two items with the same hash get the same vectors from the same
export, so an update re-embeds only items whose hash is new.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np
import tensorflow as tf

from tfmmsearch.contract import (
    ATTRIBUTES_FIELD,
    CONTENT_HASH_FIELD,
    FILTER_VALUES_FIELD,
    INDEX_FIELDS,
    LEXICAL_FIELD,
)
from tfmmsearch.data.item_features import attribute_matrix
from tfmmsearch.data.schema import Product
from tfmmsearch.exporting.ivf_index import refresh_lists


def _names(variable) -> tuple[str, ...]:
    values = variable.numpy() if hasattr(variable, "numpy") else variable
    return tuple(v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in values)


def export_attribute_columns(module) -> tuple[str, ...] | None:
    """The item-feature columns a (loaded) export's `embed_item` / `index_outputs` take
    attributes of, in order; None for an export from before item features (no attributes
    input at all)."""
    columns = getattr(module, "item_feature_columns", None)
    return None if columns is None else _names(columns)


def export_filters(module) -> dict[str, str]:
    """A (loaded) export's filterable columns -> kind, in index order ({} for none, or for an
    export from before filters)."""
    columns = getattr(module, "filter_columns", None)
    if columns is None:
        return {}
    return dict(zip(_names(columns), _names(module.filter_kinds)))


def content_hash(title: str, image: bytes, attributes) -> str:
    """Hex digest of what an item is embedded from; `attributes` in the export's column order."""
    digest = hashlib.sha256()
    for part in (title.encode("utf-8"), image, *(str(v).encode("utf-8") for v in attributes)):
        digest.update(len(part).to_bytes(8, "little"))  # lengths keep ("ab", "c") != ("a", "bc")
        digest.update(part)
    return digest.hexdigest()


def product_hashes(products: list[Product], columns: tuple[str, ...] | None,
                   images: list[bytes] | None = None) -> np.ndarray:
    """`content_hash` of each product ([N] object array); `images` when already read."""
    values = attribute_matrix(products, columns or ())
    images = images if images is not None else [p.image_bytes() for p in products]
    return np.array([content_hash(p.title, image, row)
                     for p, image, row in zip(products, images, values)], dtype=object)


@dataclass
class IndexRows:
    """The items of an index in order: their ids and every stored field ([N, ...] arrays)."""

    product_ids: np.ndarray  # [N] object (str)
    fields: dict[str, np.ndarray] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.product_ids)

    def take(self, positions) -> "IndexRows":
        positions = np.asarray(positions, dtype=np.int64)
        return IndexRows(self.product_ids[positions],
                         {name: values[positions] for name, values in self.fields.items()})

    def position_of(self) -> dict[str, int]:
        return {product_id: i for i, product_id in enumerate(self.product_ids)}

    @staticmethod
    def concat(parts: list["IndexRows"]) -> "IndexRows":
        parts = [part for part in parts if part.fields]
        if not parts:
            return IndexRows(np.array([], dtype=object))
        names = parts[0].fields
        return IndexRows(np.concatenate([part.product_ids for part in parts]),
                         {name: np.concatenate([part.fields[name] for part in parts])
                          for name in names})


def _decoded(values: np.ndarray) -> np.ndarray:
    flat = [v.decode("utf-8") if isinstance(v, bytes) else v for v in values.reshape(-1)]
    return np.array(flat, dtype=object).reshape(values.shape)


def read_index(module) -> IndexRows:
    """What a (loaded) export's index holds now, as rows."""
    index = module.index
    fields = {name: getattr(index, "embeddings" if name == "embedding" else name).numpy()
              for name in INDEX_FIELDS}
    for name in (ATTRIBUTES_FIELD, LEXICAL_FIELD, FILTER_VALUES_FIELD, CONTENT_HASH_FIELD):
        variable = getattr(index, name, None)
        if variable is not None:
            values = variable.numpy()
            fields[name] = _decoded(values) if values.dtype == object else values
    return IndexRows(_decoded(index.product_ids.numpy()), fields)


def _string_tensor(values: np.ndarray) -> tf.Tensor:
    """A string array of any shape (possibly empty) as a tensor of that shape."""
    values = np.asarray(values, dtype=object)
    flat = [v if isinstance(v, bytes) else str(v) for v in values.reshape(-1)]
    return tf.reshape(tf.constant(flat, tf.string, shape=[values.size]), values.shape)


def write_index(module, rows: IndexRows, rebuild_lists: bool = False) -> int:
    """Replaces a (possibly loaded) export's index with `rows`; returns the item count.

    Fields the export does not store are ignored; fields it stores but `rows` lacks are
    zeros / "" (an export from before them, or a model without that part). An IVF index puts
    the rows in its lists (k-means centroids trained anew when `rebuild_lists`, or when it has
    none yet; exporting/ivf_index.py).
    """
    index = module.index
    size = int(index.assign(_string_tensor(rows.product_ids), rows.fields["embedding"],
                            rows.fields["text"], rows.fields["image"], rows.fields["mask"],
                            rows.fields["modality_weights"]))

    if hasattr(index, "assign_words"):
        index.assign_words(rows.fields.get(
            LEXICAL_FIELD, np.zeros((size, index.title_words.shape[1]), np.int64)))
    if hasattr(index, "assign_attributes"):
        index.assign_attributes(rows.fields[ATTRIBUTES_FIELD])
    if hasattr(index, "assign_filters"):
        width = index.filter_values.shape[1]
        values = rows.fields.get(FILTER_VALUES_FIELD, np.full((size, width), "", dtype=object))
        index.assign_filters(_string_tensor(values.reshape(size, width)))
    if hasattr(index, "assign_content_hashes"):
        hashes = rows.fields.get(CONTENT_HASH_FIELD, np.full(size, "", dtype=object))
        index.assign_content_hashes(_string_tensor(hashes))
    if hasattr(index, "ivf"):
        refresh_lists(index.ivf, rows.fields["embedding"], rebuild_lists)
    return size
