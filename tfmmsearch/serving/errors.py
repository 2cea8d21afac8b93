"""`ServingError`, alone in a module without imports so the CLI can catch it without loading numpy."""

from __future__ import annotations


class ServingError(RuntimeError):
    """The server (or the local SavedModel) refused a request, or could not be reached in time.

    `http_status` is set for REST, `grpc_code` (e.g. "INVALID_ARGUMENT") for gRPC, and
    `server_message` holds the server's own words ({"error": ...} body or gRPC details); all are
    None when no server answered at all.
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
