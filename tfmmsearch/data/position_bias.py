"""Examination propensities (position bias) estimated from a search log, and their IPW weights.

A shopper clicks what they looked at and liked, and they look at the top of the list more than
the bottom; so a click log over-rewards whatever the old search ranked high. Weighting each click
by 1 / P(its rank was examined) undoes that on average, but the propensities must come from the
log itself. The click model (Wang et al. 2018, "Position bias estimation for unbiased learning to
rank in personal search", WSDM) is

    P(click | query q, product d, rank k) = theta_k * gamma_{q,d}

with theta_k the chance rank k is examined and gamma_{q,d} the chance the product is relevant.
Both are fitted by EM, with the relevance in one of two forms:

- "em": a free gamma per (query key, product) pair. It needs each pair shown at several ranks
  across sessions, which a log of repeated queries ranked in varying orders provides. A log
  whose ranking is the same every time a query is typed does not identify theta this way (any
  theta fits, with gamma = CTR / theta); the estimate then warns, and its curve is an artefact
  of where EM started and stopped.
- "regression_em": Wang et al.'s regression-EM, gamma_{q,d} = sigmoid(w . x_{q,d} + b) over
  features of the pair that do not encode the rank, refitted in every M-step to the E-step's
  soft relevance. Pairs with alike features share a relevance, and alike features turn up at
  different ranks under different queries, which identifies theta even when every query is
  ranked the same way every time. The paper fits a GBDT; this is a plain L2-penalised logistic
  regression (a few Newton steps per M-step, warm-started), so the relevance can only be as
  good as a linear model of the features: relevance the features miss but the old ranking saw
  ends up in theta (a curve steeper than the truth).

Only the ratios theta_k / theta_1 matter for IPW (a common factor cancels in a weighted loss, and
theta * gamma is only identified up to one), so the propensities are normalised to theta_1 = 1.
"""

from __future__ import annotations

import logging
import numbers
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np

from tfmmsearch.data.search_log import Session, query_key
from tfmmsearch.progress import progress as progress_reporter

logger = logging.getLogger(__name__)

START = 0.5  # EM's starting theta and gamma: uninformative, and away from the 0 / 1 fixed points
# Below this share of impressions on pairs shown at more than one rank, say the estimate is weak.
MIN_VARIED_SHARE = 0.05
DICT_FIELDS = ("propensities", "impressions", "clicks", "iterations", "converged")
METHODS = ("em", "regression_em")  # free relevance per pair; logistic-regression relevance
NEWTON_STEPS = 3  # per M-step, warm-started from the last one: the fit tracks EM's targets
NEWTON_DECREMENT = 1e-12  # below this, a Newton step is rounding: stop refitting
L2 = 1e-4  # on the standardised weights (not the intercept), per unit of mean log-likelihood

PairFeatures = Callable[[list[str], list[str]], np.ndarray]


@dataclass
class PositionBias:
    """The estimated examination propensity per rank (rank 1 first, normalised to 1.0), with
    the counts it was estimated from, whether EM converged and which relevance it used."""

    propensities: np.ndarray  # float64 [max_rank], propensities[0] == 1.0
    impressions: np.ndarray  # int64 [max_rank]
    clicks: np.ndarray  # int64 [max_rank]
    iterations: int
    converged: bool
    method: str = "em"  # one of METHODS

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
                "converged": bool(self.converged),
                "method": self.method}

    @classmethod
    def from_dict(cls, values: dict) -> "PositionBias":
        """Reads `to_dict`'s values back, refusing (ValueError naming the field) anything that
        would give wrong weights later: missing fields, unequal lengths, a propensity that is
        not finite and >= 0, rank 1 not at 1.0, counts that are negative or clicks > impressions,
        an unknown method. A dict without `method` predates regression-EM and is "em".
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
        method = values.get("method", "em")
        if method not in METHODS:
            raise ValueError(f"position bias: method must be one of {', '.join(METHODS)}, got "
                             f"{method!r}")
        return cls(propensities, counts["impressions"], counts["clicks"], iterations,
                   values["converged"], method)

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
    """Every (session, rank) a product was shown at, as parallel arrays over impressions, and
    the distinct pairs they are of."""

    pair: np.ndarray  # int64: id of the (query key, product) pair, 0..pairs-1
    rank: np.ndarray  # int64: 0-based rank
    clicked: np.ndarray  # bool
    pair_queries: list[str]  # per pair id: the first spelling typed of its query key
    pair_products: list[str]  # per pair id: its product id
    ranks: int  # the longest shown list kept (<= max_rank)

    @property
    def pairs(self) -> int:
        return len(self.pair_products)


def _impressions(sessions: Iterable[Session], max_rank: int | None) -> _Impressions:
    """One pass over the sessions; a product is clicked at every rank it was shown at in that
    session (a log that shows a product twice in one list cannot say which one was clicked)."""
    pair_ids: dict[tuple[str, str], int] = {}
    spelling: dict[str, str] = {}  # query key -> its first spelling
    pair_queries: list[str] = []
    pair_products: list[str] = []
    pairs: list[int] = []
    ranks: list[int] = []
    clicked: list[bool] = []
    any_session = False
    for session in sessions:
        any_session = True
        key = query_key(session.query)
        query = spelling.setdefault(key, session.query)
        shown = session.shown if max_rank is None else session.shown[:max_rank]
        clicks = set(session.clicked)
        for product in shown:
            pair = pair_ids.setdefault((key, product), len(pair_ids))
            if pair == len(pair_products):  # a new pair
                pair_queries.append(query)
                pair_products.append(product)
            pairs.append(pair)
        ranks.extend(range(len(shown)))
        clicked.extend(product in clicks for product in shown)
    if not any_session:
        raise ValueError("cannot estimate position bias from an empty search log")
    if not pairs:
        raise ValueError("cannot estimate position bias: no session showed any product")
    rank = np.asarray(ranks, dtype=np.int64)
    return _Impressions(np.asarray(pairs, dtype=np.int64), rank, np.asarray(clicked, dtype=bool),
                        pair_queries, pair_products, int(rank.max()) + 1)


def estimate_position_bias(sessions: Iterable[Session], max_rank: int | None = None,
                           iterations: int = 100, tolerance: float = 1e-6,
                           progress: bool = False,
                           pair_features: PairFeatures | None = None) -> PositionBias:
    """Estimates examination propensities per rank from clicks, by EM (see the module docstring).

    Without `pair_features` each (query key, product) pair gets a free relevance ("em"). With
    it, `pair_features(queries, product_ids)` is called once with every distinct pair (each
    query as first typed) and must return finite float features [pairs, F] that do not encode
    the rank; the relevance is then a logistic regression on them, standardised here, with its
    own intercept ("regression_em"). `max_rank` (None: the longest shown list) truncates
    lists; ranks past the longest list get no impressions and the last observed rank's
    propensity. EM stops when no normalised propensity moves by more than `tolerance` in an
    iteration, or after `iterations` (`converged` says which). The returned propensities are
    relative: rank 1 is 1.0. Raises ValueError on an empty log, a log without clicks, one
    without clicks at rank 1 (nothing to normalise by), or features of the wrong shape or with
    NaN / infinite values.
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

    relevance = None
    if pair_features is not None:
        features = _checked_features(pair_features(list(data.pair_queries),
                                                   list(data.pair_products)), data.pairs)
        relevance = _LogisticRelevance(features, np.bincount(data.pair, minlength=data.pairs))
    method = "em" if relevance is None else "regression_em"
    varied = _varied_impressions(data)
    theta, done, converged = _fit(data, iterations, tolerance, progress, relevance)
    propensities = np.empty(size, dtype=np.float64)
    propensities[:data.ranks] = theta / theta[0]
    propensities[data.ranks:] = propensities[data.ranks - 1]
    propensities[0] = 1.0  # exactly, whatever the rounding of theta / theta[0]
    logger.info("position bias (%s): %d ranks from %d impressions (%d clicks, %d query-product "
                "pairs, %.1f%% of impressions on pairs shown at more than one rank); EM %s "
                "after %d iteration(s)", method, size, impressions.sum(), clicks.sum(),
                data.pairs, 100.0 * varied / len(data.rank),
                "converged" if converged else "did NOT converge", done)
    if relevance is not None:
        logger.info("position bias: relevance weights per standardised feature %s, intercept "
                    "%.3f", np.array2string(relevance.weights, precision=3),
                    relevance.intercept)
    elif varied < MIN_VARIED_SHARE * len(data.rank):
        logger.warning("position bias: only %d of %d impressions (%.1f%%) are of query-product "
                       "pairs shown at more than one rank, and only those tell examination from "
                       "relevance here; the propensities are barely identified (mostly where EM "
                       "started and stopped). Randomised rankings or a relevance model shared "
                       "across pairs (pair_features) are needed for this log.", varied,
                       len(data.rank), 100.0 * varied / len(data.rank))
    if data.ranks < size:
        logger.info("position bias: no list was longer than %d; ranks %d-%d reuse rank %d's "
                    "propensity", data.ranks, data.ranks + 1, size, data.ranks)
    return PositionBias(propensities, impressions.astype(np.int64), clicks.astype(np.int64),
                        done, converged, method)


def _checked_features(values, pairs: int) -> np.ndarray:
    """pair_features' answer as float64 [pairs, F], or a ValueError saying what is wrong with
    it (a bad feature would otherwise surface as a silently wrong curve)."""
    try:
        features = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise ValueError(f"pair_features must return numbers, got {type(values).__name__} "
                         f"({error})") from None
    if features.ndim != 2 or features.shape[0] != pairs or features.shape[1] < 1:
        raise ValueError(f"pair_features returned shape {features.shape} for {pairs} distinct "
                         f"query-product pairs; expected ({pairs}, F) with F >= 1")
    bad = ~np.isfinite(features)
    if bad.any():
        raise ValueError(f"pair_features returned NaN or infinite values in {bad.any(1).sum()} "
                         f"of {pairs} rows (column(s) {np.flatnonzero(bad.any(0)).tolist()})")
    return features


class _LogisticRelevance:
    """The regression step: gamma = sigmoid(w . z + b) over standardised features z, refitted
    to each E-step's soft relevance targets (the mean posterior P(relevant) of a pair's
    impressions, weighted by their number), which is the expected complete-data log-likelihood
    of the relevance part. Constant columns carry nothing beyond the intercept and are dropped.
    """

    def __init__(self, features: np.ndarray, impressions: np.ndarray):
        spread = features.std(axis=0)
        keep = spread > 0
        standard = (features[:, keep] - features[:, keep].mean(axis=0)) / spread[keep]
        self._design = np.hstack([standard, np.ones((len(features), 1))])
        self._weight = impressions / impressions.sum()  # a mean over impressions
        self._penalty = np.full(self._design.shape[1], L2)
        self._penalty[-1] = 0.0  # the intercept is not shrunk
        self._keep = keep
        self._coef = np.zeros(self._design.shape[1])  # gamma = 0.5: EM's usual start

    @property
    def weights(self) -> np.ndarray:
        """Per input column (0 for a dropped constant one), on the standardised scale."""
        out = np.zeros(len(self._keep))
        out[self._keep] = self._coef[:-1]
        return out

    @property
    def intercept(self) -> float:
        return float(self._coef[-1])

    def predict(self) -> np.ndarray:
        return _sigmoid(self._design @ self._coef)

    def refit(self, target: np.ndarray) -> np.ndarray:
        """A few damped Newton (IRLS) steps from the last weights towards the penalised fit to
        `target`; returns the new gamma per pair."""
        coef, loss = self._coef, self._loss(self._coef, target)
        for _ in range(NEWTON_STEPS):
            gamma = _sigmoid(self._design @ coef)
            gradient = self._design.T @ (self._weight * (gamma - target)) + self._penalty * coef
            curvature = self._weight * gamma * (1.0 - gamma)
            hessian = (self._design.T * curvature) @ self._design + np.diag(self._penalty)
            hessian[np.diag_indices_from(hessian)] += 1e-12  # a pure-intercept fit at 0 / 1
            step = np.linalg.solve(hessian, gradient)
            if gradient @ step < NEWTON_DECREMENT:  # twice the loss a full step would save
                break  # at the optimum, to well below anything theta could notice
            for _ in range(10):  # halve until the convex loss does not rise (Newton can overshoot)
                candidate = coef - step
                candidate_loss = self._loss(candidate, target)
                if candidate_loss <= loss:
                    break
                step = step / 2.0
            else:
                break  # no descent left: at the optimum to rounding
            coef, loss = candidate, candidate_loss
        self._coef = coef
        return self.predict()

    def _loss(self, coef: np.ndarray, target: np.ndarray) -> float:
        """Weighted soft-label cross-entropy plus the L2 penalty (log-sigmoids kept stable)."""
        logit = self._design @ coef
        cross = target * np.logaddexp(0.0, -logit) + (1.0 - target) * np.logaddexp(0.0, logit)
        return float(self._weight @ cross + 0.5 * self._penalty @ coef ** 2)


def _sigmoid(logit: np.ndarray) -> np.ndarray:
    return np.exp(-np.logaddexp(0.0, -logit))


def _varied_impressions(data: _Impressions) -> int:
    """Impressions of pairs shown at two or more distinct ranks: with a free relevance per pair,
    a pair always shown at one rank fits any theta, so only these inform the curve."""
    pair_ranks = np.unique(data.pair * data.ranks + data.rank)  # distinct (pair, rank)
    ranks_per_pair = np.bincount(pair_ranks // data.ranks, minlength=data.pairs)
    return int((ranks_per_pair[data.pair] > 1).sum())


def _fit(data: _Impressions, iterations: int, tolerance: float, progress: bool,
         relevance: _LogisticRelevance | None) -> tuple[np.ndarray, int, bool]:
    """EM for theta (per observed rank) and gamma (per pair: free, or `relevance`'s regression);
    returns unnormalised theta, the iterations run and whether the normalised theta moved less
    than `tolerance` in the last.

    A clicked impression was examined and relevant for certain, so only unclicked ones need
    posteriors: P(E=1, R=0 | C=0) = theta (1 - gamma) / (1 - theta gamma) and
    P(E=0, R=1 | C=0) = (1 - theta) gamma / (1 - theta gamma). Each M-step is a mean over a
    rank's (or a pair's) impressions of c + (1 - c) * posterior, done as a bincount; the pair
    means are the free gamma, or the targets the regression is refitted to.
    """
    per_rank = np.bincount(data.rank, minlength=data.ranks).astype(np.float64)
    per_pair = np.bincount(data.pair, minlength=data.pairs).astype(np.float64)
    clicks_rank = np.bincount(data.rank[data.clicked], minlength=data.ranks)
    clicks_pair = np.bincount(data.pair[data.clicked], minlength=data.pairs)
    unclicked = ~data.clicked
    rank, pair = data.rank[unclicked], data.pair[unclicked]

    theta = np.full(data.ranks, START)
    gamma = np.full(data.pairs, START) if relevance is None else relevance.predict()
    done, converged = 0, False
    with progress_reporter(total=iterations, desc="position bias EM", unit="iteration",
                           disable=not progress) as bar:
        for done in range(1, iterations + 1):
            t, g = theta[rank], gamma[pair]
            not_clicked = np.maximum(1.0 - t * g, np.finfo(np.float64).tiny)
            examined = t * (1.0 - g) / not_clicked
            relevant = (1.0 - t) * g / not_clicked
            new_theta = (clicks_rank + np.bincount(rank, examined, data.ranks)) / per_rank
            target = (clicks_pair + np.bincount(pair, relevant, data.pairs)) / per_pair
            gamma = target if relevance is None else relevance.refit(target)
            change = np.abs(new_theta / new_theta[0] - theta / theta[0]).max()
            theta = new_theta
            bar.update(1)
            if change < tolerance:
                converged = True
                break
    return theta, done, converged
