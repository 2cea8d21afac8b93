"""Local servers for network tests: a port nothing listens on, one that accepts but never
answers, and stopping a server process for good."""

from __future__ import annotations

import contextlib
import socket
import subprocess
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


def stop_process(process: subprocess.Popen, timeout: float = 15.0) -> None:
    """Terminates a server process, killing it if it does not exit within `timeout` seconds."""
    process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
