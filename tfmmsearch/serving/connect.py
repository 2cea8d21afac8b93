"""`connect(target)`: the client for an export directory, a REST URL or a gRPC host:port.

The interface lives in `client.py` and each transport in its own module; this one only
chooses, so the transports can import the interface without an import cycle.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from tfmmsearch.contract import DEFAULT_MODEL_NAME
from tfmmsearch.serving.client import DEFAULT_TIMEOUT, SearchClient
from tfmmsearch.serving.grpc_client import GrpcClient
from tfmmsearch.serving.local import LocalSavedModelClient
from tfmmsearch.serving.rest import RestClient

TRANSPORTS = ("auto", "local", "rest", "grpc")


# host:port, host a name, an IPv4 address or a bracketed IPv6 address: what gRPC targets look like.
_HOST_PORT = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+):\d{1,5}")


def transport_for(target: str) -> str:
    """"rest" for http(s)://, "local" for an existing path, "grpc" for host:port.

    A target that looks like a path (a separator, a leading ".", or no ":port") and does not
    exist is a missing export, not a host name: FileNotFoundError says so.
    """
    if target.startswith(("http://", "https://")):
        return "rest"
    if Path(target).exists():
        return "local"
    separators = {"/", os.sep} | ({os.altsep} if os.altsep else set())
    if any(s in target for s in separators) or target.startswith(".") or not _HOST_PORT.fullmatch(target):
        raise FileNotFoundError(_missing_export(target))
    return "grpc"


def _missing_export(target: str) -> str:
    return (f"{target}: no such export directory (give an export base path or version folder, "
            "http://HOST:8501 for TF Serving's REST API, or HOST:8500 for its gRPC API)")


def connect(target: str | Path, model_name: str | None = None, transport: str = "auto",
            timeout: float | None = DEFAULT_TIMEOUT, *, version: int | None = None,
            request_format: str = "columnar") -> SearchClient:
    """A client for `target`: an export directory, "http(s)://host:port" (REST) or "host:port" (gRPC).

    `transport` forces one of "local", "rest", "grpc" instead of guessing from the target.
    `model_name` is the served name (default "tfmmsearch"; unused in-process), `version` pins a
    version, `timeout` bounds each call in seconds, `request_format` picks REST's "row" or
    "columnar" body.
    """
    if transport not in TRANSPORTS:
        raise ValueError(f"transport must be one of {', '.join(TRANSPORTS)}; got {transport!r}")
    target = str(target)
    if transport == "auto":
        transport = transport_for(target)
    if transport == "local":
        if not Path(target).exists():
            raise FileNotFoundError(_missing_export(target))
        return LocalSavedModelClient(target, version=version, timeout=timeout)
    if transport == "rest":
        return RestClient(target, model_name or DEFAULT_MODEL_NAME, timeout=timeout, version=version,
                          request_format=request_format)
    return GrpcClient(target, model_name or DEFAULT_MODEL_NAME, timeout=timeout, version=version)
