"""One logging setup for the CLI and entrypoints: short, timestamped lines on stderr."""

from __future__ import annotations

import logging

_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def setup_logging(verbose: bool = False) -> None:
    """Configures the root logger once; TensorFlow's own Python logger is kept quiet."""
    level = logging.DEBUG if verbose else logging.INFO
    logging.basicConfig(level=level, format=_FORMAT, datefmt="%H:%M:%S", force=True)
    for noisy in ("tensorflow", "absl", "h5py", "PIL"):
        logging.getLogger(noisy).setLevel(logging.WARNING if verbose else logging.ERROR)
