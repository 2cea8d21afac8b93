"""Evaluation results as tables: markdown for RESULTS.md and READMEs, aligned plain text for the CLI.

Rows are dicts {"system": name, "<task>": {metric: value}}: what `evaluate_all` returns and
what a benchmark writes to JSON, so a table can be rebuilt from saved results. A task that was
not run shows as "-". Judged tasks ("judged", "judged:<subset>") get their own columns after
the protocol's; a table of judged tasks only leaves the protocol's empty columns out.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from tfmmsearch.evaluation.judged import is_judged_task
from tfmmsearch.evaluation.protocol import FULL, IMAGE_ONLY, TITLE_TO_IMAGE, TASKS

# (task, metric key, column header) of the protocol tasks
COLUMNS = (
    (FULL, "ndcg@10", "full NDCG@10"),
    (FULL, "recall@100", "full R@100"),
    (FULL, "mrr", "full MRR"),
    (IMAGE_ONLY, "ndcg@10", "image_only NDCG@10"),
    (IMAGE_ONLY, "recall@100", "image_only R@100"),
    (IMAGE_ONLY, "mrr", "image_only MRR"),
    (TITLE_TO_IMAGE, "recall@1", "t2i R@1"),
    (TITLE_TO_IMAGE, "recall@10", "t2i R@10"),
    (TITLE_TO_IMAGE, "mrr", "t2i MRR"),
)

# (metric key, header suffix) of every judged task
JUDGED_METRICS = (("ndcg@10", "NDCG@10"), ("recall@100", "R@100"), ("mrr", "MRR"))

RowLike = Mapping  # an EvaluationRow is one


def _name_and_results(row: RowLike) -> tuple[str, Mapping]:
    if isinstance(row, Mapping) and "system" in row:
        return str(row["system"]), {task: values for task, values in row.items() if task != "system"}
    raise TypeError(f"a result row must be a mapping with a 'system' key, got {row!r}")


def _judged_tasks(rows: Sequence[RowLike]) -> list[str]:
    """The judged tasks any row holds, in first-seen order."""
    tasks: dict[str, None] = {}
    for row in rows:
        tasks.update((task, None) for task in _name_and_results(row)[1] if is_judged_task(task))
    return list(tasks)


def _columns(rows: Sequence[RowLike]) -> list[tuple[str, str, str]]:
    judged = _judged_tasks(rows)
    ran_protocol = any(task in TASKS for row in rows for task in _name_and_results(row)[1])
    protocol = list(COLUMNS) if ran_protocol or not judged else []
    return protocol + [(task, metric, f"{task} {title}") for task in judged
                       for metric, title in JUDGED_METRICS]


def _cell(results: Mapping, task: str, metric: str, digits: int) -> str:
    value = results.get(task, {}).get(metric)
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.{digits}f}"


def _cells(rows: Sequence[RowLike], columns, digits: int) -> list[list[str]]:
    table = []
    for row in rows:
        name, results = _name_and_results(row)
        table.append([name] + [_cell(results, task, metric, digits) for task, metric, _ in columns])
    return table


def markdown_table(rows: Sequence[RowLike], digits: int = 3) -> str:
    """A GitHub markdown table, one line per system."""
    columns = _columns(rows)
    header = ["system"] + [title for _, _, title in columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for cells in _cells(rows, columns, digits):
        lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    return "\n".join(lines)


def counts_lines(rows: Sequence[RowLike]) -> list[str]:
    """How many queries each task used (the same for every system), and what was left out."""
    if not rows:
        return []
    _, results = _name_and_results(rows[0])
    lines = []
    for task in (FULL, IMAGE_ONLY):
        if task in results:
            values = results[task]
            lines.append(f"{task}: {values.get('num_queries', '?')} queries "
                         f"({values.get('num_dropped', 0)} dropped: no grade-2 product)")
    if TITLE_TO_IMAGE in results:
        values = results[TITLE_TO_IMAGE]
        lines.append(f"{TITLE_TO_IMAGE}: {values.get('num_queries', '?')} queries "
                     f"({values.get('skipped', 0)} products skipped: no title or no image)")
    for task in _judged_tasks(rows[:1]):
        values = results[task]
        lines.append(f"{task}: {values.get('num_queries', '?')} queries "
                     f"({values.get('num_dropped', 0)} dropped: no product of grade >= "
                     f"{values.get('relevant_grade', '?')} in the catalog); "
                     f"{values.get('missing_products', 0)} judged products not in the catalog "
                     f"({values.get('missing_judgments', 0)} judgments)")
    return lines


def text_table(rows: Sequence[RowLike], digits: int = 3) -> str:
    """Aligned plain-text columns for a terminal, followed by the query counts."""
    columns = _columns(rows)
    header = ["system"] + [title for _, _, title in columns]
    table = [header] + _cells(rows, columns, digits)
    widths = [max(len(line[column]) for line in table) for column in range(len(header))]
    lines = []
    for index, line in enumerate(table):
        cells = [line[0].ljust(widths[0])] + [cell.rjust(width) for cell, width in zip(line[1:], widths[1:])]
        lines.append("  ".join(cells).rstrip())
        if index == 0:
            lines.append("  ".join("-" * width for width in widths))
    return "\n".join(lines + counts_lines(rows))
