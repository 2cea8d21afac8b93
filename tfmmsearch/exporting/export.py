"""`tfmmsearch.export(...)` and `tfmmsearch.reindex(...)`: versioned SavedModels for TF Serving.

A version is written to a hidden temporary directory beside the others and renamed to its
integer name only when complete (TF Serving only watches integer directories), so a failed
export leaves earlier versions intact and no partial version behind.

Re-indexing needs only an export: it loads the latest version, embeds the catalog with that
version's own `index_outputs` function, assigns the new index and saves the next version.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import tensorflow as tf
from tqdm.auto import tqdm

from tfmmsearch.data.catalog import read_catalog
from tfmmsearch.data.schema import Catalog, Product

logger = logging.getLogger(__name__)

INDEX_FIELDS = ("embedding", "text", "image", "mask", "modality_weights")


def list_versions(base_dir: str | Path) -> list[int]:
    base_dir = Path(base_dir)
    if not base_dir.is_dir():
        return []
    return sorted(int(p.name) for p in base_dir.iterdir() if p.is_dir() and p.name.isdigit())


def latest_version_dir(base_dir: str | Path) -> Path:
    versions = list_versions(base_dir)
    if not versions:
        raise FileNotFoundError(f"{base_dir} holds no exported version (no integer subdirectory); "
                                "create one with: tfmmsearch export --run RUN_DIR --base " + str(base_dir))
    return Path(base_dir) / str(versions[-1])


def embed_items(index_outputs, titles: list[str], image_paths: list, batch_size: int = 64,
                desc: str = "indexing") -> dict[str, np.ndarray]:
    """Runs an export's `index_outputs(title, image_bytes)` over items, in batches.

    `image_paths[i]` is a path to the item's JPEG/PNG, or None / "" for an item without one.
    """
    if len(titles) != len(image_paths):
        raise ValueError(f"titles ({len(titles)}) and image_paths ({len(image_paths)}) must "
                         "describe the same items")
    outputs: dict[str, list[np.ndarray]] = {field: [] for field in INDEX_FIELDS}
    start = time.time()
    with tqdm(total=len(titles), desc=desc, unit="item", leave=False,
              disable=len(titles) <= batch_size) as progress:
        for first in range(0, len(titles), batch_size):
            chunk_titles = titles[first:first + batch_size]
            chunk_images = [Path(path).read_bytes() if path else b""
                            for path in image_paths[first:first + batch_size]]
            result = index_outputs(title=tf.constant(chunk_titles, tf.string),
                                   image=tf.constant(chunk_images, tf.string))
            lexical = "title_words" in result  # a lexical ranking head's export
            for field in INDEX_FIELDS + (("title_words",) if lexical else ()):
                outputs.setdefault(field, []).append(result[field].numpy())
            progress.update(len(chunk_titles))
    seconds = time.time() - start
    logger.info("embedded %d items in %.1f s (%.0f items/s)", len(titles), seconds,
                len(titles) / max(seconds, 1e-9))
    return {field: np.concatenate(values) if values else np.zeros((0, 0), np.float32)
            for field, values in outputs.items()}


def embed_catalog(index_outputs, products: list[Product], batch_size: int = 64,
                  desc: str = "indexing") -> dict[str, np.ndarray]:
    """`embed_items` over catalog products."""
    return embed_items(index_outputs, [p.title for p in products],
                       [p.image_path for p in products], batch_size=batch_size, desc=desc)


def assign_index(module, product_ids: list[str], arrays: dict[str, np.ndarray]) -> int:
    """Replaces a (possibly loaded) export's index with these items' `embed_items` arrays."""
    size = int(module.index.assign(
        tf.constant(product_ids), arrays["embedding"], arrays["text"],
        arrays["image"], arrays["mask"], arrays["modality_weights"]))
    if hasattr(module.index, "assign_words"):  # a lexical head's index: words for every item
        width = module.index.title_words.shape[1]
        module.index.assign_words(arrays.get("title_words", np.zeros((size, width), np.int64)))
    return size


def write_version(module, base_dir: str | Path, signatures: dict, products: list[Product],
                  model_name: str) -> Path:
    """Saves `module` as the next integer version under base_dir, atomically, with warmup."""
    from tfmmsearch.serving.warmup import search_warmup_requests, write_warmup_file

    base_dir = Path(base_dir)
    base_dir.mkdir(parents=True, exist_ok=True)
    version = (list_versions(base_dir) or [0])[-1] + 1
    tmp_dir = Path(tempfile.mkdtemp(prefix=f".tmp-{version}-", dir=base_dir))
    try:
        tf.saved_model.save(module, str(tmp_dir), signatures=signatures)
        sample = products[:4]
        requests = search_warmup_requests(
            queries=[p.title or "shirt" for p in sample] or ["shirt"],
            product_ids=[p.product_id for p in sample],
            titles=[p.title for p in sample],
            images=[p.image_path.read_bytes() if p.image_path else b"" for p in sample])
        write_warmup_file(tmp_dir, requests, model_name=model_name)
        final = base_dir / str(version)
        os.replace(tmp_dir, final)
    finally:
        if tmp_dir.exists():
            shutil.rmtree(tmp_dir, ignore_errors=True)
    logger.info("wrote version %d to %s", version, final)
    return final


def _catalog(catalog_dir, on_bad_row: str) -> Catalog:
    catalog = read_catalog(catalog_dir, on_bad_row=on_bad_row, progress=True)
    if catalog.report.num_skipped:
        logger.warning("%s: %s", catalog.source, catalog.report.summary())
    return catalog


def export(run_dir: str | Path, catalog_dir: str | Path | None = None, base_dir: str | Path | None = None,
           top_k: int | None = None, on_bad_row: str | None = None,
           products: list[Product] | None = None) -> Path:
    """Exports a trained run with an index over `catalog_dir` (default: the run's catalog).

    `products` (instead of a catalog directory) indexes exactly those products, e.g. one split.
    """
    from tfmmsearch.data.prepare import resolve_catalog_dir
    from tfmmsearch.exporting.search_module import SearchModule
    from tfmmsearch.training.train import load_trained_model

    if products is not None and catalog_dir is not None:
        raise ValueError("pass either catalog_dir or products, not both")
    config, towers, model = load_trained_model(run_dir)
    base_dir = Path(base_dir or Path(config.export.base_dir) / config.export.model_name)
    if products is None:
        catalog = _catalog(catalog_dir or resolve_catalog_dir(config),
                           on_bad_row or config.data.on_bad_row)
        products, source = catalog.products, catalog.source
    else:
        source = f"{len(products)} given products"
    module = SearchModule(model, towers.encoders, config.towers.image.image_size,
                          top_k=top_k or config.export.top_k)
    arrays = embed_catalog(module.index_outputs, products)
    size = assign_index(module, [p.product_id for p in products], arrays)
    logger.info("index of %d items from %s", size, source)
    return write_version(module, base_dir, module.signatures(), products, base_dir.name)


def reindex(base_dir: str | Path, catalog_dir: str | Path, on_bad_row: str = "error") -> Path:
    """Embeds `catalog_dir` with the latest version's item tower and writes the next version."""
    import tensorflow_text  # noqa: F401  (the export's tokenizer ops)

    base_dir = Path(base_dir)
    source = latest_version_dir(base_dir)
    loaded = tf.saved_model.load(str(source))
    catalog = _catalog(catalog_dir, on_bad_row)
    arrays = embed_catalog(loaded.index_outputs, catalog.products, desc=f"indexing with v{source.name}")
    size = assign_index(loaded, [p.product_id for p in catalog.products], arrays)
    logger.info("re-indexed %d items from %s with version %s", size, catalog.source, source.name)
    signatures = dict(loaded.signatures)
    return write_version(loaded, base_dir, signatures, catalog.products, base_dir.name)
