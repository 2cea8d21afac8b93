"""Catalog embedding on Apache Beam: an export's item tower over many workers, into TFRecords.

Why Beam: one process embeds about 25 items/s on 2 CPU cores (the EfficientNet-Lite0 image
tower dominates), so re-indexing a 1M-product catalog in process takes about 11 hours. The
work is embarrassingly parallel: every item goes through the same `index_outputs` function on
its own. Beam's RunInference spreads it over as many workers as a runner gives (the local
DirectRunner's processes, or Flink, Spark and Dataflow clusters) and retries failed bundles,
so nothing here schedules, retries or merges work itself.

The pipeline (`run_embedding_pipeline`):

    work list (JSONL: position, product_id, title, image path, item-feature strings)
      -> read each image file (an unreadable file is a bad row)
      -> Reshuffle (spreads items over workers)
      -> RunInference(IndexOutputsHandler): the export loaded once per worker
         (tf.saved_model.load), `export.embed_batch` over batches of `batch_size`
         (an image the graph cannot decode is isolated to its row: a bad row)
      -> tf.train.Example rows (product_id, position, content hash, every index_outputs field)
      -> sharded TFRecord files `embeddings-*.tfrecord`; bad rows to `bad_rows-*.jsonl`

Workers need no catalog reader and no tfmmsearch config, only the work list, the export
directory and the image files at the paths the work list names (for a cluster: shared or
object storage). `read_index_shards` reads the shards back into the arrays
`export.embed_catalog` returns, in work-list (catalog) order; `beam_embedder` plugs the whole
thing into `export.update_index(..., embed_with=...)`, so the index build is the in-process
one. Bad rows are counted by reason (data/catalog.py's reasons) and follow the catalog's
`on_bad_row` policy: "error" fails naming the first one's image file, row and field, "skip"
leaves them out of the new version (an indexed product keeps its old row, as a skipped catalog
row would).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

import apache_beam as beam
import numpy as np
from apache_beam.ml.inference.base import ModelHandler, RunInference
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.runners.runner import PipelineState

from tfmmsearch.contract import CONTENT_HASH_FIELD, base_dir_of
from tfmmsearch.data.catalog import MISSING_IMAGE, UNDECODABLE_IMAGE
from tfmmsearch.data.item_features import attribute_matrix
from tfmmsearch.data.schema import CatalogError, Product
from tfmmsearch.exporting.beam_options import BeamEmbedOptions
from tfmmsearch.exporting.updates import EMBEDDED_IDS

logger = logging.getLogger(__name__)

WORK_LIST = "work_list.jsonl"
SHARD_PREFIX = "embeddings"
SHARD_SUFFIX = ".tfrecord"
BAD_ROWS_PREFIX = "bad_rows"
BAD_ROWS_SUFFIX = ".jsonl"
_POSITION = "position"
_SHAPE = "/shape"  # each field's per-item shape rides along: `<field>/shape`
_BAD = "bad"
METRICS_NAMESPACE = "tfmmsearch"
MAX_LOGGED_BAD_ROWS = 5


# --------------------------------------------------------------------------- the work list


def write_work_list(products: Sequence[Product], columns: tuple[str, ...] | None,
                    path: str | Path) -> int:
    """Writes one JSON object per product: what a worker needs to embed it, nothing more.

    `columns`: the export's item-feature columns (`export_attribute_columns`); None for an
    export from before item features (no attributes input). Image paths are absolute, so a
    worker in any directory finds them.
    """
    import tensorflow as tf

    values = attribute_matrix(list(products), columns or ())
    with tf.io.gfile.GFile(str(path), "w") as handle:
        for position, (product, row) in enumerate(zip(products, values)):
            handle.write(json.dumps({
                _POSITION: position, "product_id": product.product_id, "title": product.title,
                "image": str(Path(product.image_path).absolute()) if product.image_path else "",
                "attributes": None if columns is None else [str(v) for v in row],
                "row": product.row,
            }, ensure_ascii=False) + "\n")
    return len(products)


def _bad_row(item: dict, reason: str, message: str) -> dict:
    return {_POSITION: item[_POSITION], "product_id": item["product_id"], "row": item["row"],
            "image": item["image"], "field": "image", "reason": reason, "message": message}


def read_image(path: str) -> bytes:
    """An image file's bytes (b"" for no image); local paths or any filesystem TF knows."""
    if not path:
        return b""
    if "://" in path:
        import tensorflow as tf

        with tf.io.gfile.GFile(path, "rb") as handle:
            return handle.read()
    return Path(path).read_bytes()


class _ReadItem(beam.DoFn):
    """A work-list line -> the item with its image bytes, or a bad row if the file is unreadable."""

    def process(self, line: str):
        item = json.loads(line)
        try:
            item["image_bytes"] = read_image(item["image"])
        except OSError as error:
            beam.metrics.Metrics.counter(METRICS_NAMESPACE, "bad_rows").inc()
            yield beam.pvalue.TaggedOutput(_BAD, _bad_row(
                item, MISSING_IMAGE, f"cannot read image {item['image']}: "
                                     f"{error.strerror or error}"))
            return
        yield item


# --------------------------------------------------------------------------- the model handler


# version directory -> (pid, the export as that process loaded it): `beam_embedder` registers
# the driver's copy, so a runner that works in the driver's process (the DirectRunner's
# in-memory mode) does not load the same SavedModel a second time. Worker processes start with
# an empty registry, and the pid check keeps a forked one from using its parent's copy.
_LOADED_HERE: dict[str, tuple[int, object]] = {}


class IndexOutputsHandler(ModelHandler):
    """RunInference's view of an export: load it once per worker, embed batches of items.

    `load_model` imports tensorflow_text (the export's tokenizer ops) and loads the version
    with tf.saved_model.load; `run_inference` calls its `index_outputs` signature function
    through `export.embed_batch`, the same call the in-process path makes. A batch the graph
    refuses (InvalidArgument: an image it cannot decode) is retried item by item, so only the
    bad item becomes a bad row; any other error fails the bundle, and the runner retries it.
    """

    def __init__(self, version_dir: str | Path, batch_size: int = 64,
                 intra_op_threads: int | None = None, inter_op_threads: int | None = None):
        super().__init__()
        self._version_dir = str(version_dir)
        self._batch_size = batch_size
        self._threads = (intra_op_threads, inter_op_threads)

    def load_model(self):
        import tensorflow as tf
        import tensorflow_text  # noqa: F401  (the export's tokenizer ops)

        intra, inter = self._threads
        try:
            if intra is not None:
                tf.config.threading.set_intra_op_parallelism_threads(intra)
            if inter is not None:
                tf.config.threading.set_inter_op_parallelism_threads(inter)
        except RuntimeError:  # TensorFlow already initialised in this process (in-memory runs)
            logger.debug("thread settings not applied: TensorFlow is already initialised")
        shared = _LOADED_HERE.get(self._version_dir)
        if shared is not None and shared[0] == os.getpid():
            return shared[1]  # a runner working in the driver's process: its export, as loaded
        start = time.time()
        module = tf.saved_model.load(self._version_dir)
        logger.info("worker %d loaded %s in %.1f s", os.getpid(), self._version_dir,
                    time.time() - start)
        return module

    def batch_elements_kwargs(self):
        return {"min_batch_size": self._batch_size, "max_batch_size": self._batch_size}

    def run_inference(self, batch: Sequence[dict], model, inference_args=None) -> Iterable[dict]:
        import tensorflow as tf

        try:
            outputs = self._embed(batch, model)
        except tf.errors.InvalidArgumentError as error:
            if len(batch) == 1:
                beam.metrics.Metrics.counter(METRICS_NAMESPACE, "bad_rows").inc()
                message = error.message.splitlines()[0] if error.message else str(error)
                return [{"bad": _bad_row(batch[0], UNDECODABLE_IMAGE,
                                         f"the export cannot embed it: {message}")}]
            return [result for item in batch for result in self.run_inference([item], model)]
        beam.metrics.Metrics.counter(METRICS_NAMESPACE, "embedded").inc(len(batch))
        return [{"item": item, "outputs": {name: values[i] for name, values in outputs.items()}}
                for i, item in enumerate(batch)]

    @staticmethod
    def _embed(batch: Sequence[dict], model) -> dict[str, np.ndarray]:
        from tfmmsearch.exporting.export import embed_batch

        attributes = None
        if batch[0]["attributes"] is not None:
            attributes = np.empty((len(batch), len(batch[0]["attributes"])), dtype=object)
            for i, item in enumerate(batch):
                attributes[i, :] = item["attributes"]
        return embed_batch(model.index_outputs, [item["title"] for item in batch],
                           [item["image_bytes"] for item in batch], attributes)


# --------------------------------------------------------------------------- TFRecord rows


def _feature(values: np.ndarray):
    import tensorflow as tf

    values = np.asarray(values).reshape(-1)
    if values.dtype.kind == "f":
        return tf.train.Feature(float_list=tf.train.FloatList(value=values))
    if values.dtype.kind in "iub":
        return tf.train.Feature(int64_list=tf.train.Int64List(value=values.astype(np.int64)))
    return tf.train.Feature(bytes_list=tf.train.BytesList(
        value=[v if isinstance(v, bytes) else str(v).encode("utf-8") for v in values]))


def example_row(item: dict, outputs: dict[str, np.ndarray]) -> bytes:
    """A serialized tf.train.Example: product_id, position, content hash and every field."""
    import tensorflow as tf

    from tfmmsearch.exporting.index_rows import content_hash

    features = {
        "product_id": _feature(np.array([item["product_id"]], object)),
        _POSITION: _feature(np.array([item[_POSITION]], np.int64)),
        CONTENT_HASH_FIELD: _feature(np.array([content_hash(
            item["title"], item["image_bytes"], item["attributes"] or ())], object)),
    }
    for name, value in outputs.items():
        value = np.asarray(value)
        features[name] = _feature(value)
        features[name + _SHAPE] = _feature(np.array(value.shape, np.int64))
    return tf.train.Example(features=tf.train.Features(feature=features)).SerializeToString()


class _ToExample(beam.DoFn):
    def process(self, result: dict):
        if "bad" in result:
            yield beam.pvalue.TaggedOutput(_BAD, result["bad"])
        else:
            yield example_row(result["item"], result["outputs"])


def _glob(directory: str | Path, prefix: str, suffix: str) -> list[str]:
    import tensorflow as tf

    return sorted(tf.io.gfile.glob(os.path.join(str(directory), f"{prefix}-*{suffix}")))


def _values(feature) -> np.ndarray:
    kind = feature.WhichOneof("kind")
    if kind == "float_list":
        return np.asarray(feature.float_list.value, np.float32)
    if kind == "int64_list":
        return np.asarray(feature.int64_list.value, np.int64)
    return np.array([v.decode("utf-8") for v in feature.bytes_list.value], dtype=object)


def read_index_shards(directory: str | Path) -> dict[str, np.ndarray]:
    """The shards of `directory` as the arrays `export.embed_catalog` returns ([N, ...] per
    field), plus `product_id` [N] and the content hashes, rows in work-list order.

    Products the pipeline could not embed (bad rows) are absent. A position written twice
    (shards of two runs in one directory) is an error naming a product.
    """
    import tensorflow as tf

    files = _glob(directory, SHARD_PREFIX, SHARD_SUFFIX)
    if not files:
        raise FileNotFoundError(f"no {SHARD_PREFIX}-*{SHARD_SUFFIX} shards in {directory}")
    positions: list[int] = []
    columns: dict[str, list[np.ndarray]] = {}
    for record in tf.data.TFRecordDataset(files):
        features = tf.train.Example.FromString(record.numpy()).features.feature
        positions.append(int(features[_POSITION].int64_list.value[0]))
        for name, feature in features.items():
            if name == _POSITION or name.endswith(_SHAPE):
                continue
            values = _values(feature)
            if name + _SHAPE in features:
                values = values.reshape(tuple(features[name + _SHAPE].int64_list.value))
            else:  # one value per item: product_id, the content hash
                values = values[0]
            columns.setdefault(name, []).append(values)
    order = np.argsort(np.asarray(positions, np.int64), kind="stable")
    sorted_positions = np.asarray(positions, np.int64)[order]
    repeated = np.flatnonzero(np.diff(sorted_positions) == 0)
    if repeated.size:
        product = columns["product_id"][order[repeated[0]]]
        raise ValueError(f"{directory}: product {product!r} (work-list position "
                         f"{sorted_positions[repeated[0]]}) is in the shards twice; embed into "
                         "an empty directory")
    arrays = {}
    for name, values in columns.items():
        if values and isinstance(values[0], np.ndarray):
            arrays[name] = np.stack(values)[order]
        else:
            arrays[name] = np.array(values, dtype=object)[order]
    arrays.setdefault(EMBEDDED_IDS, np.array([], dtype=object))
    return arrays


def read_bad_rows(directory: str | Path) -> list[dict]:
    """The bad rows a run wrote (image file, row, field, reason, message), in work-list order."""
    import tensorflow as tf

    rows = []
    for path in _glob(directory, BAD_ROWS_PREFIX, BAD_ROWS_SUFFIX):
        with tf.io.gfile.GFile(path, "r") as handle:
            rows += [json.loads(line) for line in handle if line.strip()]
    return sorted(rows, key=lambda row: row[_POSITION])


def bad_row_error(row: dict) -> CatalogError:
    """A bad row as the catalog reader would name it: image file, row, field, reason."""
    return CatalogError(f"{row['message']} (product {row['product_id']!r})",
                        file=row["image"] or None, row=row["row"] or None, field=row["field"],
                        reason=row["reason"])


def bad_rows_summary(total: int, bad: list[dict]) -> str:
    """`embedded 58 of 60 products, 2 bad rows (missing_image: 1, undecodable_image: 1)`."""
    text = f"embedded {total - len(bad)} of {total} products, {len(bad)} bad rows"
    if bad:
        counts = Counter(row["reason"] for row in bad)
        text += " (" + ", ".join(f"{reason}: {n}" for reason, n in sorted(counts.items())) + ")"
    return text


# --------------------------------------------------------------------------- the pipeline


def pipeline_options(options: BeamEmbedOptions) -> PipelineOptions:
    """The Beam options of a run: `options.pipeline_args` as given, the runner added."""
    return PipelineOptions(list(options.pipeline_args) + [f"--runner={options.runner}"])


def run_embedding_pipeline(work_list: str | Path, version_dir: str | Path,
                           out_dir: str | Path, options: BeamEmbedOptions,
                           handler: ModelHandler | None = None) -> None:
    """Embeds every item of `work_list` with the export at `version_dir` into `out_dir`'s
    shards and bad-row files; returns when the pipeline is done (raises if it failed).

    `handler`: the RunInference model handler (default `IndexOutputsHandler` over the
    export, with `options`' batch size and thread settings).
    """
    handler = handler or IndexOutputsHandler(version_dir, options.batch_size,
                                             options.intra_op_threads, options.inter_op_threads)
    out_dir = str(out_dir)
    pipeline = beam.Pipeline(options=pipeline_options(options))
    read = (pipeline
            | "ReadWorkList" >> beam.io.ReadFromText(str(work_list))
            | "Spread" >> beam.Reshuffle()
            | "ReadImages" >> beam.ParDo(_ReadItem()).with_outputs(_BAD, main="items"))
    rows = (read.items
            | "Embed" >> RunInference(handler)
            | "ToExamples" >> beam.ParDo(_ToExample()).with_outputs(_BAD, main="examples"))
    _ = rows.examples | "WriteShards" >> beam.io.WriteToTFRecord(
        os.path.join(out_dir, SHARD_PREFIX), file_name_suffix=SHARD_SUFFIX,
        num_shards=options.shards)
    _ = ((read[_BAD], rows[_BAD])
         | "BadRows" >> beam.Flatten()
         | "BadRowsAsJson" >> beam.Map(lambda row: json.dumps(row, ensure_ascii=False))
         | "WriteBadRows" >> beam.io.WriteToText(os.path.join(out_dir, BAD_ROWS_PREFIX),
                                                 file_name_suffix=BAD_ROWS_SUFFIX,
                                                 num_shards=1))
    result = pipeline.run()
    state = result.wait_until_finish()
    if state not in (None, PipelineState.DONE):
        raise RuntimeError(f"the Beam pipeline ended {state}, not DONE")


def _clear_outputs(directory: str) -> None:
    """Removes a previous run's work list, shards and bad rows (only those) from `directory`."""
    import tensorflow as tf

    tf.io.gfile.makedirs(directory)
    stale = (_glob(directory, SHARD_PREFIX, SHARD_SUFFIX)
             + _glob(directory, BAD_ROWS_PREFIX, BAD_ROWS_SUFFIX))
    if tf.io.gfile.exists(os.path.join(directory, WORK_LIST)):
        stale.append(os.path.join(directory, WORK_LIST))
    for path in stale:
        tf.io.gfile.remove(path)


def embed_products(products: Sequence[Product], columns: tuple[str, ...] | None,
                   version_dir: str | Path, directory: str | Path, options: BeamEmbedOptions,
                   handler: ModelHandler | None = None) -> tuple[dict[str, np.ndarray], list[dict]]:
    """Work list -> pipeline -> shards read back: (arrays as `read_index_shards`, bad rows)."""
    directory = str(directory)
    _clear_outputs(directory)
    work_list = os.path.join(directory, WORK_LIST)
    write_work_list(products, columns, work_list)
    logger.info("embedding %d products on Beam's %s (%s) into %s", len(products),
                options.runner, " ".join(options.pipeline_args) or "default options", directory)
    start = time.time()
    run_embedding_pipeline(work_list, version_dir, directory, options, handler)
    arrays, bad = read_index_shards(directory), read_bad_rows(directory)
    seconds = time.time() - start
    logger.info("Beam %s: %s in %.1f s (%.1f items/s)", options.runner,
                bad_rows_summary(len(products), bad), seconds, len(products) / max(seconds, 1e-9))
    return arrays, bad


def beam_embedder(options: BeamEmbedOptions, handler: ModelHandler | None = None):
    """`export.update_index(..., embed_with=beam_embedder(options))`: new and changed products
    are embedded by a Beam pipeline, and the index is built from its shards.

    Bad rows follow `options.on_bad_row`: "error" raises the first one's CatalogError (after
    the pipeline; nothing is written to the export), "skip" logs them and leaves them out.
    """

    def factory(module, version_dir: Path):
        from tfmmsearch.exporting.index_rows import export_attribute_columns

        columns = export_attribute_columns(module)

        def embed(products: list[Product]) -> dict[str, np.ndarray]:
            temporary = options.embeddings_dir is None
            directory = (tempfile.mkdtemp(prefix=".embeddings-", dir=base_dir_of(version_dir))
                         if temporary else str(options.embeddings_dir))
            _LOADED_HERE[str(version_dir)] = (os.getpid(), module)
            try:
                arrays, bad = embed_products(products, columns, version_dir, directory,
                                             options, handler)
            finally:
                _LOADED_HERE.pop(str(version_dir), None)
                if temporary:
                    shutil.rmtree(directory, ignore_errors=True)
            if bad:
                summary = bad_rows_summary(len(products), bad)
                if options.on_bad_row == "error":
                    raise CatalogError(f"{bad_row_error(bad[0])} [{summary}; --on-bad-row skip "
                                       "leaves bad rows out]", reason=bad[0]["reason"])
                for row in bad[:MAX_LOGGED_BAD_ROWS]:
                    logger.warning("skipped: %s", bad_row_error(row))
                logger.warning("Beam embedding: %s", summary)
            return arrays

        return embed

    return factory
