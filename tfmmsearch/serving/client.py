"""One client interface for the exported search model, whichever way it is reached.

`SearchClient` is the interface: search/retrieve/rank/embed_query/embed_item on top of one
`predict(signature, inputs)` that each transport implements. The transports live one per module:

- `tfmmsearch.serving.rest.RestClient`: TF Serving's REST API over urllib (no extra dependency);
- `tfmmsearch.serving.grpc_client.GrpcClient`: TF Serving's gRPC PredictionService/ModelService;
- `tfmmsearch.serving.local.LocalSavedModelClient`: the SavedModel loaded in this process.

`connect(target)` picks one from the target's form. All of them return dicts of numpy arrays
with the export contract's dtypes (string tensors as numpy `str` arrays), so a check written
against one runs against the others, which is how the tests prove the wire formats lossless.
The signatures, their inputs and outputs are those of `tfmmsearch.contract`.

Failures raise `ServingError` carrying what the server answered (HTTP status and the body's
"error", or the gRPC code and details), or saying that no server answered within the timeout.
"""

from __future__ import annotations

import abc
import time
from typing import Any, Mapping, Sequence

import numpy as np

from tfmmsearch.contract import DEFAULT_MODEL_NAME, DEFAULT_SIGNATURE, SIGNATURE_OUTPUTS
from tfmmsearch.serving.errors import ServingError

__all__ = ["DEFAULT_MODEL_NAME", "DEFAULT_TIMEOUT", "ModelServerClient", "SearchClient",
           "ServingError", "normalize_outputs"]

DEFAULT_TIMEOUT = 10.0  # seconds per call to a model server


def check_timeout(timeout: float | None, allow_none: bool = False) -> float | None:
    """Positive seconds (or None where waiting forever is allowed); anything else is a caller error."""
    if timeout is None and allow_none:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0:
        raise ValueError(f"timeout must be positive seconds, got {timeout!r}")
    return float(timeout)


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


def string_tensor(values: Sequence[str] | Sequence[bytes]) -> np.ndarray:
    """A 1-D numpy object array of bytes, the form every transport sends string tensors in."""
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
    flat: list[str] = []
    for r, row in enumerate(rows):
        ids = _text_list(row, f"product_ids[{r}]")
        if width is None:
            width = len(ids)
        elif len(ids) != width:
            raise ValueError(f"product_ids[{r}]: {len(ids)} ids but row 0 has {width}; "
                             "every query must come with the same number of candidates")
        flat.extend(ids)
    return string_tensor(flat).reshape(batch_size, width or 0)


def _attribute_matrix(attributes: Any, batch_size: int) -> np.ndarray:
    """[B, C] string tensor of item-feature values ([B, 0] for None)."""
    if attributes is None:
        return np.empty((batch_size, 0), dtype=object)
    if isinstance(attributes, (str, bytes)):
        raise TypeError("attributes: expected one list of strings per item")
    rows = [list(row) for row in attributes]
    if len(rows) != batch_size:
        raise ValueError(f"attributes: {len(rows)} rows for {batch_size} items; send one list "
                         "of item-feature values per item")
    width = len(rows[0]) if rows else 0
    flat: list[str] = []
    for r, row in enumerate(rows):
        if len(row) != width:
            raise ValueError(f"attributes[{r}]: {len(row)} values but row 0 has {width}")
        for c, value in enumerate(row):
            if not isinstance(value, str):
                raise TypeError(f"attributes[{r}][{c}]: expected str, got {type(value).__name__}")
        flat.extend(row)
    return string_tensor(flat).reshape(batch_size, width)


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


def _all_text(array: np.ndarray) -> bool:
    return all(isinstance(v, (str, bytes)) for v in array.reshape(-1))


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
        elif kind == "int32":
            result[name] = np.asarray(array, dtype=np.int32)
        else:
            result[name] = np.asarray(array.tolist() if array.dtype == object else array)
    return result


# --------------------------------------------------------------------------- the interface


class SearchClient(abc.ABC):
    """The methods every client has; a transport supplies `predict` and `signature_names`."""

    timeout: float | None

    @abc.abstractmethod
    def predict(self, signature_name: str, inputs: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """Runs any signature by name; inputs are numpy arrays (strings as bytes/str)."""

    @abc.abstractmethod
    def signature_names(self) -> list[str]:
        """The model's signature names, sorted."""

    def close(self) -> None:
        """Releases connections; the default has none to release."""

    def __enter__(self) -> "SearchClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def search(self, queries: Sequence[str]) -> dict[str, np.ndarray]:
        """Top-K products per raw query: product_ids [B,K], scores [B,K], modality_weights [B,K,M]."""
        queries = _text_list(queries, "queries")
        return self.predict(DEFAULT_SIGNATURE, {"query": string_tensor(queries)})

    def search_filtered(self, queries: Sequence[str], filters: str | Sequence[str]
                        ) -> dict[str, np.ndarray]:
        """`search` among the products matching each query's filter (one string for all
        queries, or one per query; "" = none; syntax: tfmmsearch/exporting/filters.py). Adds
        num_results [B]: how many of the K results are real ("" ids and -inf scores follow)."""
        queries = _text_list(queries, "queries")
        if isinstance(filters, str):
            filters = [filters] * len(queries)
        elif isinstance(filters, bytes):
            raise TypeError("filters: expected a string or a list of strings, got bytes")
        else:
            filters = list(filters)
            if len(filters) != len(queries):
                raise ValueError(f"filters: {len(filters)} filters for {len(queries)} queries; "
                                 "send one per query (or one string for all)")
            for i, text in enumerate(filters):
                if not isinstance(text, str):
                    raise TypeError(f"filters[{i}]: expected str, got {type(text).__name__}")
        return self.predict("search_filtered", {"query": string_tensor(queries),
                                                "filter": string_tensor(filters)})

    def retrieve(self, queries: Sequence[str]) -> dict[str, np.ndarray]:
        """Top-K candidates from the in-graph index without the ranking head: product_ids, scores."""
        queries = _text_list(queries, "queries")
        return self.predict("retrieve", {"query": string_tensor(queries)})

    def retrieve_embedding(self, embeddings: Any, nprobe: int | Sequence[int] = 0
                           ) -> dict[str, np.ndarray]:
        """Top-K products of query vectors [B, D] (an embed_query or embed_item output: search
        by photo) from the index alone. `nprobe`: lists an IVF index probes, one for all rows
        or one per row; 0 = the export's default; the batch probes its largest."""
        matrix = np.asarray(embeddings, dtype=np.float32)
        if matrix.ndim != 2 or matrix.shape[0] == 0:
            raise ValueError(f"retrieve_embedding: expected a [B, D] matrix of query vectors, "
                             f"got shape {matrix.shape}")
        probes = np.broadcast_to(np.asarray(nprobe, dtype=np.int32), (matrix.shape[0],))
        return self.predict("retrieve_embedding", {"embedding": matrix,
                                                   "nprobe": np.ascontiguousarray(probes)})

    def rank(self, queries: Sequence[str], product_ids: Sequence[Sequence[str]]) -> dict[str, np.ndarray]:
        """Scores [B,N] for given candidates per query; `known` [B,N] is False for ids not in the index."""
        queries = _text_list(queries, "queries")
        matrix = _product_id_matrix(product_ids, len(queries))
        outputs = self.predict("rank", {"query": string_tensor(queries), "product_ids": matrix})
        # With --enable_batching and pad_variable_length_inputs, TF Serving may pad this request's
        # candidates up to the widest request in the batch; only the first N columns are ours.
        width = matrix.shape[1]
        return {name: value[:, :width] if value.ndim >= 2 else value for name, value in outputs.items()}

    def embed_query(self, queries: Sequence[str]) -> dict[str, np.ndarray]:
        """Query-tower embeddings [B,D]."""
        queries = _text_list(queries, "queries")
        return self.predict("embed_query", {"query": string_tensor(queries)})

    def embed_item(self, titles: Sequence[str], images: Sequence[bytes | None],
                   attributes: Sequence[Sequence[str]] | None = None) -> dict[str, np.ndarray]:
        """Item embeddings [B,D] and modality weights [B,M] from titles, encoded image bytes
        (b"" = none) and, for a model with item features, each item's attribute strings in the
        export's column order (contract.EXPORT_ITEM_FEATURES_FILE; None = none known)."""
        titles = _text_list(titles, "titles")
        images = _bytes_list(images, "images")
        if len(images) != len(titles):
            raise ValueError(f"embed_item: {len(titles)} titles but {len(images)} images; "
                             "pass b'' (or None) for items without a photo")
        matrix = _attribute_matrix(attributes, len(titles))
        return self.predict("embed_item", {"title": string_tensor(titles),
                                           "image": string_tensor(images), "attributes": matrix})


class ModelServerClient(SearchClient):
    """What the REST and gRPC clients of a TF Serving model server share.

    `model_name` is the served name, `version` pins one version instead of the latest, and
    `timeout` bounds every call in seconds.
    """

    transport: str  # "rest" or "grpc", for messages

    def __init__(self, model_name: str = DEFAULT_MODEL_NAME, timeout: float = DEFAULT_TIMEOUT,
                 version: int | None = None) -> None:
        self.model_name = model_name
        self.timeout = check_timeout(timeout)
        self.version = version

    @property
    @abc.abstractmethod
    def address(self) -> str:
        """Where the server is, as the caller gave it (URL or host:port)."""

    @abc.abstractmethod
    def model_status(self) -> dict[str, Any]:
        """TF Serving's GetModelStatusResponse as JSON: {"model_version_status": [{version, state, status}]}."""

    @abc.abstractmethod
    def model_metadata(self) -> dict[str, Any]:
        """{"model_spec": ..., "metadata": {"signature_def": {"signature_def": {name: SignatureDef}}}}."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.address!r}, model_name={self.model_name!r})"

    def unreachable_message(self, reason: str) -> str:
        """The one line for "could not connect", naming the transport and the address."""
        return f"cannot reach TF Serving over {self._label} at {self.address} ({reason})"

    def timeout_message(self, call: str) -> str:
        """The one line for "connected, but no answer in time"."""
        return (f"no answer from TF Serving over {self._label} at {self.address} "
                f"within {self.timeout:g}s ({call})")

    @property
    def _label(self) -> str:
        return {"rest": "REST", "grpc": "gRPC"}[self.transport]

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
