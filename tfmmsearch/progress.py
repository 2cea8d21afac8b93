"""Progress reporting that reads well both in a terminal and in a log file.

A tqdm bar redraws itself with carriage returns; written to a file or a CI log that becomes
thousands of overwritten fragments on one line. `progress` gives a tqdm bar when stderr is a
terminal and otherwise a few plain log lines: one at most every `every_fraction` of the total
or every `every_seconds` (whichever comes first), and one at the end with the count and rate.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterable, Iterator
from typing import IO, Any

logger = logging.getLogger("tfmmsearch.progress")


class LogProgress:
    """The part of tqdm's interface the package uses (update, close, with, iteration), reported
    as log lines instead of a redrawn bar."""

    def __init__(self, iterable: Iterable | None = None, *, total: int | None = None,
                 desc: str = "", unit: str = "it", every_seconds: float = 5.0,
                 every_fraction: float = 0.1, log: logging.Logger | None = None,
                 clock=time.monotonic):
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)
        self.iterable = iterable
        self.total = total
        self.desc = desc or "progress"
        self.unit = unit
        self.n = 0
        self.every_seconds = every_seconds
        self.every_fraction = every_fraction
        self._log = log or logger
        self._clock = clock
        self._start = clock()
        self._last_time = self._start
        self._last_n = 0
        self._closed = False

    def _line(self, final: bool) -> str:
        elapsed = max(self._clock() - self._start, 1e-9)
        done = f"{self.n}/{self.total}" if self.total else f"{self.n}"
        percent = f" ({100.0 * self.n / self.total:.0f}%)" if self.total else ""
        rate = f"{self.n / elapsed:.1f} {self.unit}/s"
        if final:
            return f"{self.desc}: done, {done} {self.unit} in {elapsed:.1f} s ({rate})"
        return f"{self.desc}: {done} {self.unit}{percent}, {rate}"

    def update(self, n: int = 1) -> None:
        """Counts `n` more units; logs a line when enough progress or time has passed."""
        self.n += n
        now = self._clock()
        step = self.every_fraction * self.total if self.total else None
        due_by_count = step is not None and self.n - self._last_n >= step
        due_by_time = now - self._last_time >= self.every_seconds
        if (due_by_count or due_by_time) and not (self.total and self.n >= self.total):
            self._log.info("%s", self._line(final=False))
            self._last_time, self._last_n = now, self.n

    def close(self) -> None:
        """Logs the final line (total and rate) once."""
        if not self._closed:
            self._closed = True
            self._log.info("%s", self._line(final=True))

    def __iter__(self) -> Iterator:
        if self.iterable is None:
            raise TypeError("this progress object was made without an iterable")
        for item in self.iterable:
            yield item
            self.update(1)
        self.close()  # not on an abandoned loop: "done" would be a lie there

    def __enter__(self) -> "LogProgress":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


class _Silent:
    """What `disable=True` returns: the same interface, no output."""

    def __init__(self, iterable: Iterable | None = None):
        self.iterable = iterable
        self.n = 0

    def update(self, n: int = 1) -> None:
        self.n += n

    def close(self) -> None:
        pass

    def __iter__(self) -> Iterator:
        return iter(self.iterable)

    def __enter__(self) -> "_Silent":
        return self

    def __exit__(self, *exc_info) -> None:
        pass


def is_terminal(stream: IO[str] | None = None) -> bool:
    """Whether `stream` (default stderr) is a terminal: redrawn bars there, plain lines elsewhere."""
    stream = sys.stderr if stream is None else stream
    isatty = getattr(stream, "isatty", None)
    return bool(callable(isatty) and isatty())


def progress(iterable: Iterable | None = None, *, total: int | None = None, desc: str = "",
             unit: str = "it", leave: bool = True, disable: bool = False,
             stream: IO[str] | None = None, every_seconds: float = 5.0,
             every_fraction: float = 0.1) -> Any:
    """A progress reporter over `iterable` (or updated by hand with `update(n)`).

    A tqdm bar on `stream` (default stderr) when it is a terminal; otherwise `LogProgress`,
    which logs through `tfmmsearch.progress` at most every `every_fraction` of `total` or
    `every_seconds`, plus a final line. `leave` only affects the tqdm bar; `disable` silences
    both. Either way the object has update(n), close(), context-manager use and iteration.
    """
    if disable:
        return _Silent(iterable)
    stream = sys.stderr if stream is None else stream
    if is_terminal(stream):
        from tqdm import tqdm

        return tqdm(iterable, total=total, desc=desc, unit=unit, leave=leave, file=stream)
    return LogProgress(iterable, total=total, desc=desc, unit=unit, every_seconds=every_seconds,
                       every_fraction=every_fraction)
