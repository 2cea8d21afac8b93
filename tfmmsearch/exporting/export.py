"""`tfmmsearch.export(...)` and `tfmmsearch.reindex(...)`: versioned SavedModels for TF Serving.

A version is written to a hidden temporary directory beside the others and renamed to its
integer name only when complete (TF Serving only watches integer directories), so a failed
export leaves earlier versions intact and no partial version behind; temporaries left by a
killed process are removed by the next export. Versions are world-readable (directories
0755, files 0644): TF Serving usually runs as another user. One writer at a time per model
base path (a lock file), so two `index` runs cannot race for the same version number.

Export indexes the catalog through the trained model's own `embed_items`, reusing the frozen
encoder features training cached for the same products (seconds instead of minutes).
Re-indexing needs only an export: it loads a version, embeds the catalog with that version's
own `index_outputs` function, assigns the new index and saves the next version.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np
import tensorflow as tf

from tfmmsearch.contract import (
    CONTENT_HASH_FIELD,
    EXPORT_FILTERS_FILE,
    EXPORT_ITEM_FEATURES_FILE,
    FILTER_VALUES_FIELD,
    INDEX_FIELDS,
    base_dir_of,
    list_versions,
    resolve_version_dir,
)
from tfmmsearch.data.catalog import read_catalog
from tfmmsearch.data.item_features import attribute_matrix
from tfmmsearch.progress import progress
from tfmmsearch.data.schema import Catalog, Product, image_file_bytes
from tfmmsearch.exporting.errors import ExportBusyError, ExportConfigError, UpdateError
from tfmmsearch.exporting.index_rows import (
    IndexRows,
    export_attribute_columns,
    export_filters,
    product_hashes,
    read_index,
    write_index,
)
from tfmmsearch.exporting.updates import Embed, IndexUpdate, UpdateReport, plan_update

logger = logging.getLogger(__name__)

LOCK_FILE = ".tfmmsearch-writer.lock"
_TMP_PREFIX = ".tmp-"


def string_matrix(values: np.ndarray) -> tf.Tensor:
    """A [N, C] array of strings (C may be 0) as a string tensor of that shape."""
    values = np.asarray(values, dtype=object)
    flat = tf.constant([v if isinstance(v, bytes) else str(v) for v in values.reshape(-1)],
                       tf.string, shape=[values.size])
    return tf.reshape(flat, values.shape)


def embed_batch(index_outputs, titles: list[str], images: list[bytes],
                attributes: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """One call of an export's `index_outputs` on one batch of items: every field it returns,
    as numpy arrays with the batch first.

    The one place items meet the item signature when (re-)indexing: the in-process loop
    (`embed_items`) and the Beam workers (exporting/beam_embedding.py) both call it, so both
    paths feed the towers the same tensors. `images` holds encoded image bytes (b"": no image);
    `attributes` [B, C] item-feature strings in the export's column order, None for an export
    from before item features.
    """
    inputs = {"title": tf.constant(list(titles), tf.string, shape=[len(titles)]),
              "image": tf.constant(list(images), tf.string, shape=[len(images)])}
    if attributes is not None:
        inputs["attributes"] = string_matrix(attributes)
    return {field: value.numpy() for field, value in index_outputs(**inputs).items()}


def embed_items(index_outputs, titles: list[str], image_paths: list, batch_size: int = 64,
                desc: str = "indexing", attributes: np.ndarray | None = None
                ) -> dict[str, np.ndarray]:
    """Runs an export's `index_outputs(title, image_bytes, attributes)` over items, in batches.

    `image_paths[i]` is a path to the item's image file, or None / "" for an item without one.
    `attributes` [N, C]: the items' item-feature strings in the export's column order
    (`export_attribute_columns`; C = 0: none known); None for an export from before item
    features, whose `index_outputs` takes titles and images only.
    """
    if len(titles) != len(image_paths):
        raise ValueError(f"titles ({len(titles)}) and image_paths ({len(image_paths)}) must "
                         "describe the same items")
    if attributes is not None and len(attributes) != len(titles):
        raise ValueError(f"titles ({len(titles)}) and attributes ({len(attributes)}) must "
                         "describe the same items")
    outputs: dict[str, list[np.ndarray]] = {field: [] for field in INDEX_FIELDS}
    start = time.time()
    with progress(total=len(titles), desc=desc, unit="item", leave=False,
                  disable=len(titles) <= batch_size) as bar:
        for first in range(0, len(titles), batch_size):
            chunk_titles = titles[first:first + batch_size]
            chunk_images = [image_file_bytes(path)
                            for path in image_paths[first:first + batch_size]]
            chunk_attributes = (None if attributes is None
                                else attributes[first:first + batch_size])
            result = embed_batch(index_outputs, chunk_titles, chunk_images, chunk_attributes)
            for field, value in result.items():
                outputs.setdefault(field, []).append(value)
            bar.update(len(chunk_titles))
    seconds = time.time() - start
    logger.info("embedded %d items in %.1f s (%.0f items/s)", len(titles), seconds,
                len(titles) / max(seconds, 1e-9))
    return {field: np.concatenate(values) if values else np.zeros((0, 0), np.float32)
            for field, values in outputs.items()}


def embed_catalog(index_outputs, products: list[Product], batch_size: int = 64,
                  desc: str = "indexing", columns: tuple[str, ...] | None = None
                  ) -> dict[str, np.ndarray]:
    """`embed_items` over catalog products; `columns`: the export's item-feature columns
    (`export_attribute_columns`), read from each product's attributes."""
    attributes = None if columns is None else attribute_matrix(products, columns)
    return embed_items(index_outputs, [p.title for p in products],
                       [p.image_path for p in products], batch_size=batch_size, desc=desc,
                       attributes=attributes)


# --------------------------------------------------------------------------- writing versions


@contextlib.contextmanager
def exclusive_writer(base_dir: str | Path):
    """Holds the base path's writer lock (non-blocking): a second writer fails at once, clearly."""
    base_dir = Path(base_dir)
    base_dir.mkdir(parents=True, exist_ok=True)
    lock_path = base_dir / LOCK_FILE
    handle = open(lock_path, "a+")
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            if error.errno not in (errno.EAGAIN, errno.EACCES):
                raise
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise ExportBusyError(
                f"{base_dir} is being written by {holder} (lock {lock_path}); wait for it to "
                "finish, then run this again") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()}")
        handle.flush()
        yield
    finally:
        handle.close()


def clean_stale_temporaries(base_dir: Path) -> list[Path]:
    """Removes `.tmp-*` version directories whose writing process is gone (e.g. SIGKILLed)."""
    removed = []
    for child in Path(base_dir).glob(_TMP_PREFIX + "*"):
        parts = child.name[len(_TMP_PREFIX):].split("-")
        pid = int(parts[1]) if len(parts) > 2 and parts[1].isdigit() else None
        if pid is not None and pid != os.getpid() and _alive(pid):
            continue
        shutil.rmtree(child, ignore_errors=True)
        removed.append(child)
    if removed:
        logger.info("removed %d stale temporary export(s) from %s", len(removed), base_dir)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _make_world_readable(root: Path) -> None:
    """0755 directories, 0644 files: TF Serving often runs as another user."""
    for directory, _, files in os.walk(root):
        os.chmod(directory, 0o755)
        for name in files:
            os.chmod(os.path.join(directory, name), 0o644)


_VARIABLES = "variables"
_FINGERPRINT = "fingerprint.pb"


def _checkpoint_keys(version_dir: Path) -> dict:
    return tf.train.load_checkpoint(str(version_dir / _VARIABLES / _VARIABLES)
                                    ).get_variable_to_dtype_map()


def _save_new_values(loaded, previous: Path, into: Path) -> bool:
    """Writes `loaded` (a SavedModel loaded from `previous`, its variables since assigned) as
    `previous`'s graph, signatures and assets with a new checkpoint, instead of re-serialising
    every function (tf.saved_model.save takes ~15 s for MiniLM + Lite0, this ~1 s).

    Valid because an update changes variable values only, never the graph: the index
    variables have a dynamic first dimension, so any size restores into the same graph.
    Returns False (nothing usable written) if the checkpoint's keys differ from `previous`'s,
    which would mean the object graph changed; the caller then saves in full.
    """
    for entry in previous.iterdir():
        if entry.name in (_VARIABLES, _FINGERPRINT):
            continue
        copy = shutil.copytree if entry.is_dir() else shutil.copyfile
        copy(entry, into / entry.name)
    tf.train.Checkpoint(loaded).write(str(into / _VARIABLES / _VARIABLES))
    if _checkpoint_keys(into) != _checkpoint_keys(previous):
        logger.warning("the loaded export's variables do not match %s's; saving it in full",
                       previous)
        for entry in into.iterdir():
            (shutil.rmtree if entry.is_dir() else os.remove)(entry)
        return False
    from tensorflow.python.saved_model import fingerprinting_utils  # what tf.saved_model.save calls

    fingerprinting_utils.write_fingerprint(str(into))
    return True


def _keras_layer_traces_off():
    """A context in which `tf.saved_model.save` skips tf_keras's per-layer call traces.

    Saving a module that tracks Keras layers makes tf_keras trace every layer's `call` (and
    its losses) into the SavedModel, for `tf.keras.models.load_model`. An export is served
    by its signatures and read back with `tf.saved_model.load` or as a checkpoint, never as
    Keras layers: the traces cost about a third of each export's time (15.4 -> 11.5 s for
    the tiny test model) and ~10% of its size. tf_keras keeps the switch
    (`save_traces=False` of `model.save`) in a private module; without it, export saves the
    traces as before."""
    try:
        from tf_keras.src.saving.legacy.saved_model.utils import keras_option_scope
    except ImportError:  # another tf_keras layout: save as tf.saved_model.save does
        return contextlib.nullcontext()
    return keras_option_scope(save_traces=False)


def write_version(module, base_dir: str | Path, signatures: dict, products: list[Product],
                  model_name: str, item_features: dict | None = None,
                  previous: Path | None = None) -> Path:
    """Saves `module` as the next integer version under base_dir, atomically, with warmup.

    `previous`: the version `module` was loaded from (an index update); its graph and
    signatures are reused and only the variables are written (`_save_new_values`).
    Warmup requests are made from `products`; with none (an update that only deletes or
    patches), the `previous` version's warmup file is kept, since the signatures are the same.
    `item_features`: the content of contract.EXPORT_ITEM_FEATURES_FILE (default: the module's
    columns only). The caller holds `exclusive_writer(base_dir)`.
    """
    from tfmmsearch.serving.warmup import search_warmup_requests, warmup_path, write_warmup_file

    base_dir = Path(base_dir)
    base_dir.mkdir(parents=True, exist_ok=True)
    clean_stale_temporaries(base_dir)
    version = max(list_versions(base_dir), default=0) + 1
    tmp_dir = Path(tempfile.mkdtemp(prefix=f"{_TMP_PREFIX}{version}-{os.getpid()}-", dir=base_dir))
    columns = export_attribute_columns(module)
    try:
        if previous is None or not _save_new_values(module, previous, tmp_dir):
            with _keras_layer_traces_off():
                tf.saved_model.save(module, str(tmp_dir), signatures=signatures)
        if products or previous is None or not warmup_path(previous).is_file():
            sample = products[:4]
            requests = search_warmup_requests(
                queries=[p.title or "shirt" for p in sample] or ["shirt"],
                product_ids=[p.product_id for p in sample],
                titles=[p.title for p in sample],
                images=[p.image_bytes() for p in sample],
                attributes=attribute_matrix(sample, columns or ()).tolist(),
                signature_inputs={name: [spec.name for spec
                                         in tf.nest.flatten(function.structured_input_signature)]
                                  for name, function in signatures.items()},
                embedding_dim=int(module.index.embeddings.shape[1]))
            write_warmup_file(tmp_dir, requests, model_name=model_name)
        else:
            warmup_path(tmp_dir).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(warmup_path(previous), warmup_path(tmp_dir))
        if columns is not None:
            write_item_features_file(tmp_dir, item_features or {"columns": list(columns)})
        if hasattr(module, "filter_columns"):
            _write_json(tmp_dir / EXPORT_FILTERS_FILE, {"filters": export_filters(module)})
        _make_world_readable(tmp_dir)
        final = base_dir / str(version)
        os.replace(tmp_dir, final)
    finally:
        if tmp_dir.exists():
            shutil.rmtree(tmp_dir, ignore_errors=True)
    logger.info("wrote version %d to %s", version, final)
    return final


def write_item_features_file(version_dir: Path, content: dict) -> Path:
    """contract.EXPORT_ITEM_FEATURES_FILE: {"columns": the export's item-feature columns, in
    order (for clients), "statistics": the vocabularies and statistics the model reads them with
    (data/item_features.py; a warm start from the export reuses them)}."""
    return _write_json(Path(version_dir) / EXPORT_ITEM_FEATURES_FILE, content)


def _write_json(path: Path, content: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(content, ensure_ascii=False) + "\n", encoding="utf-8")
    return path


def model_item_features(model) -> dict:
    """A trained model's EXPORT_ITEM_FEATURES_FILE content."""
    content = {"columns": list(model.item_feature_columns)}
    if model.item_feature_columns:
        content["statistics"] = model.item_feature_stats.to_json()
    return content


def _stored_item_features(version_dir: Path) -> dict | None:
    path = Path(version_dir) / EXPORT_ITEM_FEATURES_FILE
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def _catalog(catalog_dir, on_bad_row: str) -> Catalog:
    catalog = read_catalog(catalog_dir, on_bad_row=on_bad_row, progress=True)
    if catalog.report.num_skipped:
        logger.warning("%s: %s", catalog.source, catalog.report.summary())
    return catalog


# --------------------------------------------------------------------------- export / reindex


def _check_filter_columns(filters: dict[str, str], columns: list[str], source) -> None:
    """A column of export.filters that the catalog lacks is an error naming it (a filter on
    it could never match)."""
    missing = [column for column in filters if column not in columns]
    if missing:
        raise ExportConfigError(
            f"export.filters names {', '.join(map(repr, missing))}, but {source} has no such "
            f"column (its columns: {', '.join(columns)})")


def export(run_dir: str | Path, catalog_dir: str | Path | None = None, base_dir: str | Path | None = None,
           top_k: int | None = None, on_bad_row: str | None = None,
           products: list[Product] | None = None) -> Path:
    """Exports a trained run with an index over `catalog_dir` (default: the run's catalog).

    `products` (instead of a catalog directory) indexes exactly those products, e.g. one split.
    """
    from tfmmsearch.data.prepare import resolve_catalog_dir
    from tfmmsearch.model.build import load_trained_model

    if products is not None and catalog_dir is not None:
        raise ValueError("pass either catalog_dir or products, not both")
    config, model = load_trained_model(run_dir)
    base_dir = Path(base_dir or Path(config.export.base_dir) / config.export.model_name)
    with exclusive_writer(base_dir):
        if products is None:
            catalog = _catalog(catalog_dir or resolve_catalog_dir(config),
                               on_bad_row or config.data.on_bad_row)
            products, source, columns = catalog.products, catalog.source, catalog.columns
        else:
            source = f"{len(products)} given products"
            columns = sorted({column for p in products for column in p.attributes})
        module = search_module(config, model, products, columns, source, top_k)
        return write_version(module, base_dir, module.signatures(), products, base_dir.name,
                             model_item_features(model))


def search_module(config, model, products: list[Product], columns: list[str], source,
                  top_k: int | None = None):
    """The servable of a trained model with its index over `products` (`columns`: the
    catalog's columns, to check export.filters against), not yet saved."""
    from tfmmsearch.exporting.catalog_index import model_index_arrays
    from tfmmsearch.exporting.search_module import SearchModule

    filters = config.export.filters
    module = SearchModule(model, top_k=top_k or config.export.top_k,
                          hybrid=config.export.hybrid, filters=filters,
                          index=config.export.index)
    arrays = model_index_arrays(model, config, products)
    _check_filter_columns(filters, columns, source)
    arrays[FILTER_VALUES_FIELD] = attribute_matrix(products, tuple(filters))
    arrays[CONTENT_HASH_FIELD] = product_hashes(products, tuple(model.item_feature_columns))
    size = write_index(module, IndexRows(np.array([p.product_id for p in products], object),
                                         arrays))
    logger.info("index of %d items from %s", size, source)
    return module


def catalog_embedder(module, desc: str = "indexing"):
    """products -> their index fields, through a (loaded) export's own `index_outputs`."""
    columns = export_attribute_columns(module)
    return lambda products: embed_catalog(module.index_outputs, products, desc=desc,
                                          columns=columns)


# (loaded export, its version directory) -> the callable that embeds an update's new products.
EmbedderFactory = Callable[[object, Path], Embed]


def in_process_embedder(module, version_dir: Path) -> Embed:
    """The default `embed_with` of `update_index`: this process runs the export's towers."""
    return catalog_embedder(module, f"indexing with v{Path(version_dir).name}")


def update_index(model_path: str | Path, update_of: Callable[[dict[str, str]], IndexUpdate],
                 embed_with: EmbedderFactory | None = None, rebuild_lists: bool = False,
                 ) -> tuple[Path, UpdateReport]:
    """Applies an update to an export's latest index (or a given version's) and writes the
    next version; the towers of that version embed whatever is new.

    `update_of(filters)` builds the update once the export is loaded (a catalog read needs
    to know the filterable columns to check them). `embed_with(loaded, version_dir)` makes
    the embedder of new and changed products: `in_process_embedder` (the default), or
    `beam_embedding.beam_embedder(...)`, which spreads them over Beam workers and reads
    their TFRecord shards back.
    `rebuild_lists`: an IVF index learns new centroids from the updated catalog (otherwise
    new products join their nearest lists).
    """
    import tensorflow_text  # noqa: F401  (the export's tokenizer ops)

    source = resolve_version_dir(model_path)
    base_dir = base_dir_of(source)
    with exclusive_writer(base_dir):
        loaded = tf.saved_model.load(str(source))
        update = update_of(export_filters(loaded))
        ivf = getattr(loaded.index, "ivf", None)
        if rebuild_lists and ivf is None:
            raise UpdateError(f"{source} has an exact index (export.index.type: exact): it "
                              "has no IVF lists to rebuild")
        embed = (embed_with or in_process_embedder)(loaded, source)
        rows, report = plan_update(loaded, read_index(loaded), update, embed)
        had_lists = ivf is not None and int(tf.shape(ivf.centroids)[0]) > 0
        write_index(loaded, rows, rebuild_lists=rebuild_lists)
        if ivf is not None:
            report.lists_rebuilt = rebuild_lists or not had_lists
            report.list_drift = {name: value.numpy().item()
                                 for name, value in ivf.drift().items()}
        logger.info("version %s -> next: %s", source.name, report.summary())
        products = update.catalog if update.catalog is not None else update.upsert
        skipped = set(report.skipped)
        version = write_version(loaded, base_dir, dict(loaded.signatures),
                                [p for p in products if p.product_id not in skipped],
                                base_dir.name, _stored_item_features(source), previous=source)
        return version, report


def read_update_catalog(catalog_dir: str | Path, on_bad_row: str, filters: dict[str, str]
                        ) -> list[Product]:
    """A catalog for an update, checked to hold the export's filterable columns."""
    catalog = _catalog(catalog_dir, on_bad_row)
    _check_filter_columns(filters, catalog.columns, catalog.source)
    return catalog.products


def reindex(model_path: str | Path, catalog_dir: str | Path, on_bad_row: str = "error") -> Path:
    """Indexes `catalog_dir` with an export's item tower and writes the next version; products
    whose content the index already holds keep their vectors (see exporting/updates.py).

    `model_path` is a model base path (its latest version embeds) or one version directory
    (that version embeds; the new version goes beside it).
    """
    version, _ = update_index(model_path, lambda filters: IndexUpdate(
        catalog=read_update_catalog(catalog_dir, on_bad_row, filters)))
    return version
