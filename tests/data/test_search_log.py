"""Search-log reading: every bad-session case under both policies, CSV = JSONL, the time split
on UTC day boundaries, and `tfmmsearch data validate-log` end to end."""

from __future__ import annotations

import csv
import json
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path

import pytest

from tfmmsearch.cli import main
from tfmmsearch.data.search_log import (
    SearchLogError,
    query_key,
    read_search_log,
    split_by_time,
)

SHOWN = ["p1", "p2", "p3"]


def _session(n: int, ts: str = "", **changes) -> dict:
    """Session n, at minute n of 2026-10-01 unless `ts` says otherwise."""
    record = {"session_id": f"s{n}", "timestamp": ts or f"2026-10-01T00:{n:02d}:00Z",
              "query": f"red shirt {n}", "shown": list(SHOWN), "clicked": ["p2"],
              "purchased": ["p2"]}
    record.update(changes)
    return record


def _write_jsonl(path: Path, records) -> Path:
    """Records are dicts (written as JSON) or raw strings (written as they are)."""
    lines = [r if isinstance(r, str) else json.dumps(r) for r in records]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _write_csv(path: Path, records, columns=("session_id", "timestamp", "query", "shown",
                                              "clicked", "purchased")) -> Path:
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(columns)
        for record in records:
            writer.writerow(" ".join(record[c]) if isinstance(record[c], list) else record[c]
                            for c in columns)
    return path


def _without(record: dict, name: str) -> dict:
    return {k: v for k, v in record.items() if k != name}


# Each case: the third record (line 3) is bad, a good one follows; (record, reason, field).
CASES = {
    "malformed_json": ('{"session_id": "s3", "query": ', "invalid_json", None),
    "not_an_object": ("[1, 2, 3]", "invalid_json", None),
    "missing_field": (_without(_session(3), "query"), "missing_field", "query"),
    "query_not_a_string": (_session(3, query=42), "wrong_type", "query"),
    "empty_query": (_session(3, query=" \t "), "empty_query", "query"),
    "empty_session_id": (_session(3, session_id=" "), "empty_id", "session_id"),
    "bad_timestamp": (_session(3, ts="yesterday"), "bad_timestamp", "timestamp"),
    "naive_timestamp": (_session(3, ts="2026-10-01T00:03:00"), "bad_timestamp", "timestamp"),
    "duplicate_session_id": (_session(3, session_id="s1"), "duplicate_id", "session_id"),
    "shown_not_a_list": (_session(3, shown="p1 p2"), "bad_product_list", "shown"),
    "clicked_not_strings": (_session(3, clicked=[2]), "bad_product_list", "clicked"),
    "purchased_not_a_list": (_session(3, purchased=None), "bad_product_list", "purchased"),
    "click_not_shown": (_session(3, clicked=["p9"], purchased=[]), "click_not_shown", "clicked"),
    "purchase_not_clicked": (_session(3, clicked=["p1"], purchased=["p3"]),
                             "purchase_not_clicked", "purchased"),
    "unknown_product": (_session(3, shown=["p1", "zz"], clicked=[], purchased=[]),
                        "unknown_product", "shown"),
    "out_of_order": (_session(3, ts="2026-09-30T23:00:00Z"), "out_of_order", "timestamp"),
}
CATALOG_IDS = {"p1", "p2", "p3"}


def _log_with_bad_line(tmp_path: Path, bad) -> Path:
    return _write_jsonl(tmp_path / "log.jsonl", [_session(1), _session(2), bad, _session(4)])


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_session_raises_naming_file_line_and_field(tmp_path, case):
    bad, reason, field = CASES[case]
    path = _log_with_bad_line(tmp_path, bad)
    with pytest.raises(SearchLogError) as caught:
        read_search_log(path, product_ids=CATALOG_IDS, on_bad_row="error")
    message = str(caught.value)
    assert message.startswith(f"{path}, line 3")
    assert caught.value.reason == reason and caught.value.row == 3
    assert caught.value.field == field
    if field is not None:
        assert f"field {field!r}" in message


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_session_is_skipped_and_counted(tmp_path, case):
    bad, reason, _ = CASES[case]
    log = read_search_log(_log_with_bad_line(tmp_path, bad), product_ids=CATALOG_IDS,
                          on_bad_row="skip")
    assert [s.session_id for s in log.sessions] == ["s1", "s2", "s4"]
    assert (log.report.total_rows, log.report.ok, dict(log.report.skipped)) == (4, 3, {reason: 1})
    assert len(log.report.examples) == 1 and "line 3" in log.report.examples[0]


def test_product_ids_are_only_checked_against_a_catalog_when_given(tmp_path):
    bad, _, _ = CASES["unknown_product"]
    assert len(read_search_log(_log_with_bad_line(tmp_path, bad))) == 4


def test_a_skipped_session_claims_no_id_and_does_not_advance_the_clock(tmp_path):
    # Line 2 is bad (empty query) with a late timestamp and the id that line 3 reuses.
    path = _write_jsonl(tmp_path / "log.jsonl", [
        _session(1), _session(2, ts="2026-10-01T00:59:00Z", query=""),
        _session(3, session_id="s2")])
    log = read_search_log(path, on_bad_row="skip")
    assert [(s.session_id, s.line) for s in log.sessions] == [("s1", 1), ("s2", 3)]
    assert dict(log.report.skipped) == {"empty_query": 1}


def test_session_values(tmp_path):
    path = _write_jsonl(tmp_path / "log.jsonl", ["", _session(1, ts="2026-10-01T02:30:00+02:00",
                                                              query="  Red Shirt ")])
    (session,) = read_search_log(path).sessions
    assert session.timestamp == datetime(2026, 10, 1, 0, 30, tzinfo=timezone.utc)
    assert session.timestamp.utcoffset().total_seconds() == 0
    assert (session.query, session.shown, session.clicked, session.purchased, session.line) == (
        "Red Shirt", ("p1", "p2", "p3"), ("p2",), ("p2",), 2)  # line 1 is blank


def test_csv_and_jsonl_read_the_same(tmp_path):
    records = [_session(1), _session(2, clicked=[], purchased=[]),
               _session(3, clicked=["p1", "p3"], purchased=["p3"])]
    from_jsonl = read_search_log(_write_jsonl(tmp_path / "log.jsonl", records))
    from_csv = read_search_log(_write_csv(tmp_path / "log.csv", records))
    assert [s.line for s in from_csv.sessions] == [2, 3, 4]  # the header is line 1
    assert [replace(s, line=0) for s in from_csv.sessions] == [
        replace(s, line=0) for s in from_jsonl.sessions]
    assert from_csv.sessions[1].clicked == ()


def test_csv_errors_name_the_physical_line(tmp_path):
    path = _write_csv(tmp_path / "log.csv", [_session(1), _session(2, clicked=["p7"])])
    with pytest.raises(SearchLogError, match=r"log\.csv, line 3, field 'clicked': 'p7' is not in "
                                             r"shown") as caught:
        read_search_log(path)
    assert caught.value.reason == "click_not_shown"


def test_csv_missing_column_fails_whatever_the_policy(tmp_path):
    path = _write_csv(tmp_path / "log.csv", [_session(1)],
                      columns=("session_id", "timestamp", "shown", "clicked", "purchased"))
    with pytest.raises(SearchLogError, match="missing required column.*query"):
        read_search_log(path, on_bad_row="skip")


def test_field_names_are_mapped_and_messages_keep_the_logs_names(tmp_path):
    renamed = [{("sid" if k == "session_id" else "q" if k == "query" else k): v
                for k, v in record.items()} for record in (_session(1), _session(2, query=""))]
    path = _write_jsonl(tmp_path / "log.jsonl", renamed)
    with pytest.raises(SearchLogError, match=r"line 2, field 'q': query is empty"):
        read_search_log(path, fields={"sid": "session_id", "q": "query"})
    log = read_search_log(path, fields={"sid": "session_id", "q": "query"}, on_bad_row="skip")
    assert [s.session_id for s in log.sessions] == ["s1"]
    with pytest.raises(ValueError, match="'sessionid' is not one of"):
        read_search_log(path, fields={"sid": "sessionid"})


def test_a_log_with_no_usable_session_fails(tmp_path):
    path = _write_jsonl(tmp_path / "log.jsonl", [_session(1, query="")])
    with pytest.raises(SearchLogError, match="no usable sessions"):
        read_search_log(path, on_bad_row="skip")


# --------------------------------------------------------------------------- the time split

# Sessions per day over ten October days (UTC): 20 sessions. The 80% cut lands where 16
# sessions lie before it (after day 7), the 90% cut where 18 do (after day 8).
DAY_COUNTS = [3, 1, 2, 4, 2, 3, 1, 2, 1, 1]
QUERIES_BY_DAY = {1: "dress", 9: "dress", 10: "Red  SHIRT"}  # day 10's is seen (day 2: red shirt)


def _daily_log(tmp_path: Path) -> Path:
    records, n = [], 0
    for day, count in enumerate(DAY_COUNTS, start=1):
        for k in range(count):
            n += 1
            # the last session of each day is at 23:59:59, the first of the next at 00:00:00
            clock = "23:59:59" if k == count - 1 else f"{k:02d}:00:00"
            query = QUERIES_BY_DAY.get(day, "red shirt" if day == 2 else f"q{day}")
            records.append(_session(n, ts=f"2026-10-{day:02d}T{clock}Z", query=query))
    return _write_jsonl(tmp_path / "log.jsonl", records)


def test_time_split_cuts_on_utc_day_boundaries(tmp_path):
    log = read_search_log(_daily_log(tmp_path))
    split = split_by_time(log)
    assert [len(split.train), len(split.validation), len(split.test)] == [16, 2, 2]
    assert [d.day for d in split.days["train"]] == list(range(1, 8))
    assert [d.day for d in split.days["validation"]] == [8]
    assert [d.day for d in split.days["test"]] == [9, 10]
    ids = [{s.session_id for s in part} for part in split.splits().values()]
    assert set.union(*ids) == {s.session_id for s in log.sessions}
    assert sum(map(len, ids)) == len(log)
    for part, days in zip(split.splits().values(), split.days.values()):
        assert {s.day for s in part} == set(days)
    # test: day 9 "dress" (trained on day 1) and day 10 "red shirt" (day 2, case/space aside)
    assert split.unseen_query_share == 0.0


def test_unseen_query_share_counts_test_sessions(tmp_path):
    log = read_search_log(_daily_log(tmp_path))
    split = split_by_time(log, (0.5, 0.2, 0.3))
    # before: 0,3,4,6,10,12,15,16,18,19,20 -> cuts at 10 (day 4) and 14 -> 15 (day 6)
    assert [[d.day for d in days] for days in split.days.values()] == [
        [1, 2, 3, 4], [5, 6], [7, 8, 9, 10]]
    # test sessions: q7, q8, q8, dress, Red SHIRT -> q7 and the two q8 are unseen
    assert split.unseen_query_share == pytest.approx(3 / 5)
    assert query_key("  Red \t SHIRT ") == query_key("red shirt") == "red shirt"


def test_time_split_refuses_bad_fractions(tmp_path):
    log = read_search_log(_daily_log(tmp_path))
    with pytest.raises(ValueError, match="summing to 1"):
        split_by_time(log, (0.8, 0.1, 0.2))


# --------------------------------------------------------------------------- the CLI


def _error_lines(err: str) -> list[str]:
    """The CLI's error lines (log lines aside); asserts there is no traceback."""
    assert "Traceback" not in err
    return [line for line in err.splitlines() if line.startswith("tfmmsearch: error: ")]


def test_validate_log_command_prints_report_days_split_and_unseen_share(tmp_path, capsys):
    assert main(["data", "validate-log", str(_daily_log(tmp_path))]) == 0
    out = capsys.readouterr().out
    assert "read 20 rows: 20 ok, 0 skipped" in out
    assert "days covered: 10 (2026-10-01 to 2026-10-10, UTC)" in out
    assert "train           16 sessions (7 days, 2026-10-01 to 2026-10-07)" in out
    assert "validation       2 sessions (1 days, 2026-10-08 to 2026-10-08)" in out
    assert "test             2 sessions (2 days, 2026-10-09 to 2026-10-10)" in out
    assert "unseen-query share: 0.000 (0 of 2 test sessions" in out


def test_validate_log_command_with_catalog_skips_and_reports(tmp_path, capsys):
    from tfmmsearch.data.catalog import write_catalog

    catalog = tmp_path / "catalog"
    write_catalog(catalog, [{"product_id": p, "title": f"shirt {p}", "image": ""}
                            for p in ("p1", "p2", "p3")])
    path = _log_with_bad_line(tmp_path, CASES["unknown_product"][0])
    assert main(["data", "validate-log", str(path), "--catalog", str(catalog)]) == 1
    (error,) = _error_lines(capsys.readouterr().err)
    assert f"{path}, line 3, field 'shown'" in error and "not in the catalog" in error

    assert main(["data", "validate-log", str(path), "--catalog", str(catalog),
                 "--on-bad-row", "skip"]) == 0
    out = capsys.readouterr().out
    assert "catalog " in out and "3 product ids" in out
    assert "read 4 rows: 3 ok, 1 skipped (unknown_product: 1)" in out
    assert "  skipped: " in out and "line 3" in out


@pytest.mark.parametrize("args, message", [
    (["missing.jsonl"], "search log not found"),
    (["LOG", "--field", "sid"], "expected LOG_NAME=OUR_NAME"),
])
def test_validate_log_command_ordinary_mistakes_exit_1_in_one_line(tmp_path, capsys, args,
                                                                   message):
    log = str(_write_jsonl(tmp_path / "log.jsonl", [_session(1)]))
    args = [log if a == "LOG" else str(tmp_path / a) if a.endswith(".jsonl") else a for a in args]
    assert main(["data", "validate-log"] + args) == 1
    (error,) = _error_lines(capsys.readouterr().err)
    assert message in error


# --------------------------------------------------------------------------- the real log


@pytest.mark.slow
def test_the_myntra_search_log_reads_clean_against_its_catalog(myntra_dir):
    from tfmmsearch.data.catalog import read_catalog

    catalog = read_catalog(myntra_dir, check_images=False)
    log = read_search_log(myntra_dir / "search_log.jsonl",
                          product_ids=[p.product_id for p in catalog.products])
    assert (len(log), log.report.num_skipped, len(log.days())) == (60_000, 0, 61)
    split = split_by_time(log)
    assert sum(map(len, split.splits().values())) == 60_000
    assert max(split.days["train"]) < min(split.days["validation"]) <= max(
        split.days["validation"]) < min(split.days["test"])
