"""Item features (model.item_features) on the data side: raw values, vocabularies, statistics.

Config-declared catalog columns (brand, price, material, ...) are the item tower's third
modality, "attributes". What the model needs to read them is data, computed once from the
catalog's products when a run starts and written to the run directory as JSON
(`ITEM_FEATURES_FILE`), so a reloaded or exported model reads values exactly as training did:

- categorical / multi_categorical: the vocabulary, the `max_vocabulary` most frequent values
  (ties by value), most frequent first; the model gives id 0 to every other value (the
  out-of-vocabulary bucket) and ids 1.. to the vocabulary in this order;
- numeric: mean and std of the transformed values present in the catalog (std 1 when fewer
  than two distinct values), which the model standardises with.

Raw values travel as strings, one column per configured feature in config order
(`attribute_matrix`); parsing them (contract.attribute_value, contract.parse_number) happens in
the model's graph, so training and serving share one rule. This module computes the statistics
with the Python side of the same rules and imports no TensorFlow.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from tfmmsearch.config import ItemFeatureConfig, ConfigError
from tfmmsearch.contract import attribute_value, parse_number

ITEM_FEATURES_FILE = "item_features.json"  # in a run directory
FORMAT_VERSION = 1
NUMERIC_CLIP = 5.0  # standardised numeric values are clipped to +-5 std (a 1e12 price typo)


def categorical_values(raw: str | None, separator: str | None = None) -> list[str]:
    """The present values of one raw cell: [] when missing, one value for a categorical
    column, the present parts between `separator`s for a multi_categorical one."""
    if separator is None:
        value = attribute_value(raw)
        return [] if value is None else [value]
    return [value for value in (attribute_value(part) for part in (raw or "").split(separator))
            if value is not None]


def numeric_value(raw: str | None, transform: str) -> float | None:
    """A numeric cell after its transform, or None when missing (log1p: negatives too)."""
    number = parse_number(raw)
    if number is None:
        return None
    if transform == "log1p":
        return math.log1p(number) if number >= 0 else None
    return number


@dataclass(frozen=True)
class FeatureStats:
    """What the model needs to read one item-feature column (one model.item_features entry)."""

    column: str
    kind: str
    vocabulary: tuple[str, ...] = ()  # categorical kinds: most frequent first
    separator: str = ""  # multi_categorical
    transform: str = "none"  # numeric
    mean: float = 0.0  # numeric: of the transformed present values
    std: float = 1.0
    present: int = 0  # products with a value (for a numeric column: a parseable one)
    missing: int = 0
    out_of_vocabulary: int = 0  # categorical kinds: present values not kept in the vocabulary

    @property
    def categorical(self) -> bool:
        return self.kind in ("categorical", "multi_categorical")

    def matches(self, feature: ItemFeatureConfig) -> bool:
        """Whether these statistics were computed for this config entry."""
        same = (self.column, self.kind) == (feature.column, feature.kind)
        if self.kind == "multi_categorical":
            same = same and self.separator == feature.separator
        if self.kind == "numeric":
            same = same and self.transform == feature.transform
        if self.categorical:
            same = same and len(self.vocabulary) <= feature.max_vocabulary
        return same


@dataclass(frozen=True)
class ItemFeatureStats:
    """Every configured item feature's statistics, in config order (the model's column order)."""

    features: tuple[FeatureStats, ...] = field(default_factory=tuple)

    @property
    def columns(self) -> tuple[str, ...]:
        return tuple(feature.column for feature in self.features)

    def __len__(self) -> int:
        return len(self.features)

    def to_json(self) -> dict:
        return {"format_version": FORMAT_VERSION,
                "features": [{**asdict(feature), "vocabulary": list(feature.vocabulary)}
                             for feature in self.features]}

    @classmethod
    def from_json(cls, data: dict, source: str = "item features") -> "ItemFeatureStats":
        if not isinstance(data, dict) or data.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"{source}: not an item-feature file of format version "
                             f"{FORMAT_VERSION}")
        names = set(FeatureStats.__dataclass_fields__)
        features = []
        for index, entry in enumerate(data.get("features", [])):
            if not isinstance(entry, dict) or set(entry) - names or "column" not in entry:
                raise ValueError(f"{source}: feature {index} is not a feature's statistics")
            features.append(FeatureStats(**{**entry, "vocabulary": tuple(entry.get("vocabulary", ()))}))
        return cls(tuple(features))

    def check_config(self, configs: Sequence[ItemFeatureConfig], source: str = "") -> None:
        """ValueError unless these statistics belong to `configs` (the same columns, in order,
        of the same kinds and options)."""
        where = f"{source}: " if source else ""
        if len(configs) != len(self.features) or not all(
                stats.matches(feature) for stats, feature in zip(self.features, configs)):
            raise ValueError(f"{where}item-feature statistics for {list(self.columns)} do not "
                             f"match model.item_features "
                             f"{[(c.column, c.kind) for c in configs]}")

    def write(self, path: str | Path) -> Path:
        """Writes the JSON atomically (a temporary beside it, then renamed)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(json.dumps(self.to_json(), ensure_ascii=False, indent=1), encoding="utf-8")
        tmp.replace(path)
        return path

    @classmethod
    def read(cls, path: str | Path) -> "ItemFeatureStats":
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except ValueError as error:
            raise ValueError(f"{path}: not valid JSON ({error})") from None
        return cls.from_json(data, str(path))


NO_ITEM_FEATURES = ItemFeatureStats()


def _check_columns(products: Sequence, configs: Sequence[ItemFeatureConfig]) -> None:
    known = set()
    for product in products:
        known.update(product.attributes)
    for index, feature in enumerate(configs):
        if feature.column not in known:
            key = f"model.item_features[{index}].column"
            raise ConfigError(f"{key}: the catalog has no column {feature.column!r} (its "
                              f"attribute columns: {', '.join(sorted(known)) or 'none'})", key)


def feature_stats(products: Sequence, feature: ItemFeatureConfig) -> FeatureStats:
    """One column's statistics over `products` (objects with an `attributes` dict)."""
    cells = [product.attributes.get(feature.column, "") for product in products]
    if feature.kind == "numeric":
        values = [numeric_value(cell, feature.transform) for cell in cells]
        present = np.array([value for value in values if value is not None], np.float64)
        mean = float(present.mean()) if len(present) else 0.0
        std = float(present.std()) if len(present) else 0.0
        if not std > 1e-12:
            std = 1.0
        return FeatureStats(feature.column, feature.kind, transform=feature.transform, mean=mean,
                            std=std, present=len(present), missing=len(cells) - len(present))
    separator = feature.separator if feature.kind == "multi_categorical" else None
    counts: Counter = Counter()
    present = 0
    for cell in cells:
        values = categorical_values(cell, separator)
        counts.update(values)
        present += bool(values)
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    vocabulary = tuple(value for value, _ in ranked[:feature.max_vocabulary])
    dropped = sum(count for _, count in ranked[feature.max_vocabulary:])
    return FeatureStats(feature.column, feature.kind, vocabulary=vocabulary,
                        separator=separator or "", present=present, missing=len(cells) - present,
                        out_of_vocabulary=dropped)


def compute_item_feature_stats(products: Sequence, configs: Sequence[ItemFeatureConfig]
                               ) -> ItemFeatureStats:
    """Statistics of every configured column over the catalog's `products`, in config order.

    A column the catalog does not have is a ConfigError naming its model.item_features key.
    """
    if not configs:
        return NO_ITEM_FEATURES
    _check_columns(products, configs)
    return ItemFeatureStats(tuple(feature_stats(products, feature) for feature in configs))


def attribute_matrix(products: Sequence, columns: Sequence[str]) -> np.ndarray:
    """[N, C] object array of raw strings: each product's value of each column ("" where it has
    none). C may be 0. This is the model's `attribute_values` input."""
    columns = list(columns)
    matrix = np.empty((len(products), len(columns)), dtype=object)
    for row, product in enumerate(products):
        for col, column in enumerate(columns):
            matrix[row, col] = product.attributes.get(column, "") or ""
    return matrix
