"""Examination propensities (position bias) estimated from a search log, and their IPW weights.

A shopper clicks what they looked at and liked, and they look at the top of the list more than
the bottom; so a click log over-rewards whatever the old search ranked high. Weighting each click
by 1 / P(its rank was examined) undoes that on average, but the propensities must come from the
log itself. The click model (Wang et al. 2018, "Position bias estimation for unbiased learning to
rank in personal search", WSDM) is

    P(click | query q, product d, rank k) = theta_k * gamma_{q,d}

with theta_k the chance rank k is examined and gamma_{q,d} the chance the product is relevant.
Both are fitted by EM with a free relevance per (query key, product) pair, i.e. Wang et al.'s EM
without its regression (GBDT) step: it needs each pair shown at several ranks across sessions,
which a log of repeated queries ranked in varying orders provides. A log whose ranking is the
same every time a query is typed does not identify theta under this model (any theta fits, with
gamma = CTR / theta); the estimate then warns, and its curve is an artefact of where EM started
and stopped: such a log needs the regression step or randomised rankings instead.

Only the ratios theta_k / theta_1 matter for IPW (a common factor cancels in a weighted loss, and
theta * gamma is only identified up to one), so the propensities are normalised to theta_1 = 1.
"""

from __future__ import annotations

import logging
import numbers
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from tfmmsearch.data.search_log import Session, query_key
from tfmmsearch.progress import progress as progress_reporter

logger = logging.getLogger(__name__)

START = 0.5  # EM's starting theta and gamma: uninformative, and away from the 0 / 1 fixed points
# Below this share of impressions on pairs shown at more than one rank, say the estimate is weak.
MIN_VARIED_SHARE = 0.05
DICT_FIELDS = ("propensities", "impressions", "clicks", "iterations", "converged")


@dataclass
class PositionBias:
    """The estimated examination propensity per rank (rank 1 first, normalised to 1.0), with
    the counts it was estimated from and whether EM converged."""

    propensities: np.ndarray  # float64 [max_rank], propensities[0] == 1.0
    impressions: np.ndarray  # int64 [max_rank]
    clicks: np.ndarray  # int64 [max_rank]
    iterations: int
    converged: bool

    @property
    def max_rank(self) -> int:
        return len(self.propensities)

    def weights(self, ranks: np.ndarray, clip: float) -> np.ndarray:
        """Inverse-propensity weights for 1-based `ranks`: 1 / propensity, at most `clip`.

        Clipping trades a little bias for bounded variance: a rarely examined rank would
        otherwise let a handful of clicks dominate the loss. A rank beyond `max_rank` gets the
        last rank's weight (examination does not recover further down the list).
        """
        if not clip >= 1.0:  # also refuses NaN
            raise ValueError(f"clip is the largest weight and must be >= 1, got {clip}")
        ranks = np.asarray(ranks)
        if ranks.size and (not np.issubdtype(ranks.dtype, np.integer) or ranks.min() < 1):
            raise ValueError("ranks must be integers >= 1 (rank 1 is the top of the list)")
        index = np.minimum(ranks.astype(np.int64), self.max_rank) - 1
        with np.errstate(divide="ignore"):
            inverse = 1.0 / self.propensities
        return np.minimum(inverse, clip)[index]

    def to_dict(self) -> dict:
        """JSON-ready values; `from_dict` reads them back."""
        return {"propensities": [float(p) for p in self.propensities],
                "impressions": [int(n) for n in self.impressions],
                "clicks": [int(n) for n in self.clicks],
                "iterations": int(self.iterations),
                "converged": bool(self.converged)}

    @classmethod
    def from_dict(cls, values: dict) -> "PositionBias":
        """Reads `to_dict`'s values back, refusing (ValueError naming the field) anything that
        would give wrong weights later: missing fields, unequal lengths, a propensity that is
        not finite and >= 0, rank 1 not at 1.0, counts that are negative or clicks > impressions.
        """
        if not isinstance(values, dict):
            raise ValueError(f"position bias must be a dict, got {type(values).__name__}")
        missing = [name for name in DICT_FIELDS if name not in values]
        if missing:
            raise ValueError(f"position bias: missing field(s) {', '.join(missing)}")
        propensities = _number_list(values, "propensities", integers=False)
        if not propensities.size:
            raise ValueError("position bias: propensities is empty (need at least rank 1)")
        if not (np.isfinite(propensities).all() and (propensities >= 0).all()):
            raise ValueError("position bias: propensities must be finite and >= 0")
        if propensities[0] != 1.0:
            raise ValueError(f"position bias: propensities[0] (rank 1) must be 1.0, got "
                             f"{propensities[0]}")
        counts = {}
        for name in ("impressions", "clicks"):
            counts[name] = _number_list(values, name, integers=True)
            if len(counts[name]) != len(propensities):
                raise ValueError(f"position bias: {name} has {len(counts[name])} entries but "
                                 f"propensities has {len(propensities)}")
            if (counts[name] < 0).any():
                raise ValueError(f"position bias: {name} must be >= 0")
        if (counts["clicks"] > counts["impressions"]).any():
            raise ValueError("position bias: clicks exceed impressions at some rank")
        iterations = values["iterations"]
        if isinstance(iterations, bool) or not isinstance(iterations, int) or iterations < 0:
            raise ValueError(f"position bias: iterations must be an integer >= 0, got "
                             f"{iterations!r}")
        if not isinstance(values["converged"], bool):
            raise ValueError(f"position bias: converged must be true or false, got "
                             f"{values['converged']!r}")
        return cls(propensities, counts["impressions"], counts["clicks"], iterations,
                   values["converged"])

    def table(self, clip: float | None = None) -> str:
        """A markdown table per rank. `relative CTR` (CTR / CTR at rank 1) is what the raw log
        says about position bias and `propensity` what EM says once relevance is separated out;
        where they differ, the old ranking put better products higher. `weight` is 1 /
        propensity, clipped at `clip` when given."""
        rows = ["| rank | impressions | clicks | CTR | relative CTR | propensity | weight |",
                "|---:|---:|---:|---:|---:|---:|---:|"]
        ctr = np.divide(self.clicks, self.impressions, out=np.full(self.max_rank, np.nan),
                        where=self.impressions > 0)
        weights = self.weights(np.arange(1, self.max_rank + 1), np.inf if clip is None else clip)
        for rank in range(self.max_rank):
            relative = ctr[rank] / ctr[0] if ctr[0] > 0 else np.nan
            rows.append(f"| {rank + 1} | {self.impressions[rank]} | {self.clicks[rank]} | "
                        f"{_cell(ctr[rank], 4)} | {_cell(relative, 3)} | "
                        f"{_cell(self.propensities[rank], 3)} | {_cell(weights[rank], 2)} |")
        return "\n".join(rows)


def _number_list(values: dict, name: str, integers: bool) -> np.ndarray:
    """values[name] as a 1-D int64 (integers) or float64 array, or a ValueError naming it."""
    items = values[name]
    kind = numbers.Integral if integers else numbers.Real
    if isinstance(items, np.ndarray):
        items = items.tolist()
    if not isinstance(items, (list, tuple)) or not all(
            isinstance(item, kind) and not isinstance(item, bool) for item in items):
        raise ValueError(f"position bias: {name} must be a list of "
                         f"{'integers' if integers else 'numbers'}")
    return np.asarray(items, dtype=np.int64 if integers else np.float64)


def _cell(value: float, digits: int) -> str:
    return "-" if np.isnan(value) else ("inf" if np.isinf(value) else f"{value:.{digits}f}")


@dataclass
class _Impressions:
    """Every (session, rank) a product was shown at, as parallel arrays over impressions."""

    pair: np.ndarray  # int64: id of the (query key, product) pair, 0..pairs-1
    rank: np.ndarray  # int64: 0-based rank
    clicked: np.ndarray  # bool
    pairs: int
    ranks: int  # the longest shown list kept (<= max_rank)


def _impressions(sessions: Iterable[Session], max_rank: int | None) -> _Impressions:
    """One pass over the sessions; a product is clicked at every rank it was shown at in that
    session (a log that shows a product twice in one list cannot say which one was clicked)."""
    pair_ids: dict[tuple[str, str], int] = {}
    pairs: list[int] = []
    ranks: list[int] = []
    clicked: list[bool] = []
    any_session = False
    for session in sessions:
        any_session = True
        key = query_key(session.query)
        shown = session.shown if max_rank is None else session.shown[:max_rank]
        clicks = set(session.clicked)
        pairs.extend(pair_ids.setdefault((key, product), len(pair_ids)) for product in shown)
        ranks.extend(range(len(shown)))
        clicked.extend(product in clicks for product in shown)
    if not any_session:
        raise ValueError("cannot estimate position bias from an empty search log")
    if not pairs:
        raise ValueError("cannot estimate position bias: no session showed any product")
    rank = np.asarray(ranks, dtype=np.int64)
    return _Impressions(np.asarray(pairs, dtype=np.int64), rank,
                        np.asarray(clicked, dtype=bool), len(pair_ids), int(rank.max()) + 1)


def estimate_position_bias(sessions: Iterable[Session], max_rank: int | None = None,
                           iterations: int = 100, tolerance: float = 1e-6,
                           progress: bool = False) -> PositionBias:
    """Estimates examination propensities per rank from clicks, by EM (see the module docstring).

    `max_rank` (None: the longest shown list) truncates lists; ranks past the longest list get
    no impressions and the last observed rank's propensity. EM stops when no normalised
    propensity moves by more than `tolerance` in an iteration, or after `iterations`
    (`converged` says which). The returned propensities are relative: rank 1 is 1.0.
    Raises ValueError on an empty log, a log without clicks, or one without clicks at rank 1
    (nothing to normalise by).
    """
    if max_rank is not None and (isinstance(max_rank, bool) or not isinstance(max_rank, int)
                                 or max_rank < 1):
        raise ValueError(f"max_rank must be a positive integer or None, got {max_rank!r}")
    if iterations < 1:
        raise ValueError(f"iterations must be >= 1, got {iterations}")
    data = _impressions(sessions, max_rank)
    size = data.ranks if max_rank is None else max_rank
    impressions = np.bincount(data.rank, minlength=size)
    clicks = np.bincount(data.rank[data.clicked], minlength=size)
    if not clicks.any():
        raise ValueError(f"cannot estimate position bias: none of the {impressions.sum()} "
                         "impressions was clicked")
    if clicks[0] == 0:
        raise ValueError("cannot estimate position bias: nothing shown at rank 1 was clicked, "
                         "so there is no rank to normalise the propensities by")

    varied = _varied_impressions(data)
    theta, done, converged = _fit(data, iterations, tolerance, progress)
    propensities = np.empty(size, dtype=np.float64)
    propensities[:data.ranks] = theta / theta[0]
    propensities[data.ranks:] = propensities[data.ranks - 1]
    propensities[0] = 1.0  # exactly, whatever the rounding of theta / theta[0]
    logger.info("position bias: %d ranks from %d impressions (%d clicks, %d query-product "
                "pairs, %.1f%% of impressions on pairs shown at more than one rank); EM %s "
                "after %d iteration(s)", size, impressions.sum(), clicks.sum(), data.pairs,
                100.0 * varied / len(data.rank),
                "converged" if converged else "did NOT converge", done)
    if varied < MIN_VARIED_SHARE * len(data.rank):
        logger.warning("position bias: only %d of %d impressions (%.1f%%) are of query-product "
                       "pairs shown at more than one rank, and only those tell examination from "
                       "relevance here; the propensities are barely identified (mostly where EM "
                       "started and stopped). Randomised rankings or a relevance model shared "
                       "across pairs are needed for this log.", varied, len(data.rank),
                       100.0 * varied / len(data.rank))
    if data.ranks < size:
        logger.info("position bias: no list was longer than %d; ranks %d-%d reuse rank %d's "
                    "propensity", data.ranks, data.ranks + 1, size, data.ranks)
    return PositionBias(propensities, impressions.astype(np.int64), clicks.astype(np.int64),
                        done, converged)


def _varied_impressions(data: _Impressions) -> int:
    """Impressions of pairs shown at two or more distinct ranks: with a free relevance per pair,
    a pair always shown at one rank fits any theta, so only these inform the curve."""
    pair_ranks = np.unique(data.pair * data.ranks + data.rank)  # distinct (pair, rank)
    ranks_per_pair = np.bincount(pair_ranks // data.ranks, minlength=data.pairs)
    return int((ranks_per_pair[data.pair] > 1).sum())


def _fit(data: _Impressions, iterations: int, tolerance: float,
         progress: bool) -> tuple[np.ndarray, int, bool]:
    """EM for theta (per observed rank) and gamma (per pair); returns unnormalised theta, the
    iterations run and whether the normalised theta moved less than `tolerance` in the last.

    A clicked impression was examined and relevant for certain, so only unclicked ones need
    posteriors: P(E=1, R=0 | C=0) = theta (1 - gamma) / (1 - theta gamma) and
    P(E=0, R=1 | C=0) = (1 - theta) gamma / (1 - theta gamma). Each M-step is a mean over a
    rank's (or a pair's) impressions of c + (1 - c) * posterior, done as a bincount.
    """
    per_rank = np.bincount(data.rank, minlength=data.ranks).astype(np.float64)
    per_pair = np.bincount(data.pair, minlength=data.pairs).astype(np.float64)
    clicks_rank = np.bincount(data.rank[data.clicked], minlength=data.ranks)
    clicks_pair = np.bincount(data.pair[data.clicked], minlength=data.pairs)
    unclicked = ~data.clicked
    rank, pair = data.rank[unclicked], data.pair[unclicked]

    theta = np.full(data.ranks, START)
    gamma = np.full(data.pairs, START)
    done, converged = 0, False
    with progress_reporter(total=iterations, desc="position bias EM", unit="iteration",
                           disable=not progress) as bar:
        for done in range(1, iterations + 1):
            t, g = theta[rank], gamma[pair]
            not_clicked = np.maximum(1.0 - t * g, np.finfo(np.float64).tiny)
            examined = t * (1.0 - g) / not_clicked
            relevant = (1.0 - t) * g / not_clicked
            new_theta = (clicks_rank + np.bincount(rank, examined, data.ranks)) / per_rank
            gamma = (clicks_pair + np.bincount(pair, relevant, data.pairs)) / per_pair
            change = np.abs(new_theta / new_theta[0] - theta / theta[0]).max()
            theta = new_theta
            bar.update(1)
            if change < tolerance:
                converged = True
                break
    return theta, done, converged
