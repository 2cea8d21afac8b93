"""Judged-query reading: every bad-line case under both policies, and the writer's round trip."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tfmmsearch.data.judgments import (
    JudgedQuery,
    JudgmentsError,
    read_judgments,
    write_judgments,
)

CATALOG_IDS = {"p1", "p2", "p3"}


def _judged(n: int, **changes) -> dict:
    record = {"query": f"red shirt {n}", "judgments": {"p1": 2, "p2": 0, "p3": 1}}
    record.update(changes)
    return record


def _write_lines(path: Path, records) -> Path:
    """Records are dicts (written as JSON), raw strings or raw bytes (written as they are)."""
    lines = [r if isinstance(r, bytes) else (r if isinstance(r, str) else json.dumps(r)).encode()
             for r in records]
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def _without(record: dict, name: str) -> dict:
    return {k: v for k, v in record.items() if k != name}


# Each case: the third line is bad, a good one follows; (record, reason, field).
CASES = {
    "malformed_json": ('{"query": "red", "judgments": ', "invalid_json", None),
    "not_an_object": ('["red", {"p1": 1}]', "invalid_json", None),
    "not_utf8": (b'{"query": "r\xffd", "judgments": {"p1": 1}}', "non_utf8", None),
    "missing_query": (_without(_judged(3), "query"), "missing_field", "query"),
    "missing_judgments": (_without(_judged(3), "judgments"), "missing_field", "judgments"),
    "query_not_a_string": (_judged(3, query=["red"]), "wrong_type", "query"),
    "empty_query": (_judged(3, query=" \t "), "empty_query", "query"),
    "judgments_not_an_object": (_judged(3, judgments=["p1"]), "wrong_type", "judgments"),
    "negative_grade": (_judged(3, judgments={"p1": 2, "p2": -1}), "bad_grade", "judgments"),
    "fractional_grade": (_judged(3, judgments={"p1": 1.5}), "bad_grade", "judgments"),
    "bool_grade": (_judged(3, judgments={"p1": True}), "bad_grade", "judgments"),
    "string_grade": (_judged(3, judgments={"p1": "2"}), "bad_grade", "judgments"),
    "null_grade": (_judged(3, judgments={"p1": None}), "bad_grade", "judgments"),
    "empty_product_id": (_judged(3, judgments={"p1": 1, " ": 1}), "empty_id", "judgments"),
    "product_id_twice": (_judged(3, judgments={"p1": 1, " p1": 2}), "duplicate_id", "judgments"),
    "unknown_product": (_judged(3, judgments={"p1": 1, "zz": 0}), "unknown_product", "judgments"),
    "no_positive_grade": (_judged(3, judgments={"p1": 0, "p2": 0}), "no_relevant", "judgments"),
    "nothing_judged": (_judged(3, judgments={}), "no_relevant", "judgments"),
    "duplicate_query": (_judged(3, query="  RED   Shirt 1 "), "duplicate_query", "query"),
}


def _file_with_bad_line(tmp_path: Path, bad) -> Path:
    return _write_lines(tmp_path / "judged.jsonl", [_judged(1), _judged(2), bad, _judged(4)])


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_line_raises_naming_file_line_and_field(tmp_path, case):
    bad, reason, field = CASES[case]
    path = _file_with_bad_line(tmp_path, bad)
    with pytest.raises(JudgmentsError) as caught:
        read_judgments(path, product_ids=CATALOG_IDS, on_bad_row="error")
    message = str(caught.value)
    assert message.startswith(f"{path}, line 3")
    assert (caught.value.reason, caught.value.row, caught.value.field) == (reason, 3, field)
    if field is not None:
        assert f"field {field!r}" in message


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_line_is_skipped_and_counted(tmp_path, case):
    bad, reason, _ = CASES[case]
    judged = read_judgments(_file_with_bad_line(tmp_path, bad), product_ids=CATALOG_IDS,
                            on_bad_row="skip")
    assert [(q.query, q.line) for q in judged.queries] == [
        ("red shirt 1", 1), ("red shirt 2", 2), ("red shirt 4", 4)]
    assert (judged.report.total_rows, judged.report.ok, dict(judged.report.skipped)) == (
        4, 3, {reason: 1})
    assert len(judged.report.examples) == 1 and "line 3" in judged.report.examples[0]


@pytest.mark.parametrize("case, words", [
    ("negative_grade", "grade of 'p2' must be an integer >= 0, got -1"),
    ("bool_grade", "grade of 'p1' must be an integer >= 0, got true"),
    ("unknown_product", "1 product id(s) not in the catalog, e.g. 'zz'"),
    ("duplicate_query", "duplicate query 'RED   Shirt 1' (first seen at line 1"),
])
def test_messages_say_which_product_or_line(tmp_path, case, words):
    with pytest.raises(JudgmentsError) as caught:
        read_judgments(_file_with_bad_line(tmp_path, CASES[case][0]), product_ids=CATALOG_IDS)
    assert words in str(caught.value)


def test_product_ids_are_only_checked_against_a_catalog_when_given(tmp_path):
    bad, _, _ = CASES["unknown_product"]
    judged = read_judgments(_file_with_bad_line(tmp_path, bad))
    assert judged.queries[2].grades == {"p1": 1, "zz": 0}


def test_a_skipped_line_does_not_claim_its_query(tmp_path):
    # Line 1 is bad (a fractional grade) and holds the query line 2 repeats.
    path = _write_lines(tmp_path / "judged.jsonl", [
        _judged(1, judgments={"p1": 0.5}), _judged(1, query="Red shirt 1")])
    judged = read_judgments(path, on_bad_row="skip")
    assert [(q.query, q.line) for q in judged.queries] == [("Red shirt 1", 2)]
    assert dict(judged.report.skipped) == {"bad_grade": 1}


def test_values_are_stripped_and_lines_are_physical(tmp_path):
    path = _write_lines(tmp_path / "judged.jsonl", [
        "", _judged(1, query="  Navy Tee ", judgments={" p2 ": 3, "p1": 0}, note="judge A")])
    (judged,) = read_judgments(path).queries
    assert (judged.query, judged.grades, judged.line) == ("Navy Tee", {"p2": 3, "p1": 0}, 2)


def test_unusable_files_fail_whatever_the_policy(tmp_path):
    with pytest.raises(JudgmentsError, match="judgments file not found"):
        read_judgments(tmp_path / "none.jsonl", on_bad_row="skip")
    path = _write_lines(tmp_path / "judged.jsonl", [_judged(1, judgments={"p1": 0})])
    with pytest.raises(JudgmentsError, match=r"no usable judged queries \(read 1 rows: 0 ok"):
        read_judgments(path, on_bad_row="skip")
    with pytest.raises(ValueError, match="on_bad_row must be one of"):
        read_judgments(path, on_bad_row="ignore")


def test_write_then_read_round_trips(tmp_path):
    queries = [JudgedQuery("red shirt", {"p1": 3, "p2": 0}, 1),
               JudgedQuery("čaj ☕", {"p3": 1}, 2)]
    path = write_judgments(tmp_path / "judged.jsonl", queries)
    assert path == tmp_path / "judged.jsonl"
    judged = read_judgments(path)
    assert judged.queries == queries
    assert "čaj ☕" in path.read_text(encoding="utf-8")  # written as text, not \u escapes
    assert [p.name for p in tmp_path.iterdir()] == ["judged.jsonl"]  # no temporary file left


def test_write_refuses_what_the_reader_refuses_and_keeps_the_old_file(tmp_path):
    path = write_judgments(tmp_path / "judged.jsonl", [JudgedQuery("red shirt", {"p1": 1})])
    before = path.read_bytes()
    bad = [JudgedQuery("red shirt", {"p1": 1}), JudgedQuery("Red  Shirt", {"p2": 2})]
    with pytest.raises(JudgmentsError, match=r"judged\.jsonl, line 2, field 'query': duplicate"):
        write_judgments(path, bad)
    with pytest.raises(JudgmentsError, match=r"line 1, field 'judgments'.*must be a string"):
        write_judgments(path, [JudgedQuery("red shirt", {7: 1})])
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["judged.jsonl"]
