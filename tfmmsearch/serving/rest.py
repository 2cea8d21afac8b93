"""`RestClient`: TF Serving's REST API (POST .../:predict, GET status and metadata) over urllib.

Bodies follow TF Serving's JSON layout: row ({"instances": [...]}) or columnar
({"inputs": {...}}) requests, raw bytes as {"b64": ...} for the contract's binary inputs, and
answers typed back with the contract's output dtypes (JSON carries none), so the arrays equal
what gRPC and the in-process SavedModel give.
"""

from __future__ import annotations

import base64
import json
import math
import socket
import urllib.error
import urllib.parse
import urllib.request
from typing import Any, Iterable, Mapping

import numpy as np

from tfmmsearch.contract import BINARY_INPUTS, SIGNATURE_OUTPUTS
from tfmmsearch.serving.client import (
    DEFAULT_MODEL_NAME,
    DEFAULT_TIMEOUT,
    ModelServerClient,
    ServingError,
    normalize_outputs,
)

REQUEST_FORMATS = ("row", "columnar")

# --------------------------------------------------------------------------- request bodies


def _json_float(value: Any) -> float:
    # The shortest decimal that round-trips the float32 (what TF Serving writes), not the double's
    # noisy expansion: 0.1f is sent as 0.1 rather than 0.10000000149011612.
    if isinstance(value, np.float32) and math.isfinite(value):
        return float(str(value))
    return float(value)


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


# --------------------------------------------------------------------------- answers


def _from_json_leaf(value: Any) -> Any:
    if isinstance(value, dict) and set(value) == {"b64"}:
        return base64.b64decode(value["b64"])
    return value


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


def _error_text(raw: bytes) -> str:
    text = raw.decode("utf-8", "replace")
    try:
        answer = json.loads(text)
    except ValueError:
        return text.strip()[:500] or "(empty body)"
    if isinstance(answer, dict) and "error" in answer:
        return str(answer["error"])
    return text.strip()[:500]


# --------------------------------------------------------------------------- the client


class RestClient(ModelServerClient):
    """TF Serving over REST: `url` is "http://host:8501" (a bare "host:8501" gets http://).

    `request_format` picks the body layout, "row" ({"instances": [...]}) or "columnar"
    ({"inputs": {...}}); both give the same results.
    """

    transport = "rest"

    def __init__(self, url: str, model_name: str = DEFAULT_MODEL_NAME, timeout: float = DEFAULT_TIMEOUT,
                 version: int | None = None, request_format: str = "columnar") -> None:
        super().__init__(model_name, timeout, version)
        if request_format not in REQUEST_FORMATS:
            raise ValueError(f"request_format must be 'row' or 'columnar', got {request_format!r}")
        self.request_format = request_format
        if "://" not in url:
            url = "http://" + url
        self.url = url.rstrip("/")

    @property
    def address(self) -> str:
        return self.url

    def predict(self, signature_name: str, inputs: Mapping[str, Any]) -> dict[str, np.ndarray]:
        body = rest_request_body(signature_name, inputs, self.request_format)
        answer = self._call("POST", self._model_path() + ":predict", body)
        return parse_rest_predict_response(signature_name, answer)

    def model_status(self) -> dict[str, Any]:
        return self._call("GET", self._model_path())

    def model_metadata(self) -> dict[str, Any]:
        return self._call("GET", self._model_path() + "/metadata")

    def _model_path(self) -> str:
        path = f"/v1/models/{urllib.parse.quote(self.model_name, safe='')}"
        if self.version is not None:
            path += f"/versions/{int(self.version)}"
        return path

    def _call(self, method: str, path: str, body: Mapping[str, Any] | None = None) -> dict[str, Any]:
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
        except (socket.timeout, TimeoutError):
            raise ServingError(self.timeout_message(f"{method} {path}")) from None
        except urllib.error.URLError as error:
            if isinstance(error.reason, (socket.timeout, TimeoutError)):
                raise ServingError(self.timeout_message(f"{method} {path}")) from None
            raise ServingError(self.unreachable_message(_reason(error.reason))) from None
        except OSError as error:  # ConnectionResetError and friends while reading the answer
            raise ServingError(self.unreachable_message(_reason(error))) from None
        try:
            # TF Serving writes NaN/Infinity tokens; Python's json reads them.
            return json.loads(raw)
        except ValueError as error:
            raise ServingError(f"{method} {url}: answer is not JSON ({error}): {raw[:200]!r}") from None


def _reason(error: Any) -> str:
    """"connection refused" rather than "[Errno 111] Connection refused"."""
    text = getattr(error, "strerror", None) or str(error)
    return text[:1].lower() + text[1:] if text else type(error).__name__
