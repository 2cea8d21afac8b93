"""The judged task: search quality on a shop's human-judged queries, over its whole catalog.

The protocol tasks grade products from catalog attributes; a judged set (`data.judgments`)
grades them by hand. Each system ranks every product it is given (title and image, as in
`full`) for each judged query, and the protocol's metric functions score the ranking:
  - NDCG@10 with gain 2^grade - 1 and the ideal DCG from all of the query's judged grades in
    the catalog; an unjudged product is grade 0, in the ranking and in the ideal;
  - Recall@100 of the relevant products over min(#relevant, 100), and MRR of the first
    relevant one in the top 100. Relevant is grade >= `relevant_grade`, 1 by default: binary
    and graded sets alike use 0 for "not relevant", and a stricter cut is one argument away.
A judged product the catalog lacks cannot be ranked: it is left out of the ideal and counted
per task (`missing_products` distinct ids, `missing_judgments` query-product pairs). A query
whose relevant products are all missing cannot be scored: it is dropped and counted in
`num_dropped`, as the protocol drops queries without a grade-2 product.

Subsets ("queries naming a brand", "queries unseen in training") are further tasks
`judged:<name>` over the same rankings, so each system scores the judged queries once.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from tfmmsearch.contract import has_text
from tfmmsearch.data.judgments import JudgedQuery, Judgments
from tfmmsearch.data.search_log import query_key
from tfmmsearch.evaluation.metrics import MetricResult, attribute_metrics
from tfmmsearch.evaluation.protocol import FULL, EvaluationRow, SearchSystem, score_system

logger = logging.getLogger(__name__)

JUDGED = "judged"
JUDGED_RELEVANT_GRADE = 1

Subsets = Mapping[str, Collection[str]]  # subset name -> the texts of its judged queries


def judged_task(subset: str | None = None) -> str:
    """The task name of all judged queries ("judged") or of one subset ("judged:<subset>")."""
    return JUDGED if subset is None else f"{JUDGED}:{subset}"


def is_judged_task(task: str) -> bool:
    return task == JUDGED or task.startswith(f"{JUDGED}:")


@dataclass(frozen=True)
class JudgedGrades:
    """Judged queries laid over one catalog: their grade matrix and what the catalog lacks."""

    queries: list[JudgedQuery]
    matrix: np.ndarray  # [Q, P] grades, 0 for unjudged products
    missing: list[tuple[str, ...]]  # per query: its judged product ids the catalog lacks


def judged_grades(queries: Sequence[JudgedQuery], product_ids: Sequence[str]) -> JudgedGrades:
    """The [Q, P] grade matrix of `queries` over the products `product_ids` (in that order)."""
    column: dict[str, int] = {}
    for index, product_id in enumerate(product_ids):
        if column.setdefault(product_id, index) != index:
            raise ValueError(f"product id {product_id!r} appears twice among the evaluated "
                             "products")
    queries = list(queries)
    matrix = np.zeros((len(queries), len(product_ids)), dtype=np.int64)
    missing = []
    for row, judged in enumerate(queries):
        absent = []
        for product_id, grade in judged.grades.items():
            if product_id in column:
                matrix[row, column[product_id]] = grade
            else:
                absent.append(product_id)
        missing.append(tuple(absent))
    return JudgedGrades(queries, matrix, missing)


def _task_rows(queries: Sequence[JudgedQuery], subsets: Subsets | None) -> dict[str, np.ndarray]:
    """Task name -> its query rows: all for "judged", then each subset's (case and spacing of
    a subset's query texts ignored, as the reader does). A text that is not a judged query is
    an error, not an empty match."""
    row_of_key = {query_key(judged.query): row for row, judged in enumerate(queries)}
    tasks = {JUDGED: np.arange(len(queries))}
    for name, texts in (subsets or {}).items():
        if not isinstance(name, str) or not has_text(name):
            raise ValueError(f"a subset needs a name, got {name!r}")
        if isinstance(texts, str):
            raise TypeError(f"subset {name!r} must be a collection of query texts, not one string")
        rows = set()
        for text in texts:
            row = row_of_key.get(query_key(text)) if isinstance(text, str) else None
            if row is None:
                raise ValueError(f"subset {name!r}: {text!r} is not a judged query")
            rows.add(row)
        tasks[judged_task(name)] = np.array(sorted(rows), dtype=np.int64)
    return tasks


def _log_missing(grades: JudgedGrades, num_products: int) -> None:
    absent = [product_id for ids in grades.missing for product_id in ids]
    if absent:
        logger.warning("%d judged products (%d judgments) are not among the %d evaluated "
                       "products, e.g. %r: they cannot be ranked and are left out of the ideal "
                       "ranking", len(set(absent)), len(absent), num_products, absent[0])


def _task_result(per_query: Mapping[str, np.ndarray], answerable: np.ndarray, rows: np.ndarray,
                 grades: JudgedGrades, relevant_grade: int) -> dict:
    """One task's means over its scorable rows, and the counts of what it could not score."""
    scored = rows[answerable[rows]]
    means = MetricResult({name: values[scored] for name, values in per_query.items()}).means
    missing = [grades.missing[row] for row in rows]
    return {**means, "num_queries": len(scored), "num_dropped": len(rows) - len(scored),
            "relevant_grade": relevant_grade,
            "missing_products": len({product_id for ids in missing for product_id in ids}),
            "missing_judgments": sum(map(len, missing))}


def evaluate_judged(systems: Sequence[SearchSystem], judgments: Judgments | Sequence[JudgedQuery],
                    product_ids: Sequence[str], titles: Sequence[str],
                    image_paths: Sequence[str | None], subsets: Subsets | None = None,
                    relevant_grade: int = JUDGED_RELEVANT_GRADE) -> list[EvaluationRow]:
    """Runs the judged task (and one `judged:<name>` task per subset) for each system.

    Products are `product_ids[i]` with `titles[i]` and `image_paths[i]`: the whole catalog a
    shop's queries are about. Returns one row per system, {"system": name, "judged": {...},
    "judged:<name>": {...}}, each task holding ndcg@10, recall@100, mrr, num_queries,
    num_dropped, relevant_grade, missing_products and missing_judgments (module docstring).
    """
    if type(relevant_grade) is not int or relevant_grade < 1:  # bools are ints, not grades
        raise ValueError(f"relevant_grade must be an integer >= 1, got {relevant_grade!r}")
    if not len(product_ids) == len(titles) == len(image_paths):
        raise ValueError(f"product_ids ({len(product_ids)}), titles ({len(titles)}) and "
                         f"image_paths ({len(image_paths)}) must describe the same products")
    queries = judgments.queries if isinstance(judgments, Judgments) else list(judgments)
    grades = judged_grades(queries, product_ids)
    tasks = _task_rows(queries, subsets)
    _log_missing(grades, len(product_ids))
    answerable = (grades.matrix >= relevant_grade).any(axis=1)
    texts = [judged.query for judged, keep in zip(queries, answerable) if keep]
    titles, image_paths = list(titles), list(image_paths)
    rows = []
    for system in systems:
        if not isinstance(system, SearchSystem):
            raise TypeError(f"{system!r} is not a SearchSystem (needs `name` and `score(...)`)")
        scores = score_system(system, texts, titles, image_paths, FULL)
        result = attribute_metrics(scores, grades.matrix[answerable], relevant_grade=relevant_grade)
        per_query = {}
        for name, values in result.per_query.items():  # back to one value per judged query
            per_query[name] = np.full(len(queries), np.nan)
            per_query[name][answerable] = values
        rows.append(EvaluationRow(system.name, {
            task: _task_result(per_query, answerable, task_rows, grades, relevant_grade)
            for task, task_rows in tasks.items()}))
    return rows
