"""The three tasks of benchmark/PROTOCOL.md, run for any search system.

A system is anything with a `name` and a `score(query_texts, titles, image_paths, item_mode)`
method returning a [Q, P] score matrix: a trained model, BM25, a zero-shot encoder. The
evaluator, not the system, decides what the item side holds: in `image_only` mode (and for
title_to_image) it passes empty titles, so a system cannot peek at a title it should not
see and a text-only system honestly scores nothing there.

Tasks:
- `full`: attribute queries against items with title and image: NDCG@10, Recall@100, MRR.
- `image_only`: the same queries against items whose titles are blanked.
- `title_to_image`: each product's title as the query against all products indexed by image
  only; the product itself is the one relevant item: Recall@1, Recall@10, MRR.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Protocol, runtime_checkable

import numpy as np

from tfmmsearch.contract import has_text
from tfmmsearch.data.bm25 import B, K1, BM25Index
from tfmmsearch.evaluation.metrics import RELEVANT_GRADE, attribute_metrics, identity_metrics

logger = logging.getLogger(__name__)

FULL = "full"
IMAGE_ONLY = "image_only"
TITLE_TO_IMAGE = "title_to_image"
ITEM_MODES = (FULL, IMAGE_ONLY)
TASKS = (FULL, IMAGE_ONLY, TITLE_TO_IMAGE)

Grades = np.ndarray | Callable[[], np.ndarray]


@runtime_checkable
class SearchSystem(Protocol):
    """What the evaluator needs from a search system.

    `score` ranks every given item for every query: [len(query_texts), len(titles)], higher is
    better. `item_mode` says how items are indexed ("full" or "image_only"); in image_only the
    titles it receives are already empty strings. `image_paths[i]` is "" (or None) for an item
    without a photo. A system that embeds items may cache them by (titles, image_paths) across
    calls.
    """

    name: str

    def score(self, query_texts: list[str], titles: list[str], image_paths: list[str | None],
              item_mode: str) -> np.ndarray:
        ...


class BM25System:
    """Okapi BM25 over titles as a `SearchSystem`: it ignores images, so image-only items score 0."""

    def __init__(self, name: str = "BM25 over titles", k1: float = K1, b: float = B):
        self.name = name
        self.k1 = k1
        self.b = b

    def score(self, query_texts: list[str], titles: list[str], image_paths: list[str | None],
              item_mode: str) -> np.ndarray:
        return BM25Index(titles, k1=self.k1, b=self.b).score(query_texts)


def items_for_mode(titles: Sequence[str], item_mode: str) -> list[str]:
    """The titles a system may see in `item_mode`: as given for full, all empty for image_only."""
    if item_mode not in ITEM_MODES:
        raise ValueError(f"item_mode must be one of {', '.join(ITEM_MODES)}, got {item_mode!r}")
    return list(titles) if item_mode == FULL else [""] * len(titles)


def score_system(system: SearchSystem, query_texts: list[str], titles: list[str],
                 image_paths: list[str | None], item_mode: str) -> np.ndarray:
    """`system.score(...)`, checked (shape [Q, P], no NaN) and timed: every task scores
    through here."""
    started = time.perf_counter()
    scores = np.asarray(system.score(query_texts, titles, image_paths, item_mode))
    expected = (len(query_texts), len(titles))
    if scores.shape != expected:
        raise ValueError(f"system {system.name!r} returned scores of shape {scores.shape} in "
                         f"{item_mode} mode; expected {expected} ({expected[0]} queries x "
                         f"{expected[1]} products)")
    if np.issubdtype(scores.dtype, np.floating) and np.isnan(scores).any():
        raise ValueError(f"system {system.name!r} returned NaN scores in {item_mode} mode")
    logger.info("%s: scored %d queries x %d products (%s) in %.1f s", system.name, expected[0],
                expected[1], item_mode, time.perf_counter() - started)
    return scores


def _check_items(titles: Sequence[str], image_paths: Sequence[str | None]) -> None:
    if len(titles) != len(image_paths):
        raise ValueError(f"titles ({len(titles)}) and image_paths ({len(image_paths)}) must "
                         f"describe the same products")
    for index, title in enumerate(titles):
        if not isinstance(title, str):
            raise TypeError(f"title of product {index} must be a string (empty for none), "
                            f"got {type(title).__name__}")


def _resolve_grades(grades: Grades, num_queries: int, num_products: int) -> np.ndarray:
    matrix = np.asarray(grades() if callable(grades) else grades)
    if matrix.shape != (num_queries, num_products):
        raise ValueError(f"grades have shape {matrix.shape}; expected ({num_queries}, {num_products}) "
                         f"for {num_queries} queries x {num_products} products")
    return matrix


def evaluate_attribute_task(system: SearchSystem, query_texts: Sequence[str], grades: Grades,
                            titles: Sequence[str], image_paths: Sequence[str | None],
                            item_mode: str = FULL) -> dict[str, float]:
    """NDCG@10, Recall@100 and MRR of `system` on attribute queries in `item_mode`.

    `grades` is the [Q, P] relevance matrix (0/1/2), or a zero-argument callable building it.
    Queries without a grade-2 product are dropped, as the protocol says; the result counts
    them in `num_dropped` next to `num_queries` (the queries actually scored).
    """
    _check_items(titles, image_paths)
    query_texts = list(query_texts)
    matrix = _resolve_grades(grades, len(query_texts), len(titles))
    return _attribute_task(system, query_texts, matrix, list(titles), list(image_paths), item_mode)


def _attribute_task(system: SearchSystem, query_texts: list[str], grades: np.ndarray,
                    titles: list[str], image_paths: list[str | None], item_mode: str) -> dict[str, float]:
    visible_titles = items_for_mode(titles, item_mode)
    answerable = (grades >= RELEVANT_GRADE).any(axis=1)
    kept = [text for text, keep in zip(query_texts, answerable) if keep]
    scores = score_system(system, kept, visible_titles, image_paths, item_mode)
    result = attribute_metrics(scores, grades[answerable])
    return {**result.means, "num_queries": int(answerable.sum()),
            "num_dropped": int((~answerable).sum())}


def title_to_image_queries(titles: Sequence[str], image_paths: Sequence[str | None],
                           max_queries: int | None = None, seed: int = 0) -> tuple[np.ndarray, int]:
    """Indices of the products used as title_to_image queries, and how many were ineligible.

    A product needs a non-empty title (the query) and an image (what it is found by). With
    `max_queries`, a seeded sample of the eligible products, in catalog order.
    """
    _check_items(titles, image_paths)
    eligible = np.array([index for index, (title, image) in enumerate(zip(titles, image_paths))
                         if has_text(title) and image], dtype=np.int64)
    skipped = len(titles) - len(eligible)
    if max_queries is not None:
        if max_queries < 1:
            raise ValueError(f"max_queries must be at least 1, got {max_queries}")
        if max_queries < len(eligible):
            picked = np.random.default_rng(seed).choice(len(eligible), size=max_queries, replace=False)
            eligible = eligible[np.sort(picked)]
    return eligible, skipped


def evaluate_title_to_image(system: SearchSystem, titles: Sequence[str],
                            image_paths: Sequence[str | None], max_queries: int | None = None,
                            seed: int = 0) -> dict[str, float]:
    """Recall@1, Recall@10 and MRR of finding each product by its title among image-only items.

    Candidates are all products (titles blanked); products without a title or an image are
    not used as queries and are counted in `skipped`; `num_queries` is how many were used.
    """
    targets, skipped = title_to_image_queries(titles, image_paths, max_queries, seed)
    if skipped:
        logger.info("title_to_image: %d of %d products skipped (no title or no image)",
                    skipped, len(titles))
    query_texts = [titles[index] for index in targets]
    scores = score_system(system, query_texts, items_for_mode(titles, IMAGE_ONLY),
                          list(image_paths), IMAGE_ONLY)
    result = identity_metrics(scores, targets)
    return {**result.means, "num_queries": len(targets), "skipped": skipped}


class EvaluationRow(dict):
    """One system's results as a plain dict row: {"system": name, "<task>": {metric: value}}.

    A dict, so rows go to JSON and to the report tables as they are; `system` and `results`
    (task -> metrics, only the tasks that were run) name its parts.
    """

    def __init__(self, system: str, results: Mapping[str, Mapping[str, float]] | None = None):
        super().__init__(system=system)
        for task, values in (results or {}).items():
            self[task] = dict(values)

    @property
    def system(self) -> str:
        return self["system"]

    @property
    def results(self) -> dict[str, dict[str, float]]:
        return {task: values for task, values in self.items() if task != "system"}

    def to_dict(self) -> dict:
        """A plain-dict copy (JSON-ready)."""
        return {"system": self.system, **{task: dict(values) for task, values in self.results.items()}}


def evaluate_all(systems: Sequence[SearchSystem], query_texts: Sequence[str], grades: Grades,
                 titles: Sequence[str], image_paths: Sequence[str | None],
                 max_t2i_queries: int | None = None, *, tasks: Sequence[str] = TASKS,
                 seed: int = 0, title_to_image_max_queries: int | None = None) -> list[EvaluationRow]:
    """Runs the protocol tasks (full, image_only, title_to_image by default) for each system.

    Returns one dict row per system: {"system": name, "full": {...}, "image_only": {...},
    "title_to_image": {...}}. `max_t2i_queries` caps the title_to_image queries (a seeded
    sample); `title_to_image_max_queries` is the same setting under its older name.
    """
    if title_to_image_max_queries is not None:
        if max_t2i_queries is not None and max_t2i_queries != title_to_image_max_queries:
            raise ValueError("max_t2i_queries and title_to_image_max_queries disagree; pass one")
        max_t2i_queries = title_to_image_max_queries
    unknown = [task for task in tasks if task not in TASKS]
    if unknown:
        raise ValueError(f"unknown tasks {unknown}; tasks are {', '.join(TASKS)}")
    _check_items(titles, image_paths)
    titles, image_paths, query_texts = list(titles), list(image_paths), list(query_texts)
    matrix = None
    if any(task in ITEM_MODES for task in tasks):
        matrix = _resolve_grades(grades, len(query_texts), len(titles))
    rows = []
    for system in systems:
        if not isinstance(system, SearchSystem):
            raise TypeError(f"{system!r} is not a SearchSystem (needs `name` and `score(...)`)")
        row = EvaluationRow(system.name)
        for task in tasks:
            if task == TITLE_TO_IMAGE:
                row[task] = evaluate_title_to_image(system, titles, image_paths,
                                                    max_queries=max_t2i_queries, seed=seed)
            else:
                row[task] = _attribute_task(system, query_texts, matrix, titles, image_paths, task)
            logger.info("%s / %s: %s", system.name, task, _summary(row[task]))
        rows.append(row)
    return rows


def _summary(metrics: dict[str, float]) -> str:
    return ", ".join(f"{name} {value:.4f}" if isinstance(value, float) else f"{name} {value}"
                     for name, value in metrics.items())
