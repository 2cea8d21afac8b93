"""Reading and writing human-judged queries: a shop's own relevance grades for its queries.

A judged set is JSONL, one query per line: `{"query": "red shirt", "judgments": {"p1": 2,
"p7": 0}}`. Grades are integers >= 0 (binary 0/1, or graded such as 0..3); a product the line
does not name is unjudged and counts as grade 0. Evaluation trusts every grade, so each line is
checked here with the catalog's policies: `on_bad_row="error"` raises `JudgmentsError` at the
first bad line, naming file, line and field; `"skip"` counts bad lines by reason in a
`ReadReport` and logs the first few. Other keys on a line (a note, a judge's name) are ignored.

A query is judged once: two lines whose queries differ only in case and spacing are a
duplicate, since evaluation could not tell which grades to use. A query with no grade above 0
is refused too: nothing in it can be found, so every metric would score it 0 whatever the
system does. Line numbers are physical lines of the file.
"""

from __future__ import annotations

import json
import os
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from tfmmsearch.contract import has_text
from tfmmsearch.data.catalog import (
    BAD_ROW_POLICIES,
    DUPLICATE_ID,
    EMPTY_ID,
    MISSING_FIELD,
    json_objects,
    validate_rows,
)
from tfmmsearch.data.schema import CatalogError, ReadReport
from tfmmsearch.data.search_log import EMPTY_QUERY, UNKNOWN_PRODUCT, WRONG_TYPE, query_key

JUDGMENT_FIELDS = ("query", "judgments")

# Reasons a line can be rejected (besides the shared ones imported above).
BAD_GRADE = "bad_grade"
DUPLICATE_QUERY = "duplicate_query"
NO_RELEVANT = "no_relevant"


class JudgmentsError(CatalogError):
    """Bad judged-query input: the catalog's error, counting physical lines instead of rows."""

    ROW_WORD = "line"


@dataclass(frozen=True)
class JudgedQuery:
    """One judged query: product id -> grade (unjudged products are grade 0)."""

    query: str
    grades: dict[str, int] = field(hash=False)
    line: int = 0  # physical line in the source file


@dataclass
class Judgments:
    """Validated judged queries, in file order, with the read report."""

    source: Path
    queries: list[JudgedQuery]
    report: ReadReport = field(default_factory=ReadReport)

    def __len__(self) -> int:
        return len(self.queries)


def _is_grade(value) -> bool:
    """An integer >= 0; JSON true/false parse as bools, which are ints to Python but not grades."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


class _JudgmentValidator:
    """Turns parsed lines into JudgedQuery, or a JudgmentsError naming line and field."""

    def __init__(self, source: Path, product_ids: Collection[str] | None):
        self.source = source
        self.product_ids = None if product_ids is None else set(product_ids)
        self.line_of_query: dict[str, int] = {}  # query key -> line of the query that holds it

    def _error(self, line: int, message: str, name: str | None, reason: str) -> JudgmentsError:
        return JudgmentsError(message, file=self.source, row=line, field=name, reason=reason)

    def _grades(self, line: int, judgments) -> dict[str, int]:
        if not isinstance(judgments, dict):
            raise self._error(line, "must be an object of product id -> grade, got "
                                    f"{json.dumps(judgments, ensure_ascii=False)[:80]}",
                              "judgments", WRONG_TYPE)
        grades: dict[str, int] = {}
        for raw_id, grade in judgments.items():
            if not isinstance(raw_id, str):  # JSON keys always are; a writer's may not be
                raise self._error(line, f"product id {raw_id!r} must be a string", "judgments",
                                  WRONG_TYPE)
            product_id = raw_id.strip()
            if not product_id:
                raise self._error(line, f"product id {raw_id!r} is empty", "judgments", EMPTY_ID)
            if product_id in grades:
                raise self._error(line, f"product id {product_id!r} is judged twice", "judgments",
                                  DUPLICATE_ID)
            if not _is_grade(grade):
                raise self._error(line, f"grade of {product_id!r} must be an integer >= 0, got "
                                        f"{json.dumps(grade, ensure_ascii=False)[:40]}",
                                  "judgments", BAD_GRADE)
            grades[product_id] = grade
        return grades

    def validate(self, parsed: tuple[int, dict | None, str | None, str | None]) -> JudgedQuery:
        line, values, problem, reason = parsed
        if values is None:
            raise self._error(line, problem, None, reason)
        for name in JUDGMENT_FIELDS:
            if name not in values:
                raise self._error(line, "required field is missing", name, MISSING_FIELD)
        query = values["query"]
        if not isinstance(query, str):
            raise self._error(line, f"must be a string, got {query!r}", "query", WRONG_TYPE)
        if not has_text(query):
            raise self._error(line, "query is empty", "query", EMPTY_QUERY)
        grades = self._grades(line, values["judgments"])
        if self.product_ids is not None:
            unknown = [product_id for product_id in grades if product_id not in self.product_ids]
            if unknown:
                raise self._error(line, f"{len(unknown)} product id(s) not in the catalog, e.g. "
                                        f"{unknown[0]!r}", "judgments", UNKNOWN_PRODUCT)
        if not any(grades.values()):
            raise self._error(line, "no product is graded above 0, so nothing can be found for "
                                    "this query", "judgments", NO_RELEVANT)
        key = query_key(query)
        first_line = self.line_of_query.get(key)
        if first_line is not None:
            raise self._error(line, f"duplicate query {query.strip()!r} (first seen at line "
                                    f"{first_line}; case and spacing are ignored)", "query",
                              DUPLICATE_QUERY)
        self.line_of_query[key] = line
        return JudgedQuery(query.strip(), grades, line)


def read_judgments(path: str | Path, product_ids: Collection[str] | None = None,
                   on_bad_row: str = "error", progress: bool = False) -> Judgments:
    """Reads and validates a judged-query file (see the module docstring).

    `product_ids` (e.g. a catalog's ids) makes a judged id the catalog lacks a bad line;
    without it such ids are kept, and evaluation counts them as missing from its catalog.
    Product ids and queries are stripped of surrounding whitespace. Only a line that passes
    every check claims its query, so under "skip" a bad line does not hide a later good one.
    A missing file, or one with no usable query, raises whatever the policy.
    """
    if on_bad_row not in BAD_ROW_POLICIES:
        raise ValueError(f"on_bad_row must be one of {BAD_ROW_POLICIES}, got {on_bad_row!r}")
    path = Path(path)
    if not path.is_file():
        raise JudgmentsError("judgments file not found (or not a file)", file=path)
    validator = _JudgmentValidator(path, product_ids)
    queries, report = validate_rows(json_objects(path), validator.validate, path, on_bad_row,
                                    progress)
    if not queries:
        raise JudgmentsError(f"no usable judged queries ({report.summary()})", file=path,
                             reason="no_queries")
    return Judgments(source=path, queries=queries, report=report)


def write_judgments(path: str | Path, queries: Iterable[JudgedQuery]) -> Path:
    """Writes judged queries in the format `read_judgments` reads, and returns the path.

    Each query passes the reader's checks first (a JudgmentsError names the line it would
    have), so a written set always reads back. The file is written to a temporary name beside
    it and renamed, so a reader never sees half a file and a failure leaves the old one.
    """
    path = Path(path)
    validator = _JudgmentValidator(path, product_ids=None)
    lines = []
    for line, judged in enumerate(queries, start=1):
        record = {"query": judged.query, "judgments": dict(judged.grades)}
        validator.validate((line, record, None, None))
        lines.append(json.dumps(record, ensure_ascii=False) + "\n")
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with tmp.open("w", encoding="utf-8") as handle:
            handle.writelines(lines)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
