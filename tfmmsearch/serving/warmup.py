"""SavedModel warmup requests: the file TF Serving replays before it marks a version AVAILABLE.

Without warmup the first real queries after a (re)load pay for graph initialisation, tokenizer
tables and kernel autotuning, which shows up as latency spikes on every rollout. TF Serving reads
<saved_model>/assets.extra/tf_serving_warmup_requests: a TFRecord file (uncompressed) of
PredictionLog protos, at most 1000 records, each replayed against the signature it names.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence, Union

import numpy as np

from tfmmsearch.contract import DEFAULT_SIGNATURE, SIGNATURE_ALIASES, SIGNATURE_INPUTS
from tfmmsearch.serving.client import DEFAULT_MODEL_NAME, ServingError, string_tensor
from tfmmsearch.serving.grpc_client import make_predict_request
from tfmmsearch.serving.local import LocalSavedModelClient

WARMUP_DIR = "assets.extra"
WARMUP_FILE = "tf_serving_warmup_requests"
MAX_WARMUP_RECORDS = 1000  # TF Serving refuses files with more (WarmupConsts::kMaxNumRecords)

# A warmup request: a ready PredictRequest proto, or (signature_name, {input name: array-like}).
WarmupRequest = Union[Any, tuple[str, Mapping[str, Any]]]


def warmup_path(saved_model_dir: str | Path) -> Path:
    return Path(saved_model_dir) / WARMUP_DIR / WARMUP_FILE


def _as_predict_request(item: WarmupRequest, model_name: str, index: int) -> Any:
    from tensorflow_serving.apis import predict_pb2

    if isinstance(item, predict_pb2.PredictRequest):
        return item
    if isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str) and isinstance(item[1], Mapping):
        signature_name, inputs = item
        if not inputs:
            raise ValueError(f"warmup request {index} ({signature_name!r}): no inputs")
        return make_predict_request(model_name, signature_name, inputs)
    raise TypeError(f"warmup request {index}: expected a PredictRequest or (signature_name, inputs dict), "
                    f"got {type(item).__name__}")


def write_warmup_file(
    saved_model_dir: str | Path,
    requests: Iterable[WarmupRequest],
    model_name: str = DEFAULT_MODEL_NAME,
) -> Path:
    """Writes the requests as PredictionLog(predict_log=PredictLog(request=...)) TFRecords; returns the path."""
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_log_pb2

    saved_model_dir = Path(saved_model_dir)
    if not (saved_model_dir / "saved_model.pb").is_file():
        raise FileNotFoundError(f"{saved_model_dir}: no saved_model.pb; warmup files go inside a "
                                "SavedModel version folder (export/<name>/<version>/)")
    logs = []
    for index, item in enumerate(requests):
        request = _as_predict_request(item, model_name, index)
        logs.append(prediction_log_pb2.PredictionLog(
            predict_log=prediction_log_pb2.PredictLog(request=request)))
    if not logs:
        raise ValueError("no warmup requests given; write at least one per signature")
    if len(logs) > MAX_WARMUP_RECORDS:
        raise ValueError(f"{len(logs)} warmup requests; TF Serving accepts at most {MAX_WARMUP_RECORDS}")
    path = warmup_path(saved_model_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tf.io.TFRecordWriter(str(path)) as writer:
        for log in logs:
            writer.write(log.SerializeToString())
    return path


def read_warmup_file(path: str | Path) -> list[Any]:
    """The PredictionLog records of a warmup file (or of the SavedModel folder holding one)."""
    import tensorflow as tf
    from google.protobuf.message import DecodeError
    from tensorflow_serving.apis import prediction_log_pb2

    path = Path(path)
    if path.is_dir():
        path = warmup_path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no warmup file")
    logs = []
    try:
        for index, record in enumerate(tf.data.TFRecordDataset(str(path)).as_numpy_iterator()):
            log = prediction_log_pb2.PredictionLog()
            try:
                log.ParseFromString(record)
            except DecodeError as error:
                raise ValueError(f"{path}: record {index} is not a PredictionLog ({error})") from None
            if log.WhichOneof("log_type") != "predict_log":
                raise ValueError(f"{path}: record {index} holds {log.WhichOneof('log_type')!r}, "
                                 "but this model is served through Predict only")
            logs.append(log)
    except tf.errors.DataLossError as error:
        raise ValueError(f"{path}: not a valid TFRecord file ({error.message})") from None
    if len(logs) > MAX_WARMUP_RECORDS:
        raise ValueError(f"{path}: {len(logs)} records; TF Serving accepts at most {MAX_WARMUP_RECORDS}")
    return logs


def replay_warmup(saved_model_dir: str | Path) -> list[dict[str, np.ndarray]]:
    """Runs every recorded request against the SavedModel in-process, as TF Serving would on load.

    Returns each request's outputs; raises ServingError naming the record that failed.
    """
    import tensorflow as tf

    saved_model_dir = Path(saved_model_dir)
    logs = read_warmup_file(saved_model_dir)
    model = LocalSavedModelClient(saved_model_dir)
    results = []
    for index, log in enumerate(logs):
        request = log.predict_log.request
        signature_name = request.model_spec.signature_name or DEFAULT_SIGNATURE
        inputs = {name: tf.make_ndarray(proto) for name, proto in request.inputs.items()}
        try:
            results.append(model.predict(signature_name, inputs))
        except ServingError as error:
            raise ServingError(f"warmup record {index} ({signature_name!r}) failed: {error}",
                               server_message=error.server_message) from None
    return results


# Signatures that are the very same function as another in the export: warming the other warms
# them too, so they get no records of their own. (`search` is serving_default under its old name.)

CANDIDATES_PER_QUERY = 10  # `rank` warmup width (at most the sample's product ids)


def warmup_signatures() -> list[str]:
    """The contract's signatures that get warmup records, in contract order."""
    return [name for name in SIGNATURE_INPUTS if name not in SIGNATURE_ALIASES]


def search_warmup_requests(
    queries: Sequence[str],
    product_ids: Sequence[str],
    titles: Sequence[str],
    images: Sequence[bytes],
    batch_sizes: Sequence[int] = (1, 8),
    attributes: Sequence[Sequence[str]] | None = None,
    signature_inputs: Mapping[str, Sequence[str]] | None = None,
    embedding_dim: int | None = None,
) -> list[tuple[str, dict[str, np.ndarray]]]:
    """One request per contract signature (see `warmup_signatures`) and batch size, from sample rows.

    Inputs are filled by name from the samples (`query`, `product_ids` [B,N], `title`, `image`,
    `attributes` [B,C]: each title's item-feature strings in the export's column order, None
    for none (C = 0)), so a signature added to the contract gets warmup without a change here;
    one with an input of another name is refused, naming it, rather than shipped cold. Several
    batch sizes matter with --enable_batching: each padded batch shape is its own graph run.
    `signature_inputs` (signature -> input names) replaces the contract's, for an export written
    under an older contract (re-indexing keeps its signatures). `embedding_dim`: the width of
    the export's embeddings, for `embedding` inputs (a unit vector; nprobe 0 = the default).
    """
    if not queries or not product_ids or not titles or len(titles) != len(images):
        raise ValueError("need at least one query, product id, and title with its image (b'' for none)")
    if attributes is not None and len(attributes) != len(titles):
        raise ValueError("need one row of attributes per title")
    rows = [list(row) for row in attributes] if attributes is not None else [[] for _ in titles]
    inputs_of = dict(signature_inputs) if signature_inputs is not None else SIGNATURE_INPUTS

    def cycle(values: Sequence[Any], n: int) -> list[Any]:
        return [values[i % len(values)] for i in range(n)]

    def sample(signature_name: str, name: str, n: int) -> np.ndarray:
        if name == "query":
            return string_tensor(cycle(queries, n))
        if name == "product_ids":
            width = min(len(product_ids), CANDIDATES_PER_QUERY)
            return string_tensor(cycle(product_ids, n * width)).reshape(n, width)
        if name == "title":
            return string_tensor(cycle(titles, n))
        if name == "image":
            return string_tensor(cycle(images, n))
        if name == "filter":  # "" = no filter: every query parses its filter all the same
            return string_tensor([""] * n)
        if name == "attributes":
            chosen = cycle(rows, n)
            width = len(chosen[0])
            return string_tensor([value for row in chosen for value in row]).reshape(n, width)
        if name == "embedding" and embedding_dim:
            return np.full((n, embedding_dim), 1.0 / np.sqrt(embedding_dim), np.float32)
        if name == "nprobe":
            return np.zeros(n, np.int32)
        raise ValueError(f"no warmup sample for input {name!r} of signature {signature_name!r}; "
                         "teach search_warmup_requests (tfmmsearch/serving/warmup.py) to fill it")

    requests = []
    for n in batch_sizes:
        for signature_name in warmup_signatures():
            if signature_name not in inputs_of:
                continue
            inputs = {name: sample(signature_name, name, n) for name in inputs_of[signature_name]}
            requests.append((signature_name, inputs))
    return requests
