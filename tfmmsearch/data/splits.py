"""Product-level train/validation/test splits that stay put when the catalog grows.

A product's split is a function of (seed, product_id) alone, a hash mapped onto the fraction
intervals, so adding products never moves existing ones between splits (a test product can
not leak into training on the next data refresh), and the input order does not matter. The
price is that split sizes match the fractions only approximately on small catalogs.
"""

from __future__ import annotations

import bisect
import hashlib
import math
from collections.abc import Iterable, Mapping, Sequence

SPLIT_NAMES = ("train", "validation", "test")


class SplitError(ValueError):
    """Invalid split fractions or product ids; the message says which value is wrong."""


def validate_fractions(fractions: Sequence[float] | Mapping[str, float]) -> tuple[float, float, float]:
    """(train, validation, test) fractions, checked: three finite non-negative numbers summing to 1."""
    if isinstance(fractions, Mapping):
        unknown = set(fractions) - set(SPLIT_NAMES)
        missing = set(SPLIT_NAMES) - set(fractions)
        if unknown or missing:
            raise SplitError(f"split fractions need exactly the keys {', '.join(SPLIT_NAMES)}; "
                             f"unknown: {sorted(unknown)}, missing: {sorted(missing)}")
        values = [fractions[name] for name in SPLIT_NAMES]
    else:
        values = list(fractions)
        if len(values) != len(SPLIT_NAMES):
            raise SplitError(f"split fractions need {len(SPLIT_NAMES)} values "
                             f"({', '.join(SPLIT_NAMES)}), got {len(values)}: {values!r}")
    for name, value in zip(SPLIT_NAMES, values):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise SplitError(f"split fraction {name!r} must be a finite number, got {value!r}")
        if value < 0:
            raise SplitError(f"split fraction {name!r} must be >= 0, got {value!r}")
    total = math.fsum(values)
    if not math.isclose(total, 1.0, abs_tol=1e-6):
        raise SplitError(f"split fractions must sum to 1, got {total:g} "
                         f"({', '.join(f'{n}={v:g}' for n, v in zip(SPLIT_NAMES, values))})")
    return tuple(float(value) for value in values)  # type: ignore[return-value]


def _unit_hash(seed: int, product_id: str) -> float:
    """A uniform number in [0, 1) fixed by (seed, product_id)."""
    digest = hashlib.sha256(f"split\x1f{seed}\x1f{product_id}".encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2.0 ** 64


def _assign(position: float, bounds: list[float], last_nonempty: int) -> str:
    index = bisect.bisect_right(bounds, position)
    return SPLIT_NAMES[min(index, last_nonempty)]


def _bounds(fractions: tuple[float, float, float]) -> tuple[list[float], int]:
    bounds = [math.fsum(fractions[: i + 1]) for i in range(len(fractions))]
    last_nonempty = max(i for i, value in enumerate(fractions) if value > 0)
    return bounds, last_nonempty


def split_products(product_ids: Iterable[str],
                   fractions: Sequence[float] | Mapping[str, float] = (0.8, 0.1, 0.1),
                   seed: int = 0) -> dict[str, list[str]]:
    """{"train", "validation", "test"} -> product ids (input order kept); no id in two splits."""
    bounds, last_nonempty = _bounds(validate_fractions(fractions))
    splits: dict[str, list[str]] = {name: [] for name in SPLIT_NAMES}
    seen: set[str] = set()
    for position, product_id in enumerate(product_ids):
        if not isinstance(product_id, str) or not product_id:
            raise SplitError(f"product id at position {position} must be a non-empty string, "
                             f"got {product_id!r}")
        if product_id in seen:
            raise SplitError(f"product id {product_id!r} (position {position}) appears twice; "
                             f"ids must be unique to split by product")
        seen.add(product_id)
        splits[_assign(_unit_hash(seed, product_id), bounds, last_nonempty)].append(product_id)
    return splits
