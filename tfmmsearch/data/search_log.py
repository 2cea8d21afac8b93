"""Reading and validating a shop's search log, and splitting it by time.

A search log is what the shop's own search recorded: one session per record, oldest first,
`{session_id, timestamp, query, shown[], clicked[], purchased[]}`. Learning from it trusts
that a click was on something shown and a purchase on something clicked, and evaluation
trusts that later sessions come later; so every session is checked here, where a bad value can
still be named by file, line and field. The policies are the catalog's: `on_bad_row="error"`
raises `SearchLogError` at the first bad session, `"skip"` counts bad sessions by reason in a
`ReadReport` and logs the first few.

Formats: `.jsonl` (one JSON object per line; the lists are JSON lists of string ids) or `.csv`
(header `session_id,timestamp,query,shown,clicked,purchased`, each list one cell of
space-separated ids, an empty cell an empty list). Timestamps are ISO 8601 with a UTC offset
(`2026-10-01T00:00:55Z`); a timestamp without one is rejected, since its day is ambiguous.
Line numbers are physical lines of the file (a CSV header is line 1).

Order: a session older than the last accepted one is a bad session (`out_of_order`), so a
log that reads without errors is sorted oldest first, which `split_by_time` relies on.
"""

from __future__ import annotations

import csv
import json
import logging
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from pathlib import Path

from tfmmsearch.contract import SEARCH_LOG_FIELDS, has_text
from tfmmsearch.data.catalog import (
    BAD_ROW_POLICIES,
    DUPLICATE_ID,
    EMPTY_ID,
    MISSING_FIELD,
    NON_UTF8,
    WRONG_FIELD_COUNT,
    has_undecodable_text,
    json_objects,
    validate_rows,
)
from tfmmsearch.data.schema import CatalogError, ReadReport

logger = logging.getLogger(__name__)

LIST_FIELDS = ("shown", "clicked", "purchased")
LOG_SUFFIXES = (".jsonl", ".csv")

# Reasons a session can be rejected (besides the catalog's shared ones imported above).
WRONG_TYPE = "wrong_type"
BAD_TIMESTAMP = "bad_timestamp"
EMPTY_QUERY = "empty_query"
BAD_PRODUCT_LIST = "bad_product_list"
CLICK_NOT_SHOWN = "click_not_shown"
PURCHASE_NOT_CLICKED = "purchase_not_clicked"
UNKNOWN_PRODUCT = "unknown_product"
OUT_OF_ORDER = "out_of_order"

DEFAULT_SPLIT = (0.8, 0.1, 0.1)
SPLIT_NAMES = ("train", "validation", "test")


class SearchLogError(CatalogError):
    """Bad search-log input: the catalog's error, counting physical lines instead of rows."""

    ROW_WORD = "line"


@dataclass(frozen=True)
class Session:
    """One validated search session; `timestamp` is timezone-aware UTC."""

    session_id: str
    timestamp: datetime
    query: str
    shown: tuple[str, ...]
    clicked: tuple[str, ...]
    purchased: tuple[str, ...]
    line: int = 0  # physical line in the source file

    @property
    def day(self) -> date:
        return self.timestamp.date()


@dataclass
class SearchLog:
    """Validated sessions, oldest first, with the read report."""

    source: Path
    sessions: list[Session]
    report: ReadReport = field(default_factory=ReadReport)

    def __len__(self) -> int:
        return len(self.sessions)

    def days(self) -> list[date]:
        """The UTC days that have at least one session, in order."""
        return sorted({session.day for session in self.sessions})


@dataclass
class _RawSession:
    """One record as parsed (field values in our names), or the error that stopped parsing."""

    line: int
    values: dict | None = None
    error: SearchLogError | None = None


# --------------------------------------------------------------------------- parsing


def _field_names(fields: Mapping[str, str] | None) -> dict[str, str]:
    """our name -> the log's name; `fields` maps log names to ours and may rename any subset."""
    names = {name: name for name in SEARCH_LOG_FIELDS}
    for theirs, ours in (fields or {}).items():
        if ours not in SEARCH_LOG_FIELDS:
            raise ValueError(f"field mapping {theirs!r} -> {ours!r}: {ours!r} is not one of "
                             f"{', '.join(SEARCH_LOG_FIELDS)}")
        names[ours] = theirs
    return names


def _parse_jsonl(path: Path, to_ours: dict[str, str]) -> Iterator[_RawSession]:
    for line, obj, problem, reason in json_objects(path):
        if obj is None:
            yield _RawSession(line, error=SearchLogError(problem, file=path, row=line,
                                                         reason=reason))
        else:
            yield _RawSession(line, values={to_ours.get(key, key): value
                                            for key, value in obj.items()})


def _parse_csv(path: Path, to_ours: dict[str, str], names: dict[str, str]) -> Iterator[_RawSession]:
    """Bytes that are not UTF-8 are kept as surrogates, so one bad row is that row's error."""
    handle = path.open("r", encoding="utf-8-sig", errors="surrogateescape", newline="")
    with handle:
        reader = csv.reader(handle)
        try:
            header = [name.strip() for name in next(reader)]
        except StopIteration:
            raise SearchLogError("the file is empty (no header row)", file=path) from None
        columns = [to_ours.get(name, name) for name in header]
        missing = [names[name] for name in SEARCH_LOG_FIELDS if name not in columns]
        if missing:
            raise SearchLogError(f"missing required column(s): {', '.join(missing)} (header has: "
                                 f"{', '.join(header)})", file=path, row=1, field=missing[0],
                                 reason="missing_column")
        while True:
            try:
                record = next(reader)
            except StopIteration:
                return
            except csv.Error as error:  # the reader cannot resynchronise: no policy can skip it
                raise SearchLogError(f"malformed CSV: {error}", file=path,
                                     row=reader.line_num) from None
            line = reader.line_num
            if not record or (len(record) == 1 and not record[0].strip()):
                continue
            if len(record) != len(columns):
                yield _RawSession(line, error=SearchLogError(
                    f"has {len(record)} fields but the header has {len(columns)}", file=path,
                    row=line, reason=WRONG_FIELD_COUNT))
                continue
            bad = [header[i] for i, value in enumerate(record) if has_undecodable_text(value)]
            if bad:
                yield _RawSession(line, error=SearchLogError(
                    "value is not valid UTF-8", file=path, row=line, field=bad[0], reason=NON_UTF8))
                continue
            values = dict(zip(columns, record))
            for name in LIST_FIELDS:
                values[name] = values[name].split()
            yield _RawSession(line, values=values)


# --------------------------------------------------------------------------- validation


def _parse_timestamp(value) -> datetime | None:
    """An aware UTC datetime, or None when `value` is not ISO 8601 with a UTC offset."""
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        return None
    if parsed.tzinfo is None or parsed.utcoffset() is None:
        return None
    return parsed.astimezone(timezone.utc)


class _SessionValidator:
    """Turns parsed records into Sessions, or a SearchLogError naming line and field."""

    def __init__(self, source: Path, names: dict[str, str], product_ids: Collection[str] | None):
        self.source = source
        self.names = names  # our name -> the log's, so messages use the file's field names
        self.product_ids = None if product_ids is None else set(product_ids)
        self.line_of_id: dict[str, int] = {}
        self.last: Session | None = None

    def _error(self, raw: _RawSession, message: str, ours: str | None,
               reason: str) -> SearchLogError:
        return SearchLogError(message, file=self.source, row=raw.line,
                              field=None if ours is None else self.names[ours], reason=reason)

    def _ids(self, raw: _RawSession, name: str) -> tuple[str, ...]:
        value = raw.values[name]
        if not isinstance(value, list) or not all(isinstance(item, str) and item.strip()
                                                  for item in value):
            raise self._error(raw, f"must be a list of non-empty product id strings, got "
                                   f"{json.dumps(value, ensure_ascii=False)[:80]}", name,
                              BAD_PRODUCT_LIST)
        return tuple(item.strip() for item in value)

    def validate(self, raw: _RawSession) -> Session:
        if raw.error is not None:
            raise raw.error
        values = raw.values
        for name in SEARCH_LOG_FIELDS:
            if name not in values:
                raise self._error(raw, "required field is missing", name, MISSING_FIELD)
        for name in ("session_id", "query"):
            if not isinstance(values[name], str):
                raise self._error(raw, f"must be a string, got {values[name]!r}", name, WRONG_TYPE)
        session_id = values["session_id"].strip()
        if not session_id:
            raise self._error(raw, "session_id is empty", "session_id", EMPTY_ID)
        timestamp = _parse_timestamp(values["timestamp"])
        if timestamp is None:
            raise self._error(raw, f"{values['timestamp']!r} is not an ISO 8601 time with a UTC "
                                   "offset (e.g. 2026-10-01T00:00:55Z)", "timestamp",
                              BAD_TIMESTAMP)
        query = values["query"]
        if not has_text(query):
            raise self._error(raw, "query is empty", "query", EMPTY_QUERY)
        shown, clicked, purchased = (self._ids(raw, name) for name in LIST_FIELDS)
        for ids, name, within, reason in ((clicked, "clicked", shown, CLICK_NOT_SHOWN),
                                          (purchased, "purchased", clicked, PURCHASE_NOT_CLICKED)):
            outside = [item for item in ids if item not in within]
            if outside:
                container = "shown" if name == "clicked" else "clicked"
                raise self._error(raw, f"{outside[0]!r} is not in {self.names[container]}", name,
                                  reason)
        if self.product_ids is not None:
            unknown = [item for item in shown if item not in self.product_ids]
            if unknown:  # clicked and purchased ids are shown ones, checked above
                raise self._error(raw, f"{len(unknown)} product id(s) not in the catalog, e.g. "
                                       f"{unknown[0]!r}", "shown", UNKNOWN_PRODUCT)
        first_line = self.line_of_id.get(session_id)
        if first_line is not None:
            raise self._error(raw, f"duplicate session_id {session_id!r} (first seen at line "
                                   f"{first_line})", "session_id", DUPLICATE_ID)
        if self.last is not None and timestamp < self.last.timestamp:
            raise self._error(raw, f"{values['timestamp']} is earlier than the session before it "
                                   f"(line {self.last.line}); the log must be oldest first",
                              "timestamp", OUT_OF_ORDER)
        session = Session(session_id, timestamp, query.strip(), shown, clicked, purchased,
                          raw.line)
        self.line_of_id[session_id] = raw.line
        self.last = session
        return session


# --------------------------------------------------------------------------- public API


def read_search_log(path: str | Path, product_ids: Collection[str] | None = None,
                    on_bad_row: str = "error", progress: bool = False,
                    fields: Mapping[str, str] | None = None) -> SearchLog:
    """Reads and validates a search log (`.jsonl` or `.csv`, see the module docstring).

    `product_ids` (e.g. a catalog's ids) makes an id the catalog lacks a bad session.
    `fields` maps the log's field names to ours (`{"sid": "session_id"}`); messages keep the
    log's names. Only sessions that pass every check claim their session_id and advance the
    clock, so under "skip" a bad duplicate or a bad earlier session does not hide a good one.
    The file itself being unusable (missing, wrong suffix, a CSV header without the required
    columns, no usable sessions) raises whatever the policy.
    """
    if on_bad_row not in BAD_ROW_POLICIES:
        raise ValueError(f"on_bad_row must be one of {BAD_ROW_POLICIES}, got {on_bad_row!r}")
    names = _field_names(fields)
    to_ours = {theirs: ours for ours, theirs in names.items()}
    path = Path(path)
    if not path.is_file():
        raise SearchLogError("search log not found (or not a file)", file=path)
    if path.suffix not in LOG_SUFFIXES:
        raise SearchLogError(f"expected a {' or '.join(LOG_SUFFIXES)} file", file=path)
    if path.suffix == ".csv":
        records = _parse_csv(path, to_ours, names)
    else:
        records = _parse_jsonl(path, to_ours)

    validator = _SessionValidator(path, names, product_ids)
    sessions, report = validate_rows(records, validator.validate, path, on_bad_row, progress)
    if not sessions:
        raise SearchLogError(f"no usable sessions ({report.summary()})", file=path,
                             reason="no_sessions")
    return SearchLog(source=path, sessions=sessions, report=report)


def query_key(query: str) -> str:
    """Queries count as the same when they differ only in case and spacing (the unseen-query
    share and the position-bias estimate both group queries by this key)."""
    return " ".join(query.casefold().split())


@dataclass
class TimeSplit:
    """Sessions split on UTC day boundaries, earliest days first."""

    train: list[Session]
    validation: list[Session]
    test: list[Session]
    days: dict[str, list[date]]  # split name -> its days, in order
    unseen_query_share: float | None  # None when the test split is empty

    def splits(self) -> dict[str, list[Session]]:
        return {"train": self.train, "validation": self.validation, "test": self.test}

    def with_training_days(self, first: date | None = None, last: date | None = None) -> "TimeSplit":
        """The same split training only on days `first`..`last` (inclusive; None: open), e.g. the
        new days of a feedback round; validation and test are unchanged, and the unseen-query
        share is recomputed against the training days kept."""
        kept_days = [day for day in self.days["train"]
                     if (first is None or day >= first) and (last is None or day <= last)]
        if not kept_days:
            raise ValueError(f"no training day of the log lies in {first or '...'} to "
                             f"{last or '...'} (training days: {self.days['train'][0]} to "
                             f"{self.days['train'][-1]})" if self.days["train"] else
                             "the log has no training days")
        kept = set(kept_days)
        train = [s for s in self.train if s.day in kept]
        return TimeSplit(train, self.validation, self.test,
                         {**self.days, "train": kept_days}, _unseen_share(train, self.test))


def split_by_time(log: SearchLog, fractions: tuple[float, float, float] = DEFAULT_SPLIT) -> TimeSplit:
    """Splits the log into train / validation / test by time, whole UTC days to each.

    Evaluation on later days than training is what deployment sees (new queries, new trends), so
    no day is shared: each cut is the day boundary whose count of earlier sessions is closest to
    the fraction's share of all sessions (ties: the earlier boundary). With few days a split can
    be empty. The unseen-query share is the share of test sessions whose query (case and spacing
    ignored) no training session typed.
    """
    if len(fractions) != 3 or any(f < 0 for f in fractions) or abs(sum(fractions) - 1) > 1e-6:
        raise ValueError(f"fractions must be three non-negative numbers summing to 1 "
                         f"(train, validation, test), got {tuple(fractions)}")
    by_day: dict[date, list[Session]] = {}
    for session in sorted(log.sessions, key=lambda s: s.timestamp):
        by_day.setdefault(session.day, []).append(session)
    days = sorted(by_day)
    before = [0]  # before[k]: sessions on days[:k]
    for day in days:
        before.append(before[-1] + len(by_day[day]))
    total = before[-1]

    def cut(share: float, low: int) -> int:
        target = share * total
        return min(range(low, len(days) + 1), key=lambda k: (abs(before[k] - target), k))

    first = cut(fractions[0], 0)
    second = cut(fractions[0] + fractions[1], first)
    parts = (days[:first], days[first:second], days[second:])
    lists = [[s for day in part for s in by_day[day]] for part in parts]
    train, validation, test = lists
    return TimeSplit(train, validation, test, dict(zip(SPLIT_NAMES, map(list, parts))),
                     _unseen_share(train, test))


def _unseen_share(train: list[Session], test: list[Session]) -> float | None:
    """Share of test sessions whose query (case and spacing ignored) no training session typed."""
    seen = {query_key(s.query) for s in train}
    return (sum(query_key(s.query) not in seen for s in test) / len(test)) if test else None
