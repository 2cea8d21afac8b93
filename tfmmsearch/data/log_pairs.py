"""Training pairs from a search log: what shoppers bought and clicked, weighted for position bias.

A click is not a label: shoppers click what they were shown, and more so near the top. So a
pair's weight is its kind's weight (a purchase says more than a click) times the inverse of
the examination propensity of the rank it was shown at, clipped so that one lucky click at
rank 20 cannot outweigh a batch. Products shown *above* a clicked one and skipped were most
likely examined and passed over (Joachims' skip-above): they are the pair's hard negatives
for the ranking head. When nothing above was skipped (a click at rank 1), the next skipped
product below stands in.

Grades follow the click-NDCG convention of the benchmarks: purchase 2, click 1, so gains
2^g - 1 are 3 and 1.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from tfmmsearch.data.search_log import Session, query_key

if TYPE_CHECKING:
    from tfmmsearch.data.position_bias import PositionBias

logger = logging.getLogger(__name__)

PURCHASE_GRADE = 2
CLICK_GRADE = 1


@dataclass(frozen=True)
class LogPair:
    """One positive (query, product) pair taken from a session."""

    query: str
    product_id: str
    grade: int  # PURCHASE_GRADE or CLICK_GRADE
    weight: float  # kind weight x clipped inverse propensity of `rank`
    rank: int  # 1-based rank the product was shown at
    skipped: tuple[str, ...]  # shown, not clicked, above it (else the next one below)


def skipped_products(session: Session, rank: int) -> tuple[str, ...]:
    """Products of `session` shown above 1-based `rank` and not clicked; when there are none,
    the first unclicked product below it (or nothing)."""
    clicked = set(session.clicked)
    above = tuple(pid for pid in session.shown[:rank - 1] if pid not in clicked)
    if above:
        return above
    below = [pid for pid in session.shown[rank:] if pid not in clicked]
    return tuple(below[:1])


def log_pairs(sessions: Iterable[Session], *, purchase_weight: float = 3.0,
              click_weight: float = 1.0, position_bias: "PositionBias | None" = None,
              max_propensity_weight: float = 10.0) -> list[LogPair]:
    """Every clicked product of every session as a pair (purchased ones as purchases).

    Without `position_bias` the weights are the kind weights alone. With purchase_weight 0 a
    purchase counts as the click it also was; with click_weight 0 only purchases are pairs."""
    pairs: list[LogPair] = []
    for session in sessions:
        purchased = set(session.purchased)
        rank_of = {pid: rank for rank, pid in enumerate(session.shown, start=1)}
        for pid in session.clicked:
            if pid in purchased and purchase_weight > 0:
                grade, kind_weight = PURCHASE_GRADE, purchase_weight
            elif click_weight > 0:  # a click, or a purchase while purchases weigh nothing
                grade, kind_weight = CLICK_GRADE, click_weight
            else:
                continue
            rank = rank_of[pid]
            pairs.append(LogPair(session.query, pid, grade, kind_weight, rank,
                                 skipped_products(session, rank)))
    if position_bias is not None and pairs:
        ranks = np.array([pair.rank for pair in pairs])
        factors = position_bias.weights(ranks, max_propensity_weight)
        pairs = [LogPair(p.query, p.product_id, p.grade, float(p.weight * factor), p.rank,
                         p.skipped) for p, factor in zip(pairs, factors)]
    return pairs


@dataclass
class LogGrades:
    """Per distinct query (case and spacing ignored): product -> best grade any session gave."""

    queries: list[str]  # the first spelling seen of each distinct query
    grades: list[dict[str, int]]

    def matrix(self, product_ids: list[str]) -> np.ndarray:
        """int8 [Q, P] grades over `product_ids` (0 where no session clicked)."""
        column = {pid: j for j, pid in enumerate(product_ids)}
        out = np.zeros((len(self.queries), len(product_ids)), np.int8)
        for i, grades in enumerate(self.grades):
            for pid, grade in grades.items():
                if pid in column:
                    out[i, column[pid]] = max(out[i, column[pid]], grade)
        return out


def log_grades(sessions: Iterable[Session]) -> LogGrades:
    """Purchase / click grades by distinct query: the labels of log-based validation."""
    index: dict[str, int] = {}
    queries: list[str] = []
    grades: list[dict[str, int]] = []
    for session in sessions:
        if not session.clicked:
            continue
        key = query_key(session.query)
        if key not in index:
            index[key] = len(queries)
            queries.append(session.query)
            grades.append({})
        row = grades[index[key]]
        purchased = set(session.purchased)
        for pid in session.clicked:
            grade = PURCHASE_GRADE if pid in purchased else CLICK_GRADE
            row[pid] = max(row.get(pid, 0), grade)
    return LogGrades(queries, grades)
