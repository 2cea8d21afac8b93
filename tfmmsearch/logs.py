"""One logging setup for the CLI and entrypoints: short, timestamped lines on stderr."""

from __future__ import annotations

import logging
import sys

_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class _CurrentStderr(logging.StreamHandler):
    """Writes to whatever `sys.stderr` is when a record is emitted, not when logging was set
    up: a caller that swaps stderr (a notebook, a test capturing output) never leaves the
    root logger writing to a closed stream."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value):  # StreamHandler.__init__ assigns it; the property decides
        pass


def setup_logging(verbose: bool = False) -> None:
    """Configures the root logger once; TensorFlow's own Python logger is kept quiet."""
    level = logging.DEBUG if verbose else logging.INFO
    logging.basicConfig(level=level, format=_FORMAT, datefmt="%H:%M:%S", force=True,
                        handlers=[_CurrentStderr()])
    for noisy in ("tensorflow", "absl", "h5py", "PIL"):
        logging.getLogger(noisy).setLevel(logging.WARNING if verbose else logging.ERROR)
