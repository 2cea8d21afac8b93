"""Local ports for network tests: one nothing listens on, and one that accepts but never answers."""

from __future__ import annotations

import contextlib
import socket
from typing import Iterator

LOCALHOST = "127.0.0.1"


def free_port() -> int:
    """A port on 127.0.0.1 that was free a moment ago: nothing listens there (connection refused)."""
    with socket.socket() as probe:
        probe.bind((LOCALHOST, 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def silent_listener() -> Iterator[int]:
    """A port whose listener accepts connections into its backlog and never answers (a hung server)."""
    silent = socket.socket()
    try:
        silent.bind((LOCALHOST, 0))
        silent.listen(8)
        yield silent.getsockname()[1]
    finally:
        silent.close()
