"""An exported SavedModel as a `SearchSystem`: the protocol scored through the serving signatures.

This is what a TF Serving user gets: items are indexed with the export's own `index_outputs`
(raw titles and image bytes in, in-graph tokenisation and JPEG decoding), assigned to its
index variables, and queries answered by a serving signature (`serving_default`, `retrieve`).
The signature returns its top K product ids; the evaluator sees them as a score matrix in
which the returned products rank first, in the order served, and every other product after
them (the metrics only read the top 100).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import tensorflow as tf

from tfmmsearch.evaluation.metrics import RETRIEVED
from tfmmsearch.contract import has_text, resolve_version_dir
from tfmmsearch.exporting.export import embed_items
from tfmmsearch.exporting.index_rows import IndexRows, export_attribute_columns, write_index

logger = logging.getLogger(__name__)

NOT_RETURNED = -np.inf  # score of a product the signature did not return


class LoadedExport:
    """A loaded export whose index the evaluator swaps between item sets (memoised per set).

    Several systems (signatures) share one `LoadedExport`, so each item set (full titles,
    blanked titles) is embedded once and re-assigned when a system needs it again.
    """

    def __init__(self, export_dir: str | Path, batch_size: int = 64):
        import tensorflow_text  # noqa: F401  (the export's tokenizer ops)

        self.path = path = resolve_version_dir(export_dir)  # a base directory: its latest version
        self.module = tf.saved_model.load(str(path))
        self.batch_size = batch_size
        self._arrays: dict[tuple, dict[str, np.ndarray]] = {}
        self._current: tuple | None = None

    @staticmethod
    def _item_set(titles: list[str], image_paths: list[str | None]) -> tuple:
        return tuple(titles), tuple(path or "" for path in image_paths)

    def index_arrays(self, titles: list[str], image_paths: list[str | None]) -> dict[str, np.ndarray]:
        """The export's index outputs for these items (computed once per distinct item set)."""
        key = self._item_set(titles, image_paths)
        if key not in self._arrays:
            # The protocol's items carry no item features: [N, 0] attributes (none known), or
            # no attributes input at all for an export from before item features.
            attributes = None if export_attribute_columns(self.module) is None else \
                np.empty((len(titles), 0), dtype=object)
            self._arrays[key] = embed_items(self.module.index_outputs, list(titles), list(image_paths),
                                            batch_size=self.batch_size,
                                            desc=f"indexing with {self.path.name}",
                                            attributes=attributes)
        return self._arrays[key]

    def use_items(self, titles: list[str], image_paths: list[str | None]) -> None:
        """Makes the export's index hold exactly these items; product ids are their positions."""
        key = self._item_set(titles, image_paths)
        if key == self._current:
            return
        arrays = self.index_arrays(titles, image_paths)
        ids = np.array([str(i) for i in range(len(titles))], dtype=object)
        write_index(self.module, IndexRows(ids, arrays))
        self._current = key

    def signature(self, name: str):
        if name not in self.module.signatures:
            raise KeyError(f"{self.path} has no signature {name!r}; it has "
                           f"{', '.join(sorted(self.module.signatures))}")
        return self.module.signatures[name]


class ExportedSearchSystem:
    """Scores queries by calling one serving signature of a `LoadedExport`."""

    def __init__(self, name: str, export: LoadedExport, signature: str = "serving_default",
                 batch_size: int = 32):
        self.name, self.export, self.signature_name = name, export, signature
        self.batch_size = batch_size
        export.signature(signature)  # fail now, not mid-evaluation, on a missing signature

    def score(self, query_texts, titles, image_paths, item_mode: str) -> np.ndarray:
        self.export.use_items(list(titles), list(image_paths))
        call = self.export.signature(self.signature_name)
        scores = np.full((len(query_texts), len(titles)), NOT_RETURNED)
        expected = min(RETRIEVED, len(titles))
        for start in range(0, len(query_texts), self.batch_size):
            chunk = list(query_texts[start:start + self.batch_size])
            ids = call(query=tf.constant(chunk, tf.string))["product_ids"].numpy()
            for row, returned in enumerate(ids):
                positions = [int(pid) for pid in returned if pid]
                if len(positions) < expected and has_text(chunk[row]):  # blank: finds nothing
                    # Unreturned products would fill the protocol's top 100 in index order.
                    raise ValueError(
                        f"{self.export.path} {self.signature_name} returned {len(positions)} "
                        f"products for {chunk[row]!r}; the protocol reads the top {expected}. "
                        f"Export with top_k >= {RETRIEVED} (tfmmsearch export --top-k {RETRIEVED})")
                # Served order is the ranking: first returned scores highest.
                scores[start + row, positions] = -np.arange(len(positions), dtype=np.float64)
        return scores
