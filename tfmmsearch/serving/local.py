"""`LocalSavedModelClient`: the export's signatures called on a SavedModel loaded in this process.

No server at all: the reference the served transports are checked against, and what
`tfmmsearch query export/<name>` and the demo use. The folder is found with the contract's
TF Serving version layout, so it picks the same version a model server would.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from tfmmsearch.contract import list_versions, resolve_version_dir
from tfmmsearch.serving.client import SearchClient, ServingError, check_timeout, normalize_outputs


class LocalSavedModelClient(SearchClient):
    """The same methods as the server clients, on a SavedModel directory or a base path export/<name>.

    A base path gives its latest version, or `version` when set. `timeout` (seconds, None = no
    limit) bounds each call: past it the call raises ServingError; TensorFlow cannot cancel a
    running graph, so the abandoned computation finishes in the background.
    """

    def __init__(self, path: str | Path, version: int | None = None, timeout: float | None = None) -> None:
        import tensorflow as tf

        try:
            import tensorflow_text  # noqa: F401  (registers the TF Text ops the tokenizer uses)
        except ImportError:  # pragma: no cover - pinned in setup.py; a bare-TF model still loads
            pass
        self.timeout = check_timeout(timeout, allow_none=True)
        self.path = _version_dir(Path(path), version)
        self._tf = tf
        self._loaded = tf.saved_model.load(str(self.path))

    def __repr__(self) -> str:
        return f"LocalSavedModelClient({str(self.path)!r})"

    def signature_names(self) -> list[str]:
        return sorted(self._loaded.signatures.keys())

    def predict(self, signature_name: str, inputs: Mapping[str, Any]) -> dict[str, np.ndarray]:
        if signature_name not in self._loaded.signatures:
            message = f"no signature {signature_name!r}; it has {self.signature_names()}"
            raise ServingError(f"{self.path}: {message}", server_message=message)
        outputs = self._bounded(lambda: self._run(signature_name, inputs), signature_name)
        return normalize_outputs(signature_name, outputs)

    def _run(self, signature_name: str, inputs: Mapping[str, Any]) -> dict[str, np.ndarray]:
        tf = self._tf
        function = self._loaded.signatures[signature_name]
        try:
            tensors = {name: tf.constant(np.asarray(value)) for name, value in inputs.items()}
            outputs = function(**tensors)
        except (tf.errors.OpError, TypeError, ValueError) as error:
            message = getattr(error, "message", None) or str(error)
            raise ServingError(f"{self.path} signature {signature_name!r}: {message}",
                               server_message=message) from None
        return {name: t.numpy() for name, t in outputs.items()}

    def _bounded(self, call: Callable[[], Any], signature_name: str) -> Any:
        """`call()`, or ServingError once `timeout` passes (the call runs on a daemon thread)."""
        if self.timeout is None:
            return call()
        result: dict[str, Any] = {}

        def worker() -> None:
            try:
                result["value"] = call()
            except BaseException as error:  # noqa: BLE001 - handed back to the caller below
                result["error"] = error

        thread = threading.Thread(target=worker, name="tfmmsearch-local-call", daemon=True)
        thread.start()
        thread.join(self.timeout)
        if thread.is_alive():
            raise ServingError(f"{self.path} signature {signature_name!r}: "
                               f"no answer within {self.timeout:g}s")
        if "error" in result:
            raise result["error"]
        return result["value"]


def _version_dir(path: Path, version: int | None) -> Path:
    if version is None:
        return resolve_version_dir(path)
    versions = list_versions(path)
    if int(version) not in versions:
        raise FileNotFoundError(f"{path}: no version {version}; it holds versions "
                                f"{sorted(versions) or 'none'}")
    return versions[int(version)]
