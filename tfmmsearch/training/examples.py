"""Training examples: (query, relevant product) pairs with the extras the losses need.

Each example is a pair of indices, into the unique query texts and into the catalog's
products, plus the product's sampling probability (for logQ correction: popular products are
sampled as in-batch negatives more often than rare ones) and attribute ids of both sides (for
graded ranking labels and for not treating another relevant product as a negative).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tfmmsearch.data.queries import ROLES, Query, clean_value, resolve_columns, training_pairs
from tfmmsearch.data.schema import Product


@dataclass
class AttributeIds:
    """Role -> value -> id, over a catalog's values; -1 = not named / unknown."""

    vocabularies: dict[str, dict[str, int]]

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
            ids.append(self.vocabularies[role].get(value.casefold(), -1) if value else -1)
        return ids

    def of_products(self, products: list[Product], columns) -> np.ndarray:
        roles = resolve_columns(columns)
        return np.array([self._ids({role: p.attributes.get(column) for role, column in roles.items()})
                         for p in products], np.int32).reshape(len(products), len(ROLES))

    def of_queries(self, queries: list[Query]) -> np.ndarray:
        return np.array([self._ids(q.attributes) for q in queries], np.int32).reshape(
            len(queries), len(ROLES))


@dataclass
class TrainingExamples:
    """Pairs as index arrays into `query_texts` and into the products they were built from."""

    query_texts: list[str]
    query_index: np.ndarray  # int32 [N]
    product_index: np.ndarray  # int32 [N]
    sampling_probability: np.ndarray  # float32 [N]: product frequency among all pairs
    query_attributes: np.ndarray  # int32 [len(query_texts), roles]
    item_attributes: np.ndarray  # int32 [num products, roles]

    def __len__(self) -> int:
        return len(self.query_index)


def build_examples(queries: list[Query], products: list[Product], columns,
                   max_per_query: int | None = 32, seed: int = 0,
                   attribute_ids: AttributeIds | None = None) -> TrainingExamples:
    """Grade-2 pairs of `queries` over `products` (capped per query), ready for tf.data."""
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
    counts = np.bincount(product_index, minlength=len(products))
    probability = (counts[product_index] / len(pairs)).astype(np.float32)
    return TrainingExamples(
        query_texts=[q.text for q in unique_queries],
        query_index=query_index,
        product_index=product_index,
        sampling_probability=probability,
        query_attributes=attribute_ids.of_queries(unique_queries),
        item_attributes=attribute_ids.of_products(products, columns),
    )
