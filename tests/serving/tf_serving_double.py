"""TEST DOUBLE standing in for `tensorflow_model_server`; not shipped, not a production server.

No TensorFlow Serving binary can be installed on the development machines (no Docker engine, no
package carries it), yet the clients and the export must be proved against TF Serving's
protocol. This module answers that protocol over a SavedModel loaded in this Python process:

- gRPC: `tensorflow.serving.PredictionService` Predict and GetModelMetadata, and
  `tensorflow.serving.ModelService` GetModelStatus, with the tensorflow-serving-api protos.
- REST: POST /v1/models/<name>[/versions/<v>]:predict in row ("instances") and columnar
  ("inputs") form with {"b64": ...} bytes, GET /v1/models/<name>[/versions/<v>] (status) and
  .../metadata, errors as {"error": "..."} with TF Serving's HTTP status for each error code.

Request parsing and answer layout follow tensorflow_serving/util/json_tensor.cc and
model_servers/http_rest_api_handler.cc; error codes follow predict_util.cc. It is stricter in one
place: an input whose rank or sizes contradict the signature is refused with INVALID_ARGUMENT
before the model runs. It does no batching, labels, classify/regress or model config reloads, and
binds only 127.0.0.1. Versions are found with the contract's resolver (`list_versions`), as the
clients find them. Use the real server (serving/README.md) for anything beyond tests and demos.

Run by hand, from the repository root:
    python -m tests.serving.tf_serving_double export/tfmmsearch --port 8500 --rest_api_port 8501
"""

from __future__ import annotations

import argparse
import base64
import json
import math
import re
import signal
import threading
import urllib.parse
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable

import numpy as np

from tfmmsearch.contract import DEFAULT_SIGNATURE, list_versions
from tfmmsearch.serving.client import DEFAULT_MODEL_NAME
from tfmmsearch.serving.grpc_client import GRPC_MESSAGE_OPTIONS

LOCALHOST = "127.0.0.1"

# HTTP status TF Serving's REST server sends for each canonical error code (http_server.cc).
HTTP_STATUS_FOR_CODE = {
    "OK": 200, "CANCELLED": 499, "UNKNOWN": 500, "INVALID_ARGUMENT": 400,
    "DEADLINE_EXCEEDED": 504, "NOT_FOUND": 404, "ALREADY_EXISTS": 409, "PERMISSION_DENIED": 403,
    "RESOURCE_EXHAUSTED": 429, "FAILED_PRECONDITION": 400, "ABORTED": 409, "OUT_OF_RANGE": 400,
    "UNIMPLEMENTED": 501, "INTERNAL": 500, "UNAVAILABLE": 503, "DATA_LOSS": 500,
    "UNAUTHENTICATED": 401,
}

class ServingStatus(Exception):
    """A non-OK answer: canonical code name (e.g. "INVALID_ARGUMENT") and message, as TF Serving's Status."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message

    @property
    def http_status(self) -> int:
        return HTTP_STATUS_FOR_CODE.get(self.code, 500)


def _invalid(message: str) -> ServingStatus:
    return ServingStatus("INVALID_ARGUMENT", message)


# --------------------------------------------------------------------------- the loaded model


def _read_signature_defs(saved_model_dir: Path) -> dict[str, Any]:
    """SignatureDefs of the "serve" MetaGraph, straight from saved_model.pb (what TF Serving reports)."""
    from google.protobuf import text_format
    from tensorflow.core.protobuf import saved_model_pb2

    saved_model = saved_model_pb2.SavedModel()
    binary = saved_model_dir / "saved_model.pb"
    if binary.is_file():
        saved_model.ParseFromString(binary.read_bytes())
    else:
        text_format.Parse((saved_model_dir / "saved_model.pbtxt").read_text(), saved_model)
    for meta_graph in saved_model.meta_graphs:
        if "serve" in meta_graph.meta_info_def.tags:
            return dict(meta_graph.signature_def)
    raise ValueError(f"{saved_model_dir}: no MetaGraph tagged 'serve' (TF Serving loads only that one)")


class _LoadedVersion:
    def __init__(self, version: int, path: Path) -> None:
        import tensorflow as tf

        try:
            import tensorflow_text  # noqa: F401  (TF Text ops, bundled in TF Serving images too)
        except ImportError:  # pragma: no cover
            pass
        self.version = version
        self.path = path
        self.signature_defs = _read_signature_defs(path)
        self.loaded = tf.saved_model.load(str(path))


class ModelRegistry:
    """One model name, its newest `num_versions` versions, and the three RPCs on them.

    Transport-free (protos in, protos out), so the gRPC and REST fronts share every rule.
    """

    def __init__(self, model_base_path: str | Path, model_name: str = DEFAULT_MODEL_NAME,
                 num_versions: int = 1) -> None:
        import tensorflow as tf

        self._tf = tf
        self.model_name = model_name
        self.base_path = Path(model_base_path)
        versions = list_versions(self.base_path)
        if not versions:
            raise FileNotFoundError(
                f"{self.base_path}: no version folders (e.g. {self.base_path}/1/saved_model.pb); "
                "TF Serving's model base path holds one integer-named SavedModel folder per version"
            )
        newest = sorted(versions, reverse=True)[: max(1, num_versions)]
        self.versions = {v: _LoadedVersion(v, versions[v]) for v in newest}

    # -- model lookup, with TF Serving's NOT_FOUND wording

    def resolve(self, model_spec: Any) -> _LoadedVersion:
        name = model_spec.name
        has_version = model_spec.HasField("version")
        if model_spec.version_label:
            raise _invalid(f"Unrecognized servable version label: {model_spec.version_label} "
                           "(the test double serves no labels)")
        wanted = f"Specific({name}, {model_spec.version.value})" if has_version else f"Latest({name})"
        if name != self.model_name:
            raise ServingStatus("NOT_FOUND", f"Servable not found for request: {wanted}")
        if not has_version:
            return self.versions[max(self.versions)]
        found = self.versions.get(model_spec.version.value)
        if found is None:
            raise ServingStatus("NOT_FOUND", f"Servable not found for request: {wanted}")
        return found

    # -- Predict

    def predict(self, request: Any) -> Any:
        from tensorflow_serving.apis import predict_pb2

        tf = self._tf
        servable = self.resolve(request.model_spec)
        signature_name = request.model_spec.signature_name or DEFAULT_SIGNATURE
        signature = servable.signature_defs.get(signature_name)
        function = servable.loaded.signatures.get(signature_name) if signature is not None else None
        if signature is None or function is None:
            raise ServingStatus("FAILED_PRECONDITION", f'Serving signature key "{signature_name}" not found.')

        expected, sent = set(signature.inputs), set(request.inputs)
        if expected != sent:
            raise _invalid(
                f"input size does not match signature: {len(sent)}!={len(expected)} "
                f"len({{{','.join(sorted(sent))}}}) != len({{{','.join(sorted(expected))}}}). "
                f"Sent extra: {{{','.join(sorted(sent - expected))}}}. "
                f"Missing but required: {{{','.join(sorted(expected - sent))}}}."
            )
        feeds = {}
        for alias, proto in request.inputs.items():
            info = signature.inputs[alias]
            if proto.dtype != info.dtype:
                raise _invalid(f"Expects arg[{alias}] to be {_readable(_dtype_name(info.dtype))} "
                               f"but {_readable(_dtype_name(proto.dtype))} is provided")
            try:
                array = tf.make_ndarray(proto)
            except Exception:  # noqa: BLE001 - any malformed proto is the client's fault
                raise _invalid(f"tensor parsing error: {alias}") from None
            _check_shape(alias, array.shape, info.tensor_shape, signature_name)
            feeds[alias] = tf.constant(array, dtype=tf.as_dtype(info.dtype))

        wanted = list(request.output_filter) or list(signature.outputs)
        for alias in wanted:
            if alias not in signature.outputs:
                raise _invalid(f"output tensor alias not found in signature: {alias} Outputs expected "
                               f"to be in the set {{{','.join(sorted(signature.outputs))}}}.")
        if len(set(wanted)) != len(wanted):
            raise _invalid(f"duplicate output tensor alias in output_filter: {wanted}")

        try:
            results = function(**feeds)
        except tf.errors.OpError as error:
            raise ServingStatus(_code_name(error.error_code), error.message) from None
        except (TypeError, ValueError) as error:
            raise _invalid(str(error)) from None

        response = predict_pb2.PredictResponse()
        response.model_spec.name = self.model_name
        response.model_spec.version.value = servable.version
        response.model_spec.signature_name = signature_name
        for alias in wanted:
            response.outputs[alias].CopyFrom(tf.make_tensor_proto(results[alias].numpy()))
        return response

    # -- GetModelStatus / GetModelMetadata

    def model_status(self, request: Any) -> Any:
        from tensorflow_serving.apis import get_model_status_pb2

        spec = request.model_spec
        if spec.name != self.model_name:
            raise ServingStatus("NOT_FOUND", f"Could not find any versions of model {spec.name}")
        if spec.HasField("version"):
            if spec.version.value not in self.versions:
                raise ServingStatus("NOT_FOUND",
                                    f"Could not find version {spec.version.value} of model {spec.name}")
            listed = [spec.version.value]
        else:
            listed = sorted(self.versions, reverse=True)
        response = get_model_status_pb2.GetModelStatusResponse()
        for version in listed:
            entry = response.model_version_status.add()
            entry.version = version
            entry.state = get_model_status_pb2.ModelVersionStatus.AVAILABLE
            entry.status.SetInParent()  # error_code OK, error_message "" (printed, as TF Serving does)
        return response

    def model_metadata(self, request: Any) -> Any:
        from tensorflow_serving.apis import get_model_metadata_pb2

        if not request.metadata_field:
            raise _invalid("GetModelMetadataRequest must specify at least one metadata_field")
        for field in request.metadata_field:
            if field != "signature_def":
                raise _invalid(f"Metadata field {field} is not supported")
        servable = self.resolve(request.model_spec)
        response = get_model_metadata_pb2.GetModelMetadataResponse()
        response.model_spec.name = self.model_name
        response.model_spec.version.value = servable.version
        signature_map = get_model_metadata_pb2.SignatureDefMap()
        for name, signature in servable.signature_defs.items():
            signature_map.signature_def[name].CopyFrom(signature)
        response.metadata["signature_def"].Pack(signature_map)
        return response

    def input_infos(self, model_spec: Any, signature_name: str) -> dict[str, Any]:
        """Input TensorInfos of a signature, for typing REST JSON (HttpRestApiHandler::GetInfoMap)."""
        servable = self.resolve(model_spec)
        name = signature_name or DEFAULT_SIGNATURE
        signature = servable.signature_defs.get(name)
        if signature is None:
            raise _invalid(f'Serving signature name: "{name}" not found in signature def')
        return dict(signature.inputs)


def _dtype_name(dtype_enum: int) -> str:
    from tensorflow.core.framework import types_pb2

    try:
        return types_pb2.DataType.Name(dtype_enum)
    except ValueError:
        return f"dtype {dtype_enum}"


def _readable(dtype_name: str) -> str:
    """DT_STRING -> "string", DT_FLOAT -> "float": TF's DataTypeString, as TF Serving's messages use."""
    return dtype_name[3:].lower() if dtype_name.startswith("DT_") else dtype_name


def _code_name(number: int) -> str:
    import grpc

    for code in grpc.StatusCode:
        if code.value[0] == number:
            return code.name
    return "UNKNOWN"


def _check_shape(alias: str, shape: tuple[int, ...], expected: Any, signature_name: str) -> None:
    if expected.unknown_rank:
        return
    dims = [d.size for d in expected.dim]
    if len(dims) != len(shape) or any(d not in (-1, s) for d, s in zip(dims, shape)):
        raise _invalid(
            f"input '{alias}' of signature '{signature_name}' has shape {list(shape)} but the "
            f"signature expects {dims} (-1: any size)"
        )


# --------------------------------------------------------------------------- REST JSON <-> tensors

_JSON_TYPE_NAMES = ((type(None), "Null"), (bool, "Boolean"), (dict, "Object"), (list, "Array"),
                    (str, "String"), (int, "Number"), (float, "Number"))


def _json_type(value: Any) -> str:
    if value is True:
        return "True"
    if value is False:
        return "False"
    return next((name for kind, name in _JSON_TYPE_NAMES if isinstance(value, kind)), "Unknown")


def _json_text(value: Any) -> str:
    return json.dumps(value)[:200]


def _is_b64_object(value: Any) -> bool:
    return isinstance(value, dict) and len(value) == 1 and isinstance(value.get("b64"), str)


def _decode_b64(value: Any) -> bytes:
    if not _is_b64_object(value):
        raise _invalid(f"JSON Value: {_json_text(value)} not formatted correctly for base64 data")
    try:
        return base64.b64decode(value["b64"], validate=True)
    except (ValueError, TypeError):
        raise _invalid("Unable to base64 decode") from None


_INT_RANGES = {"DT_INT8": 32, "DT_INT16": 32, "DT_INT32": 32, "DT_UINT8": 32, "DT_INT64": 64}


def _json_leaf_value(value: Any, dtype: str) -> Any:
    """One JSON scalar as a value of `dtype`, with the checks json_tensor.cc's AddValueToTensor makes."""
    def type_error() -> ServingStatus:
        return _invalid(f"JSON Value: {_json_text(value)} Type: {_json_type(value)} "
                        f"is not of expected type: {_readable(dtype)}")

    is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if dtype == "DT_STRING":
        if isinstance(value, dict):
            return _decode_b64(value)
        if not isinstance(value, str):
            raise type_error()
        return value.encode("utf-8")
    if dtype in ("DT_FLOAT", "DT_DOUBLE"):
        if not is_number:
            raise type_error()
        mantissa_bits, limit = (24, float(np.finfo(np.float32).max)) if dtype == "DT_FLOAT" \
            else (53, float(np.finfo(np.float64).max))
        lossy = (abs(value) > 2 ** mantissa_bits - 1) if isinstance(value, int) \
            else (math.isfinite(value) and abs(value) > limit)
        if lossy:
            target = "float" if dtype == "DT_FLOAT" else "double"
            raise _invalid(f"Cannot convert JSON value: {_json_text(value)} to {target} "
                           "without loss of precision.")
        return float(value)
    if dtype in _INT_RANGES:
        bits = _INT_RANGES[dtype]
        if not isinstance(value, int) or isinstance(value, bool) or not -2 ** (bits - 1) <= value < 2 ** (bits - 1):
            raise type_error()
        return value
    if dtype == "DT_BOOL":
        if not isinstance(value, bool):
            raise type_error()
        return value
    raise ServingStatus("UNIMPLEMENTED", f"Conversion of JSON Value: {_json_text(value)} to type: {_readable(dtype)}")


def _json_shape(value: Any) -> list[int]:
    shape = []
    while isinstance(value, list):
        shape.append(len(value))
        if not value:
            break
        value = value[0]
    return shape


def _json_to_array(value: Any, dtype_enum: int) -> np.ndarray:
    """A (nested) JSON value as a dense array; ragged or too-deep lists are refused, as TF Serving does."""
    import tensorflow as tf

    dtype = _dtype_name(dtype_enum)
    shape = _json_shape(value)
    rank = len(shape)
    leaves: list[Any] = []

    def fill(node: Any, level: int) -> None:
        if not isinstance(node, list):
            if level != rank:
                raise _invalid(f"JSON Value: {_json_text(node)} found at incorrect level: {level + 1} "
                               f"in the JSON DOM. Expected at level: {rank}")
            if isinstance(node, dict) and dtype != "DT_STRING":
                raise _invalid(f"JSON Value: {_json_text(node)} Type: Object "
                               f"is not of expected type: {_readable(dtype)}")
            leaves.append(_json_leaf_value(node, dtype))
            return
        if level >= rank:
            raise _invalid(f"Encountered list at unexpected level: {level} expected < {rank}")
        if len(node) != shape[level]:
            raise _invalid(f"Encountered list at unexpected size: {len(node)} at level: {level} "
                           f"expected size: {shape[level]}")
        for child in node:
            fill(child, level + 1)

    fill(value, 0)
    if dtype == "DT_STRING":
        array = np.empty(len(leaves), dtype=object)
        array[:] = leaves
    else:
        array = np.asarray(leaves, dtype=tf.as_dtype(dtype_enum).as_numpy_dtype)
    return array.reshape(shape)


def predict_request_from_json(body: bytes, model_spec: Any,
                              input_infos_for: Callable[[str], dict[str, Any]]) -> tuple[Any, str]:
    """REST :predict body -> (PredictRequest, "row" | "columnar"), per FillPredictRequestFromJson."""
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2

    if not body.strip():
        raise _invalid("JSON Parse error: The document is empty")
    try:
        document = json.loads(body)
    except ValueError as error:
        raise _invalid(f"JSON Parse error: {error}") from None
    if not isinstance(document, dict):
        raise _invalid(f"JSON Value: {_json_text(document)} Is not object")

    request = predict_pb2.PredictRequest()
    request.model_spec.CopyFrom(model_spec)
    signature_name = document.get("signature_name", "")
    if not isinstance(signature_name, str):
        raise _invalid(f"JSON Value: {_json_text(document)} not formatted correctly. "
                       "'signature_name' key must be a string value.")
    request.model_spec.signature_name = signature_name
    infos = input_infos_for(signature_name)
    if not infos:
        raise _invalid(f"Failed to get input map for signature: {signature_name or 'DEFAULT'}")

    if "instances" in document and "inputs" in document:
        raise _invalid("JSON Value: request Not formatted correctly expecting only one of "
                       "'inputs' or 'instances' keys to exist ")
    if "instances" in document:
        arrays = _arrays_from_instances(document["instances"], infos)
        request_format = "row"
    elif "inputs" in document:
        arrays = _arrays_from_inputs(document["inputs"], infos)
        request_format = "columnar"
    else:
        raise _invalid("Missing 'inputs' or 'instances' key")
    for name, array in arrays.items():
        request.inputs[name].CopyFrom(tf.make_tensor_proto(array, dtype=tf.as_dtype(infos[name].dtype)))
    return request, request_format


def _arrays_from_instances(instances: Any, infos: dict[str, Any]) -> dict[str, np.ndarray]:
    if not isinstance(instances, list):
        raise _invalid("JSON Value: request Excepting 'instances' to be an list/array")
    if not instances:
        raise _invalid("JSON Value: request No values in 'instances' array")

    def is_named(value: Any) -> bool:
        return isinstance(value, dict) and not _is_b64_object(value)

    if not is_named(instances[0]) and len(infos) > 1:
        raise _invalid("instances is a plain list, but expecting list of objects as multiple input "
                       "tensors required as per tensorinfo_map")
    named = is_named(instances[0])
    per_input: dict[str, list[np.ndarray]] = {name: [] for name in infos}
    for index, item in enumerate(instances):
        if named != is_named(item):
            raise _invalid(f"Expecting {'object' if named else 'value/list'} but got "
                           f"{'list' if named else 'object'} at item {index} of input list")
        pairs = item.items() if named else [(next(iter(infos)), item)]
        keys = set()
        for name, value in pairs:
            keys.add(name)
            if name not in infos:
                raise _invalid(f"Failed to process element: {index} key: {name} of 'instances' list. "
                               f"Error: JSON object: does not have named input: {name}")
            try:
                array = _json_to_array(value, infos[name].dtype)
            except ServingStatus as error:
                raise _invalid(f"Failed to process element: {index} key: {name} of 'instances' list. "
                               f"Error: {error.code}: {error.message}") from None
            if per_input[name] and per_input[name][0].shape != array.shape:
                raise _invalid(f"Failed to process element: {index} key: {name} of 'instances' list. "
                               f"Error: Expecting shape {list(per_input[name][0].shape)} "
                               f"but got: {list(array.shape)}")
            per_input[name].append(array)
        if keys != set(infos):
            raise _invalid(f"Failed to process element: {index} of 'instances' list. JSON object: "
                           f"{_json_text(item)} must only have keys: {','.join(sorted(infos))}")
    return {name: np.stack(rows) for name, rows in per_input.items()}


def _arrays_from_inputs(inputs: Any, infos: dict[str, Any]) -> dict[str, np.ndarray]:
    if not isinstance(inputs, dict) or _is_b64_object(inputs):
        if len(infos) > 1:
            raise _invalid("inputs is a plain value/list, but expecting an object as multiple input "
                           "tensors required as per tensorinfo_map")
        name = next(iter(infos))
        return {name: _json_to_array(inputs, infos[name].dtype)}
    arrays = {}
    for name, info in infos.items():
        if name not in inputs:
            raise _invalid(f"Missing named input: {name} in 'inputs' object.")
        arrays[name] = _json_to_array(inputs[name], info.dtype)
    return arrays


def _json_output_leaf(value: Any, as_bytes: bool) -> Any:
    if isinstance(value, bytes):
        if as_bytes:
            return {"b64": base64.b64encode(value).decode("ascii")}
        return value.decode("utf-8", "replace")
    if isinstance(value, np.floating):
        # The shortest decimal that round-trips the value's own precision, like TF Serving's
        # WriteDecimal (0.1f -> 0.1, not 0.10000000149011612).
        return float(str(value)) if np.isfinite(value) else float(value)
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    return value


def _json_output(value: Any, as_bytes: bool) -> Any:
    if not isinstance(value, np.ndarray):
        return _json_output_leaf(value, as_bytes)  # an element of an object (string) array
    if value.ndim == 0:
        return _json_output_leaf(value[()], as_bytes)
    return [_json_output(value[i], as_bytes) for i in range(value.shape[0])]


def predict_response_to_json(outputs: dict[str, np.ndarray], request_format: str) -> str:
    """Row -> {"predictions": ...} (list of per-row objects for several outputs); columnar -> {"outputs": ...}.

    String outputs named *_bytes are written as {"b64": ...}; others as JSON strings.
    """
    if not outputs:
        raise _invalid("Cannot convert empty tensor map to JSON")
    as_bytes = {name: array.dtype == object and name.endswith("_bytes") for name, array in outputs.items()}
    several = len(outputs) > 1
    if request_format == "row":
        batch = None
        for name, array in outputs.items():
            if array.ndim == 0:
                raise _invalid(f"Tensor name: {name} has no shape information ")
            if array.shape[0] < 1:
                raise _invalid(f"Tensor name: {name} has invalid batch size: {array.shape[0]}")
            if batch is not None and array.shape[0] != batch:
                raise _invalid(f"Tensor name: {name} has inconsistent batch size: {array.shape[0]} "
                               f"expecting: {batch}")
            batch = array.shape[0]
        rows = []
        for i in range(batch or 0):
            if several:
                rows.append({name: _json_output(a[i], as_bytes[name]) for name, a in outputs.items()})
            else:
                (name, array), = outputs.items()
                rows.append(_json_output(array[i], as_bytes[name]))
        answer: dict[str, Any] = {"predictions": rows}
    else:
        if several:
            answer = {"outputs": {name: _json_output(a, as_bytes[name]) for name, a in outputs.items()}}
        else:
            (name, array), = outputs.items()
            answer = {"outputs": _json_output(array, as_bytes[name])}
    return json.dumps(answer, allow_nan=True)  # NaN/Infinity tokens, as TF Serving writes them


# --------------------------------------------------------------------------- REST front

_PREDICT_PATH = re.compile(
    r"/v1/models/([^/:]+)(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?:(classify|regress|predict)",
    re.IGNORECASE)
_STATUS_PATH = re.compile(
    r"/v1/models(?:/([^/:]+))?(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?(?:/(metadata))?",
    re.IGNORECASE)


class RestApi:
    """TF Serving's REST routes over a ModelRegistry, as plain (method, path, body) -> (status, json)."""

    def __init__(self, registry: ModelRegistry) -> None:
        self.registry = registry

    def handle(self, method: str, path: str, body: bytes) -> tuple[int, str]:
        try:
            return 200, self._dispatch(method, path, body)
        except ServingStatus as status:
            return status.http_status, json.dumps({"error": status.message})
        except Exception as error:  # noqa: BLE001 - a test double must answer, never die on input
            return 500, json.dumps({"error": f"internal error in the test double: {type(error).__name__}: {error}"})

    def _dispatch(self, method: str, path: str, body: bytes) -> str:
        from google.protobuf import json_format
        from tensorflow_serving.apis import (get_model_metadata_pb2, get_model_status_pb2, model_pb2,
                                             predict_pb2)

        path = urllib.parse.urlsplit(path).path
        predict_match = _PREDICT_PATH.fullmatch(path) if method == "POST" else None
        status_match = _STATUS_PATH.fullmatch(path) if method == "GET" else None
        if predict_match is None and status_match is None:
            # TF Serving hands every /v1/ path to its REST handler (400 when nothing matches there);
            # other paths never reach it (404).
            if path.lower().startswith("/v1/"):
                raise _invalid(f"Malformed request: {method} {path}")
            raise ServingStatus("NOT_FOUND", f"No TF Serving REST endpoint at {path}")
        match = predict_match or status_match
        name, version, label = match.group(1), match.group(2), match.group(3)
        spec = model_pb2.ModelSpec()
        if name:
            spec.name = urllib.parse.unquote(name)
        if version is not None:
            spec.version.value = int(version)
        if label is not None:
            spec.version_label = urllib.parse.unquote(label)

        as_json = dict(always_print_fields_with_no_presence=True)
        if predict_match is not None:
            verb = match.group(4).lower()
            if verb != "predict":
                raise ServingStatus("UNIMPLEMENTED", f"the test double serves :predict only, not :{verb}")
            request, request_format = predict_request_from_json(
                body, spec, lambda signature: self.registry.input_infos(spec, signature))
            response = self.registry.predict(request)
            import tensorflow as tf

            outputs = {alias: tf.make_ndarray(proto) for alias, proto in response.outputs.items()}
            return predict_response_to_json(outputs, request_format)
        if not name:
            raise _invalid("Missing model name in request.")
        if match.group(4):
            metadata_request = get_model_metadata_pb2.GetModelMetadataRequest(
                model_spec=spec, metadata_field=["signature_def"])
            response = self.registry.model_metadata(metadata_request)
            signature_map = get_model_metadata_pb2.SignatureDefMap()
            response.metadata["signature_def"].Unpack(signature_map)
            named = dict(as_json, preserving_proto_field_name=True)
            return json.dumps({
                "model_spec": json_format.MessageToDict(response.model_spec, **named),
                "metadata": {"signature_def": json_format.MessageToDict(signature_map, **named)},
            })
        status_request = get_model_status_pb2.GetModelStatusRequest(model_spec=spec)
        return json.dumps(json_format.MessageToDict(self.registry.model_status(status_request), **as_json))


def _rest_handler_class(api: RestApi) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "tfmmsearch-tf-serving-double"

        def _answer(self) -> None:
            try:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length > 0 else b""
                status, text = api.handle(self.command, self.path, body)
            except Exception as error:  # noqa: BLE001
                status, text = 400, json.dumps({"error": f"unreadable request: {error}"})
            payload = text.encode("utf-8")
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _answer

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - keep test output quiet
            pass

    return Handler


# --------------------------------------------------------------------------- gRPC front


def _grpc_servicers(registry: ModelRegistry) -> tuple[Any, Any]:
    import grpc
    from tensorflow_serving.apis import model_service_pb2_grpc, prediction_service_pb2_grpc

    def answer(context: Any, method: Callable[[Any], Any], request: Any) -> Any:
        try:
            return method(request)
        except ServingStatus as error:
            status = error
        except Exception as error:  # noqa: BLE001
            status = ServingStatus("INTERNAL", f"internal error in the test double: {type(error).__name__}: {error}")
        context.abort(getattr(grpc.StatusCode, status.code), status.message)

    class PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
        def Predict(self, request: Any, context: Any) -> Any:  # noqa: N802 - gRPC method names
            return answer(context, registry.predict, request)

        def GetModelMetadata(self, request: Any, context: Any) -> Any:  # noqa: N802
            return answer(context, registry.model_metadata, request)

    class ModelService(model_service_pb2_grpc.ModelServiceServicer):
        def GetModelStatus(self, request: Any, context: Any) -> Any:  # noqa: N802
            return answer(context, registry.model_status, request)

    return PredictionService(), ModelService()


# --------------------------------------------------------------------------- the double


class InProcessModelServer:
    """TEST DOUBLE: gRPC + REST endpoints speaking TF Serving's protocol, on 127.0.0.1 only.

    Ports default to free ones chosen by the OS; read `grpc_target` and `rest_url` after start().
    Use as a context manager so both servers are shut down even when a test fails.
    """

    def __init__(self, model_base_path: str | Path, model_name: str = DEFAULT_MODEL_NAME, *,
                 num_versions: int = 1, grpc_port: int = 0, rest_port: int = 0) -> None:
        self.model_base_path = Path(model_base_path)
        self.model_name = model_name
        self.num_versions = num_versions
        self._grpc_port_wanted = grpc_port
        self._rest_port_wanted = rest_port
        self.registry: ModelRegistry | None = None
        self.grpc_port: int | None = None
        self.rest_port: int | None = None
        self._grpc_server = None
        self._http_server: ThreadingHTTPServer | None = None
        self._http_thread: threading.Thread | None = None

    @property
    def grpc_target(self) -> str:
        return f"{LOCALHOST}:{self.grpc_port}"

    @property
    def rest_url(self) -> str:
        return f"http://{LOCALHOST}:{self.rest_port}"

    def start(self) -> "InProcessModelServer":
        import grpc
        from tensorflow_serving.apis import model_service_pb2_grpc, prediction_service_pb2_grpc

        self.registry = ModelRegistry(self.model_base_path, self.model_name, self.num_versions)
        try:
            server = grpc.server(futures.ThreadPoolExecutor(max_workers=4), options=GRPC_MESSAGE_OPTIONS)
            prediction, model = _grpc_servicers(self.registry)
            prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(prediction, server)
            model_service_pb2_grpc.add_ModelServiceServicer_to_server(model, server)
            self.grpc_port = server.add_insecure_port(f"{LOCALHOST}:{self._grpc_port_wanted}")
            if not self.grpc_port:
                raise OSError(f"gRPC could not bind {LOCALHOST}:{self._grpc_port_wanted}")
            server.start()
            self._grpc_server = server

            http_server = ThreadingHTTPServer((LOCALHOST, self._rest_port_wanted),
                                              _rest_handler_class(RestApi(self.registry)))
            http_server.daemon_threads = True
            self._http_server = http_server
            self.rest_port = http_server.server_address[1]
            self._http_thread = threading.Thread(
                target=http_server.serve_forever, kwargs={"poll_interval": 0.1},
                name="tfmmsearch-rest-double", daemon=True)
            self._http_thread.start()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        if self._http_server is not None:
            if self._http_thread is not None and self._http_thread.is_alive():
                self._http_server.shutdown()
                self._http_thread.join(timeout=5)
            self._http_server.server_close()
            self._http_server = self._http_thread = None
        if self._grpc_server is not None:
            self._grpc_server.stop(grace=None).wait(timeout=5)
            self._grpc_server = None

    def __enter__(self) -> "InProcessModelServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description="TEST DOUBLE speaking TF Serving's gRPC/REST protocol over a SavedModel, on "
                    "127.0.0.1. Not a production server: use tensorflow_model_server for that.")
    parser.add_argument("model_base_path", help="TF Serving base path, e.g. export/tfmmsearch")
    parser.add_argument("--model_name", default=DEFAULT_MODEL_NAME)
    parser.add_argument("--port", type=int, default=8500, help="gRPC port (TF Serving's default 8500)")
    parser.add_argument("--rest_api_port", "--rest_port", type=int, default=8501)
    parser.add_argument("--num_versions", type=int, default=1)
    args = parser.parse_args(argv)
    server = InProcessModelServer(args.model_base_path, args.model_name, num_versions=args.num_versions,
                                  grpc_port=args.port, rest_port=args.rest_api_port)
    with server:
        print(f"TEST DOUBLE serving {args.model_name!r} versions {sorted(server.registry.versions)}: "
              f"gRPC {server.grpc_target}, REST {server.rest_url} (Ctrl-C stops)", flush=True)
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())  # `kill` shuts both servers down cleanly
        try:
            stop.wait()
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
