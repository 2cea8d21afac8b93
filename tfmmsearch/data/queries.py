"""Attribute queries with graded relevance (PROTOCOL.md), and the positives for training.

A query names an article type plus up to three of gender, base colour and usage, taken from
products that exist, and is phrased the way shoppers write (see `phrasing`). Relevance is
graded from the catalog's attribute columns: 2 when every named attribute matches, 1 when
only the article type does, 0 otherwise. Unknown product values (`NA`, empty) never match,
so a product with no recorded colour is not a hit for "navy tees".

Query attributes are keyed by role (`article_type`, `gender`, `base_colour`, `usage`); the
column config says which catalog column holds each role, so queries stay valid for any
catalog layout.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import random
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from tfmmsearch.config import AttributeColumnsConfig
from tfmmsearch.data.phrasing import EXTRA_ROLES, ROLES, TEMPLATES, template_ids_for
from tfmmsearch.data.schema import Product

UNKNOWN_VALUES = frozenset({"", "na", "n/a", "nan", "none", "null"})

# Codes in the vectorised grader: product values the catalog does not know, roles a query
# does not name, and query values no product has.
_UNKNOWN = -1
_NOT_NAMED = -2
_UNMATCHED = -3


@dataclass(frozen=True)
class Query:
    """One attribute query. `phrasing_id` is the template id it was written with."""

    text: str
    attributes: dict[str, str] = field(hash=False)
    phrasing_id: int = -1

    def __post_init__(self) -> None:
        unknown = set(self.attributes) - set(ROLES)
        if unknown:
            raise ValueError(f"query {self.text!r}: unknown attribute roles {sorted(unknown)}; "
                             f"roles are {', '.join(ROLES)}")
        if "article_type" not in self.attributes:
            raise ValueError(f"query {self.text!r}: attributes must name article_type")
        for role, value in self.attributes.items():
            if not isinstance(value, str) or clean_value(value) is None:
                raise ValueError(f"query {self.text!r}: {role} has no usable value ({value!r})")

    @property
    def attribute_key(self) -> tuple[tuple[str, str], ...]:
        """The attribute set as a hashable, role-ordered tuple (equal for all its phrasings)."""
        return tuple((role, self.attributes[role]) for role in ROLES if role in self.attributes)


def clean_value(value: str | None) -> str | None:
    """Whitespace-collapsed value, or None when the catalog does not know it (NA, empty)."""
    if value is None:
        return None
    text = " ".join(str(value).split())
    return None if text.lower() in UNKNOWN_VALUES else text


def _match_key(value: str | None) -> str | None:
    text = clean_value(value)
    return None if text is None else text.casefold()


def resolve_columns(columns: AttributeColumnsConfig | Mapping[str, str]) -> dict[str, str]:
    """Role -> catalog column, from the config dataclass or a mapping (roles may be left out)."""
    if dataclasses.is_dataclass(columns) and not isinstance(columns, type):
        mapping = dataclasses.asdict(columns)
    elif isinstance(columns, Mapping):
        mapping = dict(columns)
    else:
        raise TypeError(f"columns must be an AttributeColumnsConfig or a mapping, "
                        f"got {type(columns).__name__}")
    unknown = set(mapping) - set(ROLES)
    if unknown:
        raise ValueError(f"attribute columns: unknown roles {sorted(unknown)}; "
                         f"roles are {', '.join(ROLES)}")
    if not mapping.get("article_type"):
        raise ValueError("attribute columns: article_type must name a catalog column")
    return {role: str(mapping[role]) for role in ROLES if mapping.get(role)}


def _product_value(product: Product, column: str) -> str | None:
    return clean_value(product.attributes.get(column))


# --------------------------------------------------------------------------- grading


def grade(query: Query, product: Product,
          columns: AttributeColumnsConfig | Mapping[str, str]) -> int:
    """PROTOCOL grade of one pair: 2 all named attributes match, 1 only the type, 0 otherwise."""
    roles = resolve_columns(columns)
    _check_roles([query], roles)

    def matches(role: str) -> bool:
        wanted = _match_key(query.attributes[role])
        return wanted is not None and _match_key(product.attributes.get(roles[role])) == wanted

    if not matches("article_type"):
        return 0
    others = all(matches(role) for role in EXTRA_ROLES if role in query.attributes)
    return 2 if others else 1


def _check_roles(queries: Sequence[Query], roles: dict[str, str]) -> None:
    for query in queries:
        missing = set(query.attributes) - set(roles)
        if missing:
            raise ValueError(f"query {query.text!r} names {sorted(missing)}, which the attribute "
                             f"columns config does not map to a catalog column")


def _encode(queries: Sequence[Query], products: Sequence[Product],
            roles: dict[str, str]) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Integer codes per role: equal codes mean equal values, so grading is array compares."""
    product_codes: dict[str, np.ndarray] = {}
    query_codes: dict[str, np.ndarray] = {}
    for role, column in roles.items():
        vocabulary: dict[str, int] = {}
        codes = np.full(len(products), _UNKNOWN, dtype=np.int32)
        for index, product in enumerate(products):
            key = _match_key(product.attributes.get(column))
            if key is not None:
                codes[index] = vocabulary.setdefault(key, len(vocabulary))
        product_codes[role] = codes
        named = np.full(len(queries), _NOT_NAMED, dtype=np.int32)
        for index, query in enumerate(queries):
            if role in query.attributes:
                named[index] = vocabulary.get(_match_key(query.attributes[role]), _UNMATCHED)
        query_codes[role] = named
    return query_codes, product_codes


def iter_grade_blocks(queries: Sequence[Query], products: Sequence[Product],
                      columns: AttributeColumnsConfig | Mapping[str, str],
                      block_size: int = 1024) -> Iterator[tuple[int, np.ndarray]]:
    """(first query index, int8 grades [block, P]) blocks, so big query sets stay in memory bounds."""
    roles = resolve_columns(columns)
    _check_roles(queries, roles)
    query_codes, product_codes = _encode(queries, products, roles)
    for start in range(0, len(queries), block_size):
        stop = min(start + block_size, len(queries))
        type_match = (query_codes["article_type"][start:stop, None]
                      == product_codes["article_type"][None, :])
        others = np.ones_like(type_match)
        for role in EXTRA_ROLES:
            if role not in roles:
                continue
            wanted = query_codes[role][start:stop]
            named = wanted != _NOT_NAMED
            if not named.any():
                continue
            others &= (wanted[:, None] == product_codes[role][None, :]) | ~named[:, None]
        yield start, (type_match.astype(np.int8) * (1 + others.astype(np.int8))).astype(np.int8)


def grade_matrix(queries: Sequence[Query], products: Sequence[Product],
                 columns: AttributeColumnsConfig | Mapping[str, str]) -> np.ndarray:
    """All PROTOCOL grades, int8 [len(queries), len(products)], equal to `grade` pair by pair."""
    grades = np.zeros((len(queries), len(products)), dtype=np.int8)
    if len(products):
        for start, block in iter_grade_blocks(queries, products, columns):
            grades[start:start + len(block)] = block
    return grades


def drop_unanswerable(queries: Sequence[Query], products: Sequence[Product],
                      columns: AttributeColumnsConfig | Mapping[str, str]) -> list[Query]:
    """The queries with at least one grade-2 product among `products` (PROTOCOL drops the rest)."""
    roles = resolve_columns(columns)
    _check_roles(queries, roles)
    present: dict[tuple[str, ...], set[tuple]] = {}
    kept = []
    for query in queries:
        named = tuple(role for role in ROLES if role in query.attributes)
        if named not in present:
            present[named] = {
                values for product in products
                if None not in (values := tuple(_match_key(product.attributes.get(roles[role]))
                                                for role in named))
            }
        if tuple(_match_key(query.attributes[role]) for role in named) in present[named]:
            kept.append(query)
    return kept


# --------------------------------------------------------------------------- attribute sets


AttributeSet = tuple[tuple[str, str], ...]  # ((role, value), ...) in ROLES order


def attribute_sets(products: Sequence[Product],
                   columns: AttributeColumnsConfig | Mapping[str, str],
                   max_extra_attributes: int = 3, min_support: int = 1) -> dict[AttributeSet, int]:
    """Every attribute set at least `min_support` products have, with that count (its support)."""
    if not 0 <= max_extra_attributes <= len(EXTRA_ROLES):
        raise ValueError(f"max_extra_attributes must be in 0..{len(EXTRA_ROLES)}, "
                         f"got {max_extra_attributes!r}")
    roles = resolve_columns(columns)
    extra_roles = [role for role in EXTRA_ROLES if role in roles]
    support: dict[tuple, int] = {}
    spelling: dict[tuple, AttributeSet] = {}  # match key -> first spelling seen
    any_type = False
    for product in products:
        article_type = _product_value(product, roles["article_type"])
        if article_type is None:
            continue
        any_type = True
        known = [(role, value) for role in extra_roles
                 if (value := _product_value(product, roles[role])) is not None]
        for size in range(min(max_extra_attributes, len(known)) + 1):
            for extras in itertools.combinations(known, size):
                attributes = (("article_type", article_type),) + extras
                key = tuple((role, value.casefold()) for role, value in attributes)
                support[key] = support.get(key, 0) + 1
                spelling.setdefault(key, attributes)
    if products and not any_type:
        raise ValueError(f"no product has a value in the article_type column "
                         f"{roles['article_type']!r}; check the attribute columns config")
    return {spelling[key]: count for key, count in sorted(support.items()) if count >= min_support}


def _select_sets(sets: Sequence[AttributeSet], seed: int, max_sets: int | None) -> list[AttributeSet]:
    """Up to `max_sets` sets, shuffled by seed and interleaved by size (0, 1, 2, 3 extras, ...)

    so a capped query set mixes broad and specific queries instead of being mostly the
    far more numerous three-attribute combinations."""
    if max_sets is None or max_sets >= len(sets):
        return list(sets)
    if max_sets < 0:
        raise ValueError(f"max_sets must be >= 0 or None, got {max_sets!r}")
    rng = random.Random(f"attribute-sets:{seed}")
    groups: dict[int, list[AttributeSet]] = {}
    for attribute_set in sets:
        groups.setdefault(len(attribute_set), []).append(attribute_set)
    for size in sorted(groups):
        rng.shuffle(groups[size])
    interleaved = [s for round_ in itertools.zip_longest(*(groups[k] for k in sorted(groups)))
                   for s in round_ if s is not None]
    return interleaved[:max_sets]


def _set_rng(seed: int, attribute_set: AttributeSet) -> random.Random:
    """A generator per (seed, set): a set's phrasings do not change when other sets come or go."""
    text = "\x1f".join([str(seed)] + [f"{role}={value}" for role, value in attribute_set])
    return random.Random(int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "big"))


def phrase_attribute_set(attribute_set: AttributeSet, template_ids: Sequence[int],
                         count: int, seed: int = 0) -> list[Query]:
    """Up to `count` distinct phrasings of one set, each from one of `template_ids`.

    Templates are used without repetition first; once all were used, they are reused with
    other synonyms. Fewer than `count` come back when the wording runs out (a bare type)."""
    rng = _set_rng(seed, attribute_set)
    attributes = dict(attribute_set)
    order = list(template_ids)
    rng.shuffle(order)
    queries: list[Query] = []
    seen: set[str] = set()
    attempts = 0
    while len(queries) < count and attempts < 4 * (count + len(order)):
        template_id = order[attempts % len(order)]
        attempts += 1
        text = TEMPLATES[template_id].render(attributes, rng)
        if text not in seen:
            seen.add(text)
            queries.append(Query(text, dict(attributes), template_id))
    return queries


def generate_queries(products: Sequence[Product],
                     columns: AttributeColumnsConfig | Mapping[str, str],
                     seed: int = 0, phrasings_per_set: int = 4, max_extra_attributes: int = 3,
                     max_sets: int | None = None, phrasing_split: str | None = None,
                     heldout_fraction: float = 0.2, min_support: int = 1) -> list[Query]:
    """Graded attribute queries for `products`, deterministic by seed.

    `phrasing_split` picks the templates: None all, "train" the training ones, "heldout" the
    ones held out (disjoint from training). `max_sets` caps the attribute sets (a seeded mix of
    sizes); `min_support` skips sets fewer products have. Queries with no grade-2 product are
    dropped."""
    if phrasings_per_set < 1:
        raise ValueError(f"phrasings_per_set must be >= 1, got {phrasings_per_set!r}")
    template_ids = template_ids_for(phrasing_split, seed, heldout_fraction)
    sets = attribute_sets(products, columns, max_extra_attributes, min_support)
    sets = _select_sets(list(sets), seed, max_sets)
    queries = [query for attribute_set in sets
               for query in phrase_attribute_set(attribute_set, template_ids, phrasings_per_set, seed)]
    return drop_unanswerable(queries, products, columns)


# --------------------------------------------------------------------------- training pairs


def training_pairs(queries: Sequence[Query], products: Sequence[Product],
                   columns: AttributeColumnsConfig | Mapping[str, str], min_grade: int = 2,
                   max_per_query: int | None = None, seed: int = 0) -> list[tuple[str, str, int]]:
    """(query text, product id, grade) for every pair graded `min_grade` or more.

    `max_per_query` samples that many products per query (by seed), so a broad query like
    "tees" does not flood a training epoch with thousands of near-identical pairs."""
    if min_grade not in (1, 2):
        raise ValueError(f"min_grade must be 1 or 2, got {min_grade!r}")
    if max_per_query is not None and max_per_query < 1:
        raise ValueError(f"max_per_query must be >= 1 or None, got {max_per_query!r}")
    rng = np.random.default_rng(seed)
    pairs: list[tuple[str, str, int]] = []
    if not products:
        return pairs
    for start, block in iter_grade_blocks(queries, products, columns):
        for offset, row in enumerate(block):
            hits = np.flatnonzero(row >= min_grade)
            if max_per_query is not None and len(hits) > max_per_query:
                hits = np.sort(rng.choice(hits, size=max_per_query, replace=False))
            text = queries[start + offset].text
            pairs.extend((text, products[index].product_id, int(row[index])) for index in hits)
    return pairs
