"""`tfmmsearch query`: searches an export directory or a running TF Serving and prints results.

The target decides the transport (`tfmmsearch.serving.connect.connect`): an existing directory
is loaded in-process, `http(s)://...` is REST, `host:port` is gRPC, and anything else that
looks like a path is a missing export. Titles are printed when a catalog is given.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tfmmsearch.contract import MODALITIES
from tfmmsearch.serving.client import DEFAULT_TIMEOUT
from tfmmsearch.serving.connect import connect


def format_results(queries: list[str], outputs: dict, k: int, titles: dict[str, str] | None = None) -> str:
    """Readable results: rank, product id, score, modality weights (text/image, and attributes
    where they count), title."""
    lines = []
    for row, query in enumerate(queries):
        lines.append(f"query: {query!r}")
        ids = outputs["product_ids"][row][:k]
        if "num_results" in outputs:  # a filtered search: only this many are real results
            ids = ids[:int(outputs["num_results"][row])]
            if not len(ids):
                lines.append("  (no product matches the filter)")
        for rank, product_id in enumerate(ids):
            product_id = product_id.decode() if isinstance(product_id, bytes) else str(product_id)
            score = float(outputs["scores"][row][rank])
            line = f"  {rank + 1:2d}. {product_id:>10s}  score {score:8.3f}"
            if "modality_weights" in outputs:
                weights = np.asarray(outputs["modality_weights"][row][rank], float)
                shown = " ".join(f"{name} {weight:.2f}" for name, weight in zip(MODALITIES, weights)
                                 if name != "attributes" or weight > 0)
                line += f"  weights {shown}"
            if titles is not None:
                line += f"  {titles.get(product_id, '(not in catalog)') or '(no title)'}"
            lines.append(line)
    return "\n".join(lines)


def run_query(target: str, queries: list[str], model_name: str | None = None, transport: str = "auto",
              k: int = 5, catalog_dir: str | Path | None = None, signature: str = "serving_default",
              timeout: float = DEFAULT_TIMEOUT, filter_text: str | None = None) -> dict:
    """Runs `queries` through `signature` on `target` and prints the top `k` per query;
    `filter_text` (one filter for every query) searches through `search_filtered`."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if filter_text is not None and signature != "serving_default":
        raise ValueError(f"--filter searches with the ranking head (search_filtered); the "
                         f"{signature!r} signature takes no filter")
    with connect(target, model_name, transport, timeout=timeout) as client:
        if filter_text is not None:
            outputs = client.search_filtered(queries, filter_text)
        elif signature == "serving_default":
            outputs = client.search(queries)
        else:
            outputs = client.retrieve(queries)
    titles = None
    if catalog_dir is not None:
        from tfmmsearch.data.catalog import read_catalog

        catalog = read_catalog(catalog_dir, on_bad_row="skip", check_images=False)
        titles = {p.product_id: p.title for p in catalog.products}
    print(format_results(queries, outputs, k, titles))
    return outputs
