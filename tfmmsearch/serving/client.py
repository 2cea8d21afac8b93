"""One client API for the exported search model, whichever way it is reached.

`SearchClient` talks to TensorFlow Serving over REST (urllib, no extra dependency) or gRPC
(tensorflow-serving-api stubs); `LocalSavedModelClient` calls the same signatures on a SavedModel
loaded in this process. All of them return dicts of numpy arrays with the same dtypes (string
tensors as numpy `str` arrays), so a check written against one runs against the others, which is
how the tests prove the wire formats lossless.

The signatures and their outputs are the export contract (see tfmmsearch/exporting/):

- serving_default / search: query [B] -> product_ids [B,K], scores [B,K], modality_weights [B,K,M]
- retrieve: query [B] -> product_ids [B,K], scores [B,K]
- rank: query [B], product_ids [B,N] -> scores [B,N], known [B,N]
- embed_query: query [B] -> embedding [B,D]
- embed_item: title [B], image [B] (encoded JPEG/PNG bytes, b"" = none) -> embedding [B,D],
  modality_weights [B,M]

Failures raise `ServingError` carrying what the server answered (HTTP status and the body's
"error", or the gRPC code and details).
"""

from __future__ import annotations

import base64
import json
import math
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

DEFAULT_MODEL_NAME = "tfmmsearch"
DEFAULT_SIGNATURE = "serving_default"

# Output dtypes per signature of the export contract. REST answers carry no dtypes, so the
# client needs these to give back float32/bool/str arrays identical to the gRPC and local paths.
SIGNATURE_OUTPUTS: dict[str, dict[str, str]] = {
    "serving_default": {"product_ids": "string", "scores": "float32", "modality_weights": "float32"},
    "search": {"product_ids": "string", "scores": "float32", "modality_weights": "float32"},
    "retrieve": {"product_ids": "string", "scores": "float32"},
    "rank": {"scores": "float32", "known": "bool"},
    "embed_query": {"embedding": "float32"},
    "embed_item": {"embedding": "float32", "modality_weights": "float32"},
}

# String inputs that hold raw bytes: sent as {"b64": ...} over REST, as TF Serving requires.
BINARY_INPUTS = frozenset({"image"})

# TF Serving accepts messages up to 2 GiB; gRPC's 4 MiB default would reject a batch of photos.
_GRPC_OPTIONS = [("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)]


class ServingError(RuntimeError):
    """The server (or the local SavedModel) refused a request; the message says what it answered.

    `http_status` is set for REST, `grpc_code` (e.g. "INVALID_ARGUMENT") for gRPC, and
    `server_message` holds the server's own words ({"error": ...} body or gRPC details).
    """

    def __init__(
        self,
        message: str,
        *,
        http_status: int | None = None,
        grpc_code: str | None = None,
        server_message: str | None = None,
    ) -> None:
        super().__init__(message)
        self.http_status = http_status
        self.grpc_code = grpc_code
        self.server_message = server_message


# --------------------------------------------------------------------------- input checking


def _text_list(values: Any, what: str) -> list[str]:
    if isinstance(values, (str, bytes)):
        raise TypeError(f"{what}: expected a list of strings, got a single {type(values).__name__}")
    items = list(values)
    if not items:
        raise ValueError(f"{what}: the list is empty; send at least one")
    for i, item in enumerate(items):
        if not isinstance(item, str):
            raise TypeError(f"{what}[{i}]: expected str, got {type(item).__name__}")
    return items


def _bytes_list(values: Any, what: str) -> list[bytes]:
    if isinstance(values, (str, bytes)):
        raise TypeError(f"{what}: expected a list of bytes, got a single {type(values).__name__}")
    items = []
    for i, item in enumerate(values):
        if item is None:
            item = b""  # "" means "no image": the model masks that modality out
        if not isinstance(item, (bytes, bytearray, memoryview)):
            raise TypeError(f"{what}[{i}]: expected bytes (encoded JPEG/PNG) or None, "
                            f"got {type(item).__name__}")
        items.append(bytes(item))
    return items


def _string_tensor(values: Sequence[str] | Sequence[bytes]) -> np.ndarray:
    encoded = [v.encode("utf-8") if isinstance(v, str) else bytes(v) for v in values]
    array = np.empty(len(encoded), dtype=object)
    array[:] = encoded
    return array


def _product_id_matrix(product_ids: Any, batch_size: int) -> np.ndarray:
    if isinstance(product_ids, (str, bytes)):
        raise TypeError("product_ids: expected one list of candidate ids per query")
    rows = list(product_ids)
    if len(rows) != batch_size:
        raise ValueError(f"product_ids: {len(rows)} rows for {batch_size} queries; "
                         "send one list of candidate ids per query")
    width = None
    flat: list[bytes] = []
    for r, row in enumerate(rows):
        ids = _text_list(row, f"product_ids[{r}]")
        if width is None:
            width = len(ids)
        elif len(ids) != width:
            raise ValueError(f"product_ids[{r}]: {len(ids)} ids but row 0 has {width}; "
                             "every query must come with the same number of candidates")
        flat.extend(i.encode("utf-8") for i in ids)
    matrix = np.empty(len(flat), dtype=object)
    matrix[:] = flat
    return matrix.reshape(batch_size, width or 0)


# --------------------------------------------------------------------------- output normalising


def _decode_strings(array: Any) -> np.ndarray:
    """Bytes (gRPC, TF) or str (JSON) leaves -> a numpy str array of the same shape."""
    array = np.asarray(array, dtype=object)
    if array.size == 0:
        return array.astype(str)
    decode = np.vectorize(
        lambda v: v.decode("utf-8", "replace") if isinstance(v, (bytes, bytearray)) else str(v),
        otypes=[str],
    )
    return decode(array)


def normalize_outputs(signature_name: str, outputs: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Gives every transport's answer the same dtypes: the contract's where known."""
    spec = SIGNATURE_OUTPUTS.get(signature_name, {})
    result = {}
    for name, value in outputs.items():
        kind = spec.get(name)
        array = value if isinstance(value, np.ndarray) else np.asarray(value, dtype=object)
        if kind == "string" or (kind is None and array.dtype == object and _all_text(array)):
            result[name] = _decode_strings(array)
        elif kind == "float32":
            result[name] = np.asarray(array, dtype=np.float32)
        elif kind == "bool":
            result[name] = np.asarray(array, dtype=bool)
        else:
            result[name] = np.asarray(array.tolist() if array.dtype == object else array)
    return result


def _all_text(array: np.ndarray) -> bool:
    return all(isinstance(v, (str, bytes)) for v in array.reshape(-1))


# --------------------------------------------------------------------------- REST encoding


def _json_leaf(value: Any, binary: bool) -> Any:
    if isinstance(value, (bytes, bytearray, np.bytes_)):
        raw = bytes(value)
        if not binary:
            try:
                return raw.decode("utf-8")
            except UnicodeDecodeError:
                pass  # not text after all: base64 is the only lossless JSON form
        return {"b64": base64.b64encode(raw).decode("ascii")}
    if isinstance(value, (np.floating, float)):
        return _json_float(value)
    if isinstance(value, (np.bool_, bool)):
        return bool(value)
    if isinstance(value, (np.integer, int)):
        return int(value)
    if isinstance(value, str):
        return value
    raise TypeError(f"cannot send a {type(value).__name__} value over REST")


def _json_float(value: Any) -> float:
    # The shortest decimal that round-trips the float32 (what TF Serving writes), not the double's
    # noisy expansion: 0.1f is sent as 0.1 rather than 0.10000000149011612.
    if isinstance(value, np.float32) and math.isfinite(value):
        return float(str(value))
    return float(value)


def _json_nested(value: Any, binary: bool) -> Any:
    if not isinstance(value, np.ndarray):
        return _json_leaf(value, binary)  # numpy scalars keep their float32-ness for _json_float
    if value.ndim == 0:
        return _json_leaf(value[()], binary)
    return [_json_nested(value[i], binary) for i in range(value.shape[0])]


def rest_request_body(
    signature_name: str, inputs: Mapping[str, Any], request_format: str
) -> dict[str, Any]:
    """The JSON body TF Serving's :predict expects, in row ("instances") or columnar ("inputs") form."""
    body: dict[str, Any] = {"signature_name": signature_name}
    arrays = {name: np.asarray(value) for name, value in inputs.items()}
    binary = {name: name in BINARY_INPUTS or name.endswith("_bytes") for name in arrays}
    if request_format == "columnar":
        body["inputs"] = {name: _json_nested(a, binary[name]) for name, a in arrays.items()}
    elif request_format == "row":
        batch_sizes = {name: (a.shape[0] if a.ndim else None) for name, a in arrays.items()}
        if None in batch_sizes.values() or len(set(batch_sizes.values())) != 1:
            raise ValueError(f"row format needs one batch size for all inputs, got {batch_sizes}; "
                             "use request_format='columnar'")
        batch = next(iter(batch_sizes.values()))
        if len(arrays) == 1:
            (name, array), = arrays.items()
            body["instances"] = [_json_nested(array[i], binary[name]) for i in range(batch)]
        else:
            body["instances"] = [
                {name: _json_nested(a[i], binary[name]) for name, a in arrays.items()}
                for i in range(batch)
            ]
    else:
        raise ValueError(f"request_format must be 'row' or 'columnar', got {request_format!r}")
    return body


def _from_json_leaf(value: Any) -> Any:
    if isinstance(value, dict) and set(value) == {"b64"}:
        return base64.b64decode(value["b64"])
    return value


def _json_to_array(value: Any) -> np.ndarray:
    """Nested JSON lists -> numpy array; b64 objects -> bytes; strings stay object leaves."""
    def walk(v: Any) -> Any:
        if isinstance(v, list):
            return [walk(x) for x in v]
        return _from_json_leaf(v)

    converted = walk(value)
    if _contains_text(converted):
        shape = _nested_shape(converted)
        flat = np.empty(int(np.prod(shape)) if shape else 1, dtype=object)
        flat[:] = list(_flatten(converted)) if shape else [converted]
        return flat.reshape(shape)
    return np.asarray(converted)


def _contains_text(v: Any) -> bool:
    while isinstance(v, list):
        if not v:
            return False
        v = v[0]
    return isinstance(v, (str, bytes))


def _nested_shape(v: Any) -> tuple[int, ...]:
    shape = []
    while isinstance(v, list):
        shape.append(len(v))
        if not v:
            break
        v = v[0]
    return tuple(shape)


def _flatten(v: Any) -> Iterable[Any]:
    if isinstance(v, list):
        for x in v:
            yield from _flatten(x)
    else:
        yield v


def parse_rest_predict_response(signature_name: str, body: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Row ({"predictions": ...}) or columnar ({"outputs": ...}) answer -> dict of arrays.

    TF Serving omits the output name when a signature has one output; the contract supplies it.
    """
    spec = SIGNATURE_OUTPUTS.get(signature_name, {})
    only_name = next(iter(spec)) if len(spec) == 1 else "outputs"

    def is_named(v: Any) -> bool:
        return isinstance(v, dict) and set(v) != {"b64"}

    if "predictions" in body:
        rows = body["predictions"]
        if rows and all(is_named(r) for r in rows):
            outputs = {name: _json_to_array([r[name] for r in rows]) for name in rows[0]}
        else:
            outputs = {only_name: _json_to_array(rows)}
    elif "outputs" in body:
        value = body["outputs"]
        if is_named(value):
            outputs = {name: _json_to_array(v) for name, v in value.items()}
        else:
            outputs = {only_name: _json_to_array(value)}
    else:
        raise ServingError(f"answer has neither 'predictions' nor 'outputs': {str(body)[:200]}")
    return normalize_outputs(signature_name, outputs)


# --------------------------------------------------------------------------- gRPC encoding


def make_predict_request(
    model_name: str,
    signature_name: str,
    inputs: Mapping[str, Any],
    version: int | None = None,
):
    """A tensorflow_serving PredictRequest for `inputs` (numpy arrays or lists; str/bytes for strings)."""
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2

    request = predict_pb2.PredictRequest()
    request.model_spec.name = model_name
    request.model_spec.signature_name = signature_name
    if version is not None:
        request.model_spec.version.value = int(version)
    for name, value in inputs.items():
        array = np.asarray(value)
        if array.dtype.kind == "U":
            array = _string_tensor(array.reshape(-1).tolist()).reshape(array.shape)
        elif array.dtype == np.float64:
            array = array.astype(np.float32)  # the contract's float tensors are float32
        request.inputs[name].CopyFrom(tf.make_tensor_proto(array))
    return request


def outputs_from_tensor_protos(signature_name: str, tensors: Mapping[str, Any]) -> dict[str, np.ndarray]:
    import tensorflow as tf

    return normalize_outputs(signature_name, {name: tf.make_ndarray(proto) for name, proto in tensors.items()})


# --------------------------------------------------------------------------- shared methods


class _SearchSignatures:
    """search/retrieve/rank/embed_* on top of one `predict(signature, inputs)` per transport."""

    def predict(self, signature_name: str, inputs: Mapping[str, Any]) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def search(self, queries: Sequence[str]) -> dict[str, np.ndarray]:
        """Top-K products per raw query: product_ids [B,K], scores [B,K], modality_weights [B,K,M]."""
        queries = _text_list(queries, "queries")
        return self.predict(DEFAULT_SIGNATURE, {"query": _string_tensor(queries)})

    def retrieve(self, queries: Sequence[str]) -> dict[str, np.ndarray]:
        """Top-K candidates from the in-graph index without the ranking head: product_ids, scores."""
        queries = _text_list(queries, "queries")
        return self.predict("retrieve", {"query": _string_tensor(queries)})

    def rank(self, queries: Sequence[str], product_ids: Sequence[Sequence[str]]) -> dict[str, np.ndarray]:
        """Scores [B,N] for given candidates per query; `known` [B,N] is False for ids not in the index."""
        queries = _text_list(queries, "queries")
        matrix = _product_id_matrix(product_ids, len(queries))
        outputs = self.predict("rank", {"query": _string_tensor(queries), "product_ids": matrix})
        # With --enable_batching and pad_variable_length_inputs, TF Serving may pad this request's
        # candidates up to the widest request in the batch; only the first N columns are ours.
        width = matrix.shape[1]
        return {name: value[:, :width] if value.ndim >= 2 else value for name, value in outputs.items()}

    def embed_query(self, queries: Sequence[str]) -> dict[str, np.ndarray]:
        """Query-tower embeddings [B,D]."""
        queries = _text_list(queries, "queries")
        return self.predict("embed_query", {"query": _string_tensor(queries)})

    def embed_item(self, titles: Sequence[str], images: Sequence[bytes | None]) -> dict[str, np.ndarray]:
        """Item embeddings [B,D] and modality weights [B,M] from titles and encoded image bytes (b"" = none)."""
        titles = _text_list(titles, "titles")
        images = _bytes_list(images, "images")
        if len(images) != len(titles):
            raise ValueError(f"embed_item: {len(titles)} titles but {len(images)} images; "
                             "pass b'' (or None) for items without a photo")
        return self.predict("embed_item", {"title": _string_tensor(titles), "image": _string_tensor(images)})


# --------------------------------------------------------------------------- TF Serving client


class SearchClient(_SearchSignatures):
    """Client for a TensorFlow Serving model server (or the test fixture speaking its protocol).

    `url_or_target`: "http://host:8501" for REST, "host:8500" for gRPC. `request_format` picks the
    REST body layout: "row" ({"instances": [...]}) or "columnar" ({"inputs": {...}}); both give
    the same results. `version` pins a model version instead of the latest. `timeout` is seconds
    per call.
    """

    def __init__(
        self,
        url_or_target: str,
        model_name: str = DEFAULT_MODEL_NAME,
        transport: str = "rest",
        timeout: float = 10.0,
        version: int | None = None,
        request_format: str = "columnar",
    ) -> None:
        if transport not in ("rest", "grpc"):
            raise ValueError(f"transport must be 'rest' or 'grpc', got {transport!r}")
        if request_format not in ("row", "columnar"):
            raise ValueError(f"request_format must be 'row' or 'columnar', got {request_format!r}")
        if not timeout or timeout <= 0:
            raise ValueError(f"timeout must be positive seconds, got {timeout}")
        self.transport = transport
        self.model_name = model_name
        self.timeout = float(timeout)
        self.version = version
        self.request_format = request_format
        if transport == "rest":
            if "://" not in url_or_target:
                url_or_target = "http://" + url_or_target
            self.url: str | None = url_or_target.rstrip("/")
            self.target: str | None = None
        else:
            self.target = url_or_target.split("://", 1)[-1].rstrip("/")
            self.url = None
        self._channel = None
        self._prediction_stub = None
        self._model_stub = None

    # -- lifecycle

    def close(self) -> None:
        if self._channel is not None:
            self._channel.close()
            self._channel = None
            self._prediction_stub = self._model_stub = None

    def __enter__(self) -> "SearchClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        where = self.url if self.transport == "rest" else self.target
        return f"SearchClient({where!r}, model_name={self.model_name!r}, transport={self.transport!r})"

    # -- public calls

    def predict(self, signature_name: str, inputs: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """Runs any signature by name; inputs are numpy arrays (strings as bytes/str)."""
        if self.transport == "rest":
            body = rest_request_body(signature_name, inputs, self.request_format)
            answer = self._rest_call("POST", self._model_path() + ":predict", body)
            return parse_rest_predict_response(signature_name, answer)
        request = make_predict_request(self.model_name, signature_name, inputs, self.version)
        response = self._grpc_call("Predict", request)
        return outputs_from_tensor_protos(signature_name, response.outputs)

    def model_status(self) -> dict[str, Any]:
        """TF Serving's GetModelStatusResponse as JSON: {"model_version_status": [{version, state, status}]}."""
        if self.transport == "rest":
            return self._rest_call("GET", self._model_path())
        from google.protobuf import json_format
        from tensorflow_serving.apis import get_model_status_pb2

        request = get_model_status_pb2.GetModelStatusRequest()
        self._fill_model_spec(request.model_spec)
        response = self._grpc_call("GetModelStatus", request)
        return json_format.MessageToDict(response, always_print_fields_with_no_presence=True)

    def model_metadata(self) -> dict[str, Any]:
        """{"model_spec": ..., "metadata": {"signature_def": {"signature_def": {name: SignatureDef}}}}."""
        if self.transport == "rest":
            return self._rest_call("GET", self._model_path() + "/metadata")
        from google.protobuf import json_format
        from tensorflow_serving.apis import get_model_metadata_pb2

        request = get_model_metadata_pb2.GetModelMetadataRequest()
        self._fill_model_spec(request.model_spec)
        request.metadata_field.append("signature_def")
        response = self._grpc_call("GetModelMetadata", request)
        signature_map = get_model_metadata_pb2.SignatureDefMap()
        response.metadata["signature_def"].Unpack(signature_map)
        as_json = dict(always_print_fields_with_no_presence=True, preserving_proto_field_name=True)
        return {
            "model_spec": json_format.MessageToDict(response.model_spec, **as_json),
            "metadata": {"signature_def": json_format.MessageToDict(signature_map, **as_json)},
        }

    def signature_names(self) -> list[str]:
        signatures = self.model_metadata()["metadata"]["signature_def"]["signature_def"]
        return sorted(name for name in signatures if not name.startswith("__"))

    def wait_until_available(self, timeout: float = 60.0, poll_interval: float = 0.5) -> dict[str, Any]:
        """Polls model status until a version is AVAILABLE (a fresh server loads models lazily)."""
        deadline = time.monotonic() + timeout
        last_problem = "no answer yet"
        while True:
            try:
                status = self.model_status()
                states = [v.get("state") for v in status.get("model_version_status", [])]
                if "AVAILABLE" in states:
                    return status
                last_problem = f"model versions are {states}"
            except ServingError as error:
                last_problem = str(error)
            if time.monotonic() >= deadline:
                raise ServingError(f"model {self.model_name!r} not AVAILABLE after {timeout:g}s: {last_problem}")
            time.sleep(poll_interval)

    # -- transport internals

    def _model_path(self) -> str:
        path = f"/v1/models/{urllib.parse.quote(self.model_name, safe='')}"
        if self.version is not None:
            path += f"/versions/{int(self.version)}"
        return path

    def _fill_model_spec(self, spec: Any) -> None:
        spec.name = self.model_name
        if self.version is not None:
            spec.version.value = int(self.version)

    def _rest_call(self, method: str, path: str, body: Mapping[str, Any] | None = None) -> dict[str, Any]:
        url = self.url + path
        data = None if body is None else json.dumps(body).encode("utf-8")
        request = urllib.request.Request(url, data=data, method=method)
        if data is not None:
            request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                raw = response.read()
        except urllib.error.HTTPError as error:
            server_message = _error_text(error.read())
            raise ServingError(
                f"{method} {url} -> HTTP {error.code}: {server_message}",
                http_status=error.code,
                server_message=server_message,
            ) from None
        except (socket.timeout, TimeoutError) as error:
            raise ServingError(f"{method} {url}: no answer within {self.timeout:g}s ({error})") from None
        except urllib.error.URLError as error:
            if isinstance(error.reason, (socket.timeout, TimeoutError)):
                raise ServingError(f"{method} {url}: no answer within {self.timeout:g}s") from None
            raise ServingError(f"{method} {url}: cannot reach the model server ({error.reason})") from None
        except (ConnectionError, OSError) as error:
            raise ServingError(f"{method} {url}: connection failed ({error})") from None
        try:
            # TF Serving writes NaN/Infinity tokens; Python's json reads them.
            return json.loads(raw)
        except ValueError as error:
            raise ServingError(f"{method} {url}: answer is not JSON ({error}): {raw[:200]!r}") from None

    def _grpc_call(self, method: str, request: Any) -> Any:
        import grpc

        if self._channel is None:
            from tensorflow_serving.apis import model_service_pb2_grpc, prediction_service_pb2_grpc

            self._channel = grpc.insecure_channel(self.target, options=_GRPC_OPTIONS)
            self._prediction_stub = prediction_service_pb2_grpc.PredictionServiceStub(self._channel)
            self._model_stub = model_service_pb2_grpc.ModelServiceStub(self._channel)
        stub = self._model_stub if method == "GetModelStatus" else self._prediction_stub
        try:
            return getattr(stub, method)(request, timeout=self.timeout)
        except grpc.RpcError as error:
            code = error.code().name if error.code() is not None else "UNKNOWN"
            details = error.details() or ""
            raise ServingError(
                f"gRPC {method} on {self.target} -> {code}: {details}",
                grpc_code=code,
                server_message=details,
            ) from None


def _error_text(raw: bytes) -> str:
    text = raw.decode("utf-8", "replace")
    try:
        answer = json.loads(text)
    except ValueError:
        return text.strip()[:500] or "(empty body)"
    if isinstance(answer, dict) and "error" in answer:
        return str(answer["error"])
    return text.strip()[:500]


# --------------------------------------------------------------------------- in-process client


def saved_model_versions(base_path: str | Path) -> dict[int, Path]:
    """Integer version folders holding a SavedModel under a TF Serving base path."""
    base = Path(base_path)
    if not base.is_dir():
        return {}
    return {
        int(child.name): child
        for child in base.iterdir()
        if child.is_dir() and child.name.isdigit() and _is_saved_model(child)
    }


def _is_saved_model(path: Path) -> bool:
    return (path / "saved_model.pb").is_file() or (path / "saved_model.pbtxt").is_file()


def resolve_saved_model_dir(path: str | Path) -> Path:
    """`path` itself if it is a SavedModel, else the highest integer version under it (TF Serving layout)."""
    path = Path(path)
    if _is_saved_model(path):
        return path
    versions = saved_model_versions(path)
    if not versions:
        if not path.is_dir():
            raise FileNotFoundError(f"{path}: no such directory")
        found = sorted(child.name for child in path.iterdir())[:10]
        raise FileNotFoundError(
            f"{path}: neither a SavedModel (no saved_model.pb) nor a TF Serving base path with integer "
            f"version folders holding one (found: {found or 'nothing'})"
        )
    return versions[max(versions)]


class LocalSavedModelClient(_SearchSignatures):
    """The same methods as `SearchClient`, calling the SavedModel's signatures in this process.

    Accepts a SavedModel directory or a TF Serving base path export/<name> (latest version wins).
    """

    def __init__(self, path: str | Path) -> None:
        import tensorflow as tf

        try:
            import tensorflow_text  # noqa: F401  (registers the TF Text ops the tokenizer uses)
        except ImportError:  # pragma: no cover - pinned in setup.py; a bare-TF model still loads
            pass
        self.path = resolve_saved_model_dir(path)
        self._tf = tf
        self._loaded = tf.saved_model.load(str(self.path))

    def __repr__(self) -> str:
        return f"LocalSavedModelClient({str(self.path)!r})"

    def signature_names(self) -> list[str]:
        return sorted(self._loaded.signatures.keys())

    def predict(self, signature_name: str, inputs: Mapping[str, Any]) -> dict[str, np.ndarray]:
        tf = self._tf
        if signature_name not in self._loaded.signatures:
            message = f"no signature {signature_name!r}; it has {self.signature_names()}"
            raise ServingError(f"{self.path}: {message}", server_message=message)
        function = self._loaded.signatures[signature_name]
        try:
            tensors = {name: tf.constant(np.asarray(value)) for name, value in inputs.items()}
            outputs = function(**tensors)
        except (tf.errors.OpError, TypeError, ValueError) as error:
            message = getattr(error, "message", None) or str(error)
            raise ServingError(f"{self.path} signature {signature_name!r}: {message}",
                               server_message=message) from None
        return normalize_outputs(signature_name, {name: t.numpy() for name, t in outputs.items()})
