"""Why a ranking loses NDCG: which named attribute its top results get wrong.

NDCG@10 says how far a ranking is from the ideal, not why. Two counts answer that:
  - in the top-K slots the ideal ranking fills with grade-2 products, the ones holding
    something else, and which of the query's attributes that product fails (a product can fail
    several); slots the catalog cannot fill with grade 2 are not blamed on the model;
  - the grade mix of the top K against the ideal's: extra grade-0 products mean the article
    type is wrong where a same-type product (grade 1) was available.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence

import numpy as np

from tfmmsearch.config import AttributeColumnsConfig
from tfmmsearch.data.queries import Query, clean_value, resolve_columns
from tfmmsearch.data.schema import Product

GRADES = (0, 1, 2)


def _same(product_value: str | None, query_value: str) -> bool:
    """The grader's rule: case-insensitive, and an unknown product value never matches."""
    product_value = clean_value(product_value)
    return product_value is not None and product_value.casefold() == query_value.casefold()


def attribute_errors(top_k: np.ndarray, grades: np.ndarray, queries: Sequence[Query],
                     products: Sequence[Product],
                     columns: AttributeColumnsConfig | Mapping[str, str], k: int = 10) -> dict:
    """Per-attribute error counts of a ranking's top k (`top_k`: product indices [Q, >= k])."""
    if len(top_k) != len(queries) or grades.shape != (len(queries), len(products)):
        raise ValueError(f"top_k {np.shape(top_k)} and grades {grades.shape} do not fit "
                         f"{len(queries)} queries x {len(products)} products")
    roles = resolve_columns(columns)
    top = np.asarray(top_k)[:, :k]
    wrong: Counter[str] = Counter()
    named: Counter[str] = Counter()
    blamed_slots = 0
    for row, query in enumerate(queries):
        named.update(query.attributes.keys())
        fillable = min(top.shape[1], int((grades[row] == 2).sum()))
        for product_index in top[row, :fillable]:
            if grades[row, product_index] == 2:
                continue
            blamed_slots += 1
            attributes = products[product_index].attributes
            wrong.update(role for role, value in query.attributes.items()
                         if not _same(attributes.get(roles[role]), value))
    ours = np.take_along_axis(grades, top, axis=1)
    ideal = -np.sort(-grades, axis=1)[:, :top.shape[1]]
    return {
        "k": int(top.shape[1]),
        "queries": len(queries),
        "slots": int(top.size),
        "fillable_grade2_slots": int(np.minimum(top.shape[1], (grades == 2).sum(axis=1)).sum()),
        "blamed_slots": blamed_slots,
        "wrong_attribute": {role: wrong[role] for role in roles if wrong[role]},
        "queries_naming": {role: named[role] for role in roles if named[role]},
        "grade_counts": {str(g): int((ours == g).sum()) for g in GRADES},
        "ideal_grade_counts": {str(g): int((ideal == g).sum()) for g in GRADES},
    }
