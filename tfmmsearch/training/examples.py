"""Training examples: (query, relevant product) pairs with the extras the losses need.

Each example is a pair of indices, into the unique query texts and into the products, plus
the product's sampling probability (for logQ correction: popular products are sampled as
in-batch negatives more often than rare ones), attribute ids of both sides (for graded
ranking labels and for not treating another relevant product as a negative), the pair's
weight and grade, and a hard negative where the source has one.

Two sources make examples: attribute queries (`build_examples`: grade-2 pairs, weight 1, no
hard negative) and the search log (`log_examples`: purchases and clicks with their
position-bias weights, a skipped product as hard negative). `mix_examples` joins them over
one product list, each source's weights scaled to its configured share of the loss.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from tfmmsearch.data.log_pairs import LogPair
from tfmmsearch.data.queries import ROLES, Query, clean_value, resolve_columns, training_pairs
from tfmmsearch.data.schema import Product

NO_NEGATIVE = -1  # negative_index of a pair without a hard negative
UNNAMED = -1  # an attribute id the query does not name / the item does not have


@dataclass
class AttributeIds:
    """Role -> value -> id, over a catalog's values; -1 = not named / unknown."""

    vocabularies: dict[str, dict[str, int]]
    read: bool = True  # False: the catalog's attribute columns are never looked at

    @classmethod
    def unread(cls) -> "AttributeIds":
        """Ids that read no column: every item and query is UNNAMED (log-only training)."""
        return cls({role: {} for role in ROLES}, read=False)

    @classmethod
    def from_products(cls, products: list[Product], columns) -> "AttributeIds":
        roles = resolve_columns(columns)
        vocabularies: dict[str, dict[str, int]] = {role: {} for role in ROLES}
        for product in products:
            for role, column in roles.items():
                value = clean_value(product.attributes.get(column))
                if value is not None:
                    vocabularies[role].setdefault(value.casefold(), len(vocabularies[role]))
        return cls(vocabularies)

    def _ids(self, values: dict[str, str | None]) -> list[int]:
        ids = []
        for role in ROLES:
            value = clean_value(values.get(role))
            ids.append(self.vocabularies[role].get(value.casefold(), UNNAMED) if value
                       else UNNAMED)
        return ids

    def of_products(self, products: list[Product], columns) -> np.ndarray:
        if not self.read:
            return np.full((len(products), len(ROLES)), UNNAMED, np.int32)
        roles = resolve_columns(columns)
        return np.array([self._ids({role: p.attributes.get(column) for role, column in roles.items()})
                         for p in products], np.int32).reshape(len(products), len(ROLES))

    def of_queries(self, queries: list[Query]) -> np.ndarray:
        return np.array([self._ids(q.attributes) for q in queries], np.int32).reshape(
            len(queries), len(ROLES))


@dataclass
class TrainingExamples:
    """Pairs as index arrays into `query_texts` and into `product_ids` (the products they were
    built from, in order)."""

    query_texts: list[str]
    query_index: np.ndarray  # int32 [N]
    product_index: np.ndarray  # int32 [N]
    sampling_probability: np.ndarray  # float32 [N]: product frequency among all pairs
    query_attributes: np.ndarray  # int32 [len(query_texts), roles]
    item_attributes: np.ndarray  # int32 [num products, roles]
    product_ids: list[str] = field(default_factory=list)
    weight: np.ndarray | None = None  # float32 [N], mean 1 (default: all 1)
    positive_grade: np.ndarray | None = None  # int32 [N]: the pair's grade (default: all 2)
    negative_index: np.ndarray | None = None  # int32 [N]: hard negative product, NO_NEGATIVE

    def __post_init__(self) -> None:
        count = len(self.query_index)
        if self.weight is None:
            self.weight = np.ones(count, np.float32)
        if self.positive_grade is None:
            self.positive_grade = np.full(count, 2, np.int32)
        if self.negative_index is None:
            self.negative_index = np.full(count, NO_NEGATIVE, np.int32)

    def __len__(self) -> int:
        return len(self.query_index)

    @property
    def has_negatives(self) -> bool:
        return bool((self.negative_index != NO_NEGATIVE).any())


def _sampling_probability(product_index: np.ndarray, num_products: int) -> np.ndarray:
    counts = np.bincount(product_index, minlength=num_products)
    return (counts[product_index] / max(1, len(product_index))).astype(np.float32)


def build_examples(queries: list[Query], products: list[Product], columns,
                   max_per_query: int | None = 32, seed: int = 0,
                   attribute_ids: AttributeIds | None = None) -> TrainingExamples:
    """Grade-2 pairs of attribute `queries` over `products` (capped per query)."""
    attribute_ids = attribute_ids or AttributeIds.from_products(products, columns)
    pairs = training_pairs(queries, products, columns, min_grade=2, max_per_query=max_per_query,
                           seed=seed)
    if not pairs:
        raise ValueError("no training pairs: no query has a grade-2 product in the training split")
    query_position = {}
    unique_queries: list[Query] = []
    for query in queries:
        if query.text not in query_position:
            query_position[query.text] = len(unique_queries)
            unique_queries.append(query)
    product_position = {p.product_id: i for i, p in enumerate(products)}
    query_index = np.array([query_position[text] for text, _, _ in pairs], np.int32)
    product_index = np.array([product_position[pid] for _, pid, _ in pairs], np.int32)
    return TrainingExamples(
        query_texts=[q.text for q in unique_queries],
        query_index=query_index,
        product_index=product_index,
        sampling_probability=_sampling_probability(product_index, len(products)),
        query_attributes=attribute_ids.of_queries(unique_queries),
        item_attributes=attribute_ids.of_products(products, columns),
        product_ids=[p.product_id for p in products],
    )


def log_examples(pairs: list[LogPair], products: list[Product], columns,
                 attribute_ids: AttributeIds, seed: int = 0,
                 with_negatives: bool = True) -> TrainingExamples:
    """Search-log pairs over `products`, each with one of its skipped products (drawn by
    seed) as hard negative when `with_negatives`. Log queries name no attribute."""
    if not pairs:
        raise ValueError("no training pairs: the search log's training days have no click on a "
                         "product of the catalog")
    product_position = {p.product_id: i for i, p in enumerate(products)}
    query_position: dict[str, int] = {}
    for pair in pairs:
        query_position.setdefault(pair.query, len(query_position))
    rng = np.random.default_rng(seed)
    negatives = np.full(len(pairs), NO_NEGATIVE, np.int32)
    if with_negatives:
        for index, pair in enumerate(pairs):
            if pair.skipped:
                negatives[index] = product_position[pair.skipped[rng.integers(len(pair.skipped))]]
    product_index = np.array([product_position[pair.product_id] for pair in pairs], np.int32)
    return TrainingExamples(
        query_texts=list(query_position),
        query_index=np.array([query_position[pair.query] for pair in pairs], np.int32),
        product_index=product_index,
        sampling_probability=_sampling_probability(product_index, len(products)),
        query_attributes=np.full((len(query_position), len(ROLES)), UNNAMED, np.int32),
        item_attributes=attribute_ids.of_products(products, columns),
        product_ids=[p.product_id for p in products],
        weight=np.array([pair.weight for pair in pairs], np.float32),
        positive_grade=np.array([pair.grade for pair in pairs], np.int32),
        negative_index=negatives,
    )


def mix_examples(parts: list[tuple[TrainingExamples, float]], products: list[Product], columns,
                 attribute_ids: AttributeIds) -> TrainingExamples:
    """One example set over `products` from several sources, each (examples, share).

    Each source's weights are scaled so that its pairs carry `share / sum(shares)` of the
    total weight, and all weights average 1 (so the loss keeps its scale). A query text that
    several sources share keeps the attribute ids of the first source naming any."""
    parts = [(examples, share) for examples, share in parts if share > 0 and len(examples)]
    if not parts:
        raise ValueError("no training pairs from any source with a share above 0")
    product_position = {p.product_id: i for i, p in enumerate(products)}
    texts: dict[str, int] = {}
    query_rows: list[np.ndarray] = []
    columns_out = {name: [] for name in ("query_index", "product_index", "weight",
                                         "positive_grade", "negative_index")}
    total = sum(len(examples) for examples, _ in parts)
    shares = sum(share for _, share in parts)
    for examples, share in parts:
        remap = np.array([product_position[pid] for pid in examples.product_ids], np.int32)
        query_map = []
        for text, row in zip(examples.query_texts, examples.query_attributes):
            if text not in texts:
                texts[text] = len(texts)
                query_rows.append(row)
            elif (query_rows[texts[text]] == UNNAMED).all():
                query_rows[texts[text]] = row
            query_map.append(texts[text])
        columns_out["query_index"].append(np.array(query_map, np.int32)[examples.query_index])
        columns_out["product_index"].append(remap[examples.product_index])
        scale = (share / shares) * total / float(examples.weight.sum())
        columns_out["weight"].append(examples.weight * scale)
        columns_out["positive_grade"].append(examples.positive_grade)
        columns_out["negative_index"].append(np.where(
            examples.negative_index == NO_NEGATIVE, NO_NEGATIVE,
            remap[np.maximum(examples.negative_index, 0)]))
    joined = {name: np.concatenate(values) for name, values in columns_out.items()}
    return TrainingExamples(
        query_texts=list(texts),
        query_index=joined["query_index"].astype(np.int32),
        product_index=joined["product_index"].astype(np.int32),
        sampling_probability=_sampling_probability(joined["product_index"], len(products)),
        query_attributes=np.array(query_rows, np.int32).reshape(len(texts), len(ROLES)),
        item_attributes=attribute_ids.of_products(products, columns),
        product_ids=[p.product_id for p in products],
        weight=joined["weight"].astype(np.float32),
        positive_grade=joined["positive_grade"].astype(np.int32),
        negative_index=joined["negative_index"].astype(np.int32),
    )
