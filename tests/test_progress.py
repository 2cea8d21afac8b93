"""Progress reporting: a plain, bounded number of log lines when stderr is not a terminal."""

import io
import logging

import pytest

from tfmmsearch.progress import LogProgress, progress


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


class _Clock:
    """A clock the test moves by hand, so time-based lines are deterministic."""

    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "tfmmsearch.progress"]


def test_non_tty_updates_give_a_bounded_number_of_plain_lines(caplog):
    stream = io.StringIO()
    caplog.set_level(logging.INFO, logger="tfmmsearch.progress")
    bar = progress(total=10_000, desc="reading products.csv", unit="row", stream=stream)
    assert isinstance(bar, LogProgress)
    with bar:
        for _ in range(10_000):
            bar.update(1)
    lines = _lines(caplog)
    # one per 10% (the 100% one is the final line) plus the final line; time adds none here
    # unless the machine is very slow, so allow a few
    assert 9 <= len(lines) <= 15, lines
    assert not any("\r" in line for line in lines)
    assert stream.getvalue() == ""  # nothing drawn on the stream itself
    assert lines[-1].startswith("reading products.csv: done, 10000/10000 row in ")
    assert "row/s" in lines[-1]
    assert "1000/10000 row (10%)" in lines[0]


def test_time_triggers_a_line_when_counts_are_slow(caplog):
    caplog.set_level(logging.INFO, logger="tfmmsearch.progress")
    clock = _Clock()
    bar = LogProgress(total=1_000_000, desc="images", unit="img", every_seconds=5.0, clock=clock)
    for _ in range(100):
        clock.now += 1.0
        bar.update(1)
    bar.close()
    bar.close()  # the final line is logged once
    lines = _lines(caplog)
    assert len(lines) == 100 // 5 + 1, lines
    assert lines[0] == "images: 5/1000000 img (0%), 1.0 img/s"
    assert lines[-1] == "images: done, 100/1000000 img in 100.0 s (1.0 img/s)"


def test_iteration_counts_items_and_ends_with_the_total(caplog):
    caplog.set_level(logging.INFO, logger="tfmmsearch.progress")
    items = list(progress(range(50), desc="rows", unit="row", stream=io.StringIO()))
    assert items == list(range(50))
    lines = _lines(caplog)
    assert len(lines) == 10  # 9 at 10%..90%, then the final one
    assert lines[-1].startswith("rows: done, 50/50 row in ")


def test_an_abandoned_loop_logs_no_done_line(caplog):
    caplog.set_level(logging.INFO, logger="tfmmsearch.progress")
    with pytest.raises(RuntimeError):
        for number in progress(range(100), desc="rows", stream=io.StringIO()):
            if number == 3:
                raise RuntimeError("bad row")
    assert not any("done" in line for line in _lines(caplog))


def test_a_terminal_gets_a_tqdm_bar_and_disable_is_silent(caplog):
    from tqdm import tqdm

    caplog.set_level(logging.INFO, logger="tfmmsearch.progress")
    terminal = _Terminal()
    with progress(total=3, desc="bar", stream=terminal) as bar:
        assert isinstance(bar, tqdm)
        bar.update(3)
    assert "\r" in terminal.getvalue() and "3/3" in terminal.getvalue()
    silent = progress(range(4), total=4, disable=True, stream=io.StringIO())
    assert list(silent) == [0, 1, 2, 3]
    silent.update(2)
    silent.close()
    assert _lines(caplog) == []
