"""A synthetic search log: what a shop whose old search was BM25 over titles would have logged.

The demo trains from a search log by default and no real one ships with the code, so this
simulates one over a catalog's products (the synthetic catalog has every column it uses:
article_type, gender, base_colour, usage, brand; a catalog without some of them just gets
intents without them). Each session, oldest first:

1. Intent: an article type plus, each with its own chance, the gender, colour, usage and brand
   of one product of the catalog, so every intent has at least one exact match.
2. Query: typed tersely in lower case: synonyms of the type and colour (`phrasing`), short
   gender and usage words, brand names, any word order, sometimes a noise word ("buy", "new")
   or a typo (the attribute queries of `queries` never name a brand, add noise or misspell).
   A share of sessions retype an earlier session's query (popular queries recur).
3. Shown: the old search's top 20, BM25 over titles with ties in catalog order (so when fewer
   than 20 titles share a query word, the first zero-score products fill the page). In a
   share of sessions the shop's tie-breaking varied: neighbours ((1,2), (3,4), ... or (2,3),
   (4,5), ...) swap with probability 1/2. A repeated query shown in two orders is the
   intervention a position-bias estimator learns from.
4. Clicks: each shown product independently (no cascade) with probability theta_k * relevance,
   theta_k = (1/k)^eta the chance that rank k is looked at, relevance by the product's match
   with the intent: every named attribute (exact), the article type only, or neither (noise).
   Purchases: a share of the clicks on exact matches. Sessions without clicks are common.

The hidden truth (click model, theta curve, each session's intent, perturbation and repeat)
can be written next to the log with `truth_path`, for tests and debiasing benchmarks; a
learner must never read it. Everything is a pure function of the arguments.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import numpy as np

from tfmmsearch.data.bm25 import BM25Index
from tfmmsearch.data.phrasing import colour_phrases, normalise_key, type_phrases
from tfmmsearch.data.queries import clean_value
from tfmmsearch.data.schema import Product, products_by_id
from tfmmsearch.contract import SEARCH_LOG_FIELDS

SEARCH_LOG_FILE = "search_log.jsonl"  # its name inside a synthetic catalog directory
SHOWN_PER_SESSION = 20
INTENT_ROLES = ("article_type", "gender", "base_colour", "usage", "brand")  # catalog columns
# The chance an intent names each optional attribute (of its source product).
INTENT_CHANCES = {"gender": 0.5, "base_colour": 0.5, "usage": 0.15, "brand": 0.35}
REPEAT_SHARE = 0.2  # sessions that retype an earlier session's query
PERTURBED_SHARE = 0.25  # sessions whose shown order had neighbours swapped
SWAP_CHANCE = 0.5
NOISE_WORD_CHANCE = 0.2
TYPO_CHANCE = 0.1
BRAND_FIRST_CHANCE = 0.8  # shoppers tend to lead with the brand

NOISE_WORDS = ("buy", "new", "best", "latest", "offer", "sale", "cheap", "online")
# Terse keyword forms (the templates of `phrasing` say "for men", "for the office" instead).
GENDER_WORDS = {"men": ("men", "mens", "men's", "male"),
                "women": ("women", "womens", "women's", "ladies", "female"),
                "unisex": ("unisex",)}
USAGE_WORDS = {"casual": ("casual",), "sports": ("sports", "sport", "gym"),
               "formal": ("formal", "office"), "party": ("party", "partywear")}

# Independent random streams, so changing how one step draws leaves the others' draws alone.
_INTENT_STREAM, _QUERY_STREAM, _ORDER_STREAM, _CLICK_STREAM, _TIME_STREAM = range(5)
_SCORE_BATCH = 512  # queries scored per BM25 call: bounds the dense [queries, products] block
_NOT_NAMED = -2  # intent code of a role the intent does not name (matches anything)
_UNKNOWN = -1  # product code of a value the catalog does not know (matches nothing)


@dataclass(frozen=True)
class ClickModel:
    """The position-biased click model: P(click at rank k) = (1/k)^eta * relevance."""

    eta: float = 1.0
    exact: float = 0.8  # relevance of a product matching every attribute the intent names
    type_only: float = 0.2  # ... of one matching the article type only
    other: float = 0.03  # ... of anything else: noise clicks
    purchase: float = 0.3  # chance that a click on an exact match is a purchase

    def __post_init__(self) -> None:
        if not (isinstance(self.eta, (int, float)) and self.eta >= 0):
            raise ValueError(f"click model eta must be a number >= 0, got {self.eta!r}")
        for name in ("exact", "type_only", "other", "purchase"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and 0 <= value <= 1):
                raise ValueError(f"click model {name} must be a probability in [0, 1], got {value!r}")

    def theta(self, num_positions: int) -> np.ndarray:
        """Examination probability of ranks 1..num_positions."""
        return (1.0 / np.arange(1, num_positions + 1)) ** self.eta


@dataclass
class _Session:
    intent: dict[str, str]
    query: str
    repeat_of: int | None = None  # index of the session whose query this one retyped


# --------------------------------------------------------------------------- arguments


def _check_int(name: str, value, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


def _start_day(start) -> date:
    if isinstance(start, date) and not isinstance(start, datetime):
        return start
    try:
        return date.fromisoformat(start)
    except (TypeError, ValueError):
        raise ValueError(f"start must be a day like '2026-10-01', got {start!r}") from None


def _known(product: Product, role: str) -> str | None:
    return clean_value(product.attributes.get(role))


# --------------------------------------------------------------------------- shoppers


def _draw_intents(products: Sequence[Product], num_sessions: int,
                  rng: np.random.Generator) -> list[dict[str, str]]:
    """An intent per session, each from a product with a known article type."""
    sources = [p for p in products if _known(p, "article_type") is not None]
    if not sources:
        raise ValueError("products: none has an article_type attribute, so no shopper intent "
                         "can be drawn (the synthetic catalog's products.csv has one)")
    intents = []
    for index in rng.integers(len(sources), size=num_sessions):
        source = sources[int(index)]
        intent = {"article_type": _known(source, "article_type")}
        for role, chance in INTENT_CHANCES.items():
            value = _known(source, role)
            if rng.random() < chance and value is not None:
                intent[role] = value
        intents.append(intent)
    return intents


def _pick(rng: np.random.Generator, options: Sequence[str]) -> str:
    return options[int(rng.integers(len(options)))]


def _typo(word: str, rng: np.random.Generator) -> str:
    """One slip inside the word (first letter kept): a letter dropped, doubled or swapped."""
    at = int(rng.integers(1, len(word) - 1))
    kind = int(rng.integers(3))
    if kind == 0:
        return word[:at] + word[at + 1:]
    if kind == 1:
        return word[:at] + word[at] + word[at:]
    return word[:at] + word[at + 1] + word[at] + word[at + 2:]


def _word_choices(role: str, value: str, rng: np.random.Generator) -> Sequence[str]:
    """The words a shopper may type for one (non-brand) attribute of the intent."""
    if role == "article_type":
        return type_phrases(value, _pick(rng, ("sg", "pl")))
    if role == "base_colour":
        return colour_phrases(value, "adj")
    words = GENDER_WORDS if role == "gender" else USAGE_WORDS
    return words.get(normalise_key(value), (value.lower(),))


def _type_query(intent: dict[str, str], rng: np.random.Generator) -> str:
    """What a shopper with `intent` types: terse, lower case, any order, sometimes sloppy."""
    parts = [_pick(rng, _word_choices(role, value, rng)) for role, value in intent.items()
             if role != "brand"]
    parts = [parts[i] for i in rng.permutation(len(parts))]
    if "brand" in intent:
        brand = intent["brand"].lower()
        parts.insert(0 if rng.random() < BRAND_FIRST_CHANCE else len(parts), brand)
    if rng.random() < NOISE_WORD_CHANCE:
        parts.insert(0 if rng.random() < 0.7 else len(parts), _pick(rng, NOISE_WORDS))
    tokens = list(dict.fromkeys(" ".join(parts).split()))  # "sports sports shoes" -> once
    if rng.random() < TYPO_CHANCE:
        long_words = [i for i, token in enumerate(tokens) if len(token) >= 4 and token.isalpha()]
        if long_words:
            at = long_words[int(rng.integers(len(long_words)))]
            tokens[at] = _typo(tokens[at], rng)
    return " ".join(tokens)


def _draw_sessions(products: Sequence[Product], num_sessions: int, seed: int) -> list[_Session]:
    """Intent and query per session; a repeat copies a uniformly chosen earlier session's (so
    queries typed often get typed again), pointing at the session that first typed it."""
    intents = _draw_intents(products, num_sessions, np.random.default_rng([seed, _INTENT_STREAM]))
    rng = np.random.default_rng([seed, _QUERY_STREAM])
    sessions: list[_Session] = []
    for index, intent in enumerate(intents):
        if index and rng.random() < REPEAT_SHARE:
            earlier = int(rng.integers(index))
            original = earlier if sessions[earlier].repeat_of is None else sessions[earlier].repeat_of
            sessions.append(_Session(sessions[original].intent, sessions[original].query, original))
        else:
            sessions.append(_Session(intent, _type_query(intent, rng)))
    return sessions


# --------------------------------------------------------------------------- the old search


def _bm25_top(titles: Sequence[str], queries: Sequence[str], k: int) -> dict[str, np.ndarray]:
    """query -> the indices of its top k titles by BM25, ties in catalog order."""
    index = BM25Index(titles)
    unique = list(dict.fromkeys(queries))
    top: dict[str, np.ndarray] = {}
    for first in range(0, len(unique), _SCORE_BATCH):
        batch = unique[first:first + _SCORE_BATCH]
        order = np.argsort(-index.score(batch), axis=1, kind="stable")[:, :k]
        top.update(zip(batch, order))
    return top


def _perturb(shown: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Swaps neighbours (from rank 1 or 2 on, pairs not overlapping) with SWAP_CHANCE each."""
    shown = shown.copy()
    for at in range(int(rng.integers(2)), len(shown) - 1, 2):
        if rng.random() < SWAP_CHANCE:
            shown[at], shown[at + 1] = shown[at + 1], shown[at]
    return shown


# --------------------------------------------------------------------------- shoppers' clicks


def _attribute_codes(products: Sequence[Product]) -> tuple[np.ndarray, list[dict[str, int]]]:
    """[products, roles] integer codes of the products' values (case-folded), and each role's
    value -> code table."""
    codes = np.full((len(products), len(INTENT_ROLES)), _UNKNOWN, dtype=np.int64)
    tables: list[dict[str, int]] = [{} for _ in INTENT_ROLES]
    for row, product in enumerate(products):
        for column, role in enumerate(INTENT_ROLES):
            value = _known(product, role)
            if value is not None:
                table = tables[column]
                codes[row, column] = table.setdefault(value.casefold(), len(table))
    return codes, tables


def _relevance(products: Sequence[Product], intents: Sequence[dict[str, str]], shown: np.ndarray,
               model: ClickModel) -> tuple[np.ndarray, np.ndarray]:
    """Relevance [sessions, shown] of each shown product to its session's intent, and whether
    it is an exact match."""
    codes, tables = _attribute_codes(products)
    wanted = np.array([[tables[column][intent[role].casefold()] if role in intent else _NOT_NAMED
                        for column, role in enumerate(INTENT_ROLES)] for intent in intents],
                      dtype=np.int64).reshape(len(intents), len(INTENT_ROLES))
    have = codes[shown]  # [sessions, shown, roles]
    matches = (wanted[:, None, :] == _NOT_NAMED) | (have == wanted[:, None, :])
    exact = matches.all(axis=2)
    relevance = np.where(exact, model.exact, np.where(matches[:, :, 0], model.type_only,
                                                      model.other))
    return relevance, exact


# --------------------------------------------------------------------------- writing


def _write_text_atomically(path: Path, text: str) -> None:
    """Through a temporary file in the same folder: a reader never sees a half-written file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _timestamps(num_sessions: int, days: int, start: date, seed: int) -> list[str]:
    """One per session, increasing, spread evenly over the days (each session at a random
    moment of its own slot, so every day gets sessions once there are at least `days`)."""
    rng = np.random.default_rng([seed, _TIME_STREAM])
    slot = days * 86400 / num_sessions
    seconds = np.floor((np.arange(num_sessions) + rng.random(num_sessions)) * slot)
    origin = datetime(start.year, start.month, start.day, tzinfo=timezone.utc)
    return [(origin + timedelta(seconds=int(s))).strftime("%Y-%m-%dT%H:%M:%SZ") for s in seconds]


def generate_synthetic_search_log(products: Sequence[Product], out_path: str | Path,
                                  num_sessions: int = 3000, days: int = 30, seed: int = 0,
                                  start: str | date = "2026-10-01",
                                  truth_path: str | Path | None = None,
                                  click_model: ClickModel | None = None) -> Path:
    """Simulates `num_sessions` search sessions over `products` (see the module docstring) and
    writes them to `out_path` (.jsonl, the search-log format, oldest first, atomically).

    Sessions spread over `days` UTC days from `start`. `truth_path`, when given, receives the
    hidden truth as JSON: the click model, `theta` per rank, and per session its intent,
    whether its order was perturbed and the session whose query it repeats. Same arguments,
    same bytes.
    """
    if isinstance(products, (str, bytes)) or not isinstance(products, Sequence) or not products \
            or not all(isinstance(p, Product) for p in products):
        raise ValueError("products must be a non-empty list of Product (e.g. "
                         "read_catalog(dir).products)")
    _check_int("num_sessions", num_sessions, 1)
    _check_int("days", days, 1)
    _check_int("seed", seed, 0)
    start_day = _start_day(start)
    model = ClickModel() if click_model is None else click_model
    if not isinstance(model, ClickModel):
        raise ValueError(f"click_model must be a ClickModel, got {type(click_model).__name__}")
    out_path = Path(out_path)
    if out_path.suffix != ".jsonl":
        raise ValueError(f"out_path must be a .jsonl file, got {str(out_path)!r}")
    products_by_id(products)  # a repeated id is an error here, not a confusing log

    sessions = _draw_sessions(products, num_sessions, seed)
    top = _bm25_top([p.title for p in products], [s.query for s in sessions],
                    min(SHOWN_PER_SESSION, len(products)))
    order_rng = np.random.default_rng([seed, _ORDER_STREAM])
    perturbed = order_rng.random(num_sessions) < PERTURBED_SHARE
    shown = np.stack([_perturb(top[s.query], order_rng) if perturb else top[s.query]
                      for s, perturb in zip(sessions, perturbed)])
    relevance, exact = _relevance(products, [s.intent for s in sessions], shown, model)
    theta = model.theta(shown.shape[1])
    click_rng = np.random.default_rng([seed, _CLICK_STREAM])
    clicked = click_rng.random(shown.shape) < theta[None, :] * relevance
    purchased = clicked & exact & (click_rng.random(shown.shape) < model.purchase)

    ids = [p.product_id for p in products]
    width = max(6, len(str(num_sessions - 1)))
    session_ids = [f"s{i:0{width}d}" for i in range(num_sessions)]
    lines = []
    for i, timestamp in enumerate(_timestamps(num_sessions, days, start_day, seed)):
        row = shown[i]
        values = (session_ids[i], timestamp, sessions[i].query, [ids[j] for j in row],
                  [ids[j] for j in row[clicked[i]]], [ids[j] for j in row[purchased[i]]])
        lines.append(json.dumps(dict(zip(SEARCH_LOG_FIELDS, values)), ensure_ascii=False) + "\n")
    out_path.parent.mkdir(parents=True, exist_ok=True)
    _write_text_atomically(out_path, "".join(lines))

    if truth_path is not None:
        truth = {
            "click_model": asdict(model),
            "theta": theta.tolist(),
            "sessions": [{"session_id": session_ids[i], "intent": s.intent,
                          "perturbed": bool(perturbed[i]),
                          "repeat_of": None if s.repeat_of is None else session_ids[s.repeat_of]}
                         for i, s in enumerate(sessions)],
        }
        truth_path = Path(truth_path)
        truth_path.parent.mkdir(parents=True, exist_ok=True)
        _write_text_atomically(truth_path, json.dumps(truth, indent=1, ensure_ascii=False) + "\n")
    return out_path
