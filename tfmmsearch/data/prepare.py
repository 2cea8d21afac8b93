"""Data preparation entrypoint: catalog -> validated products -> splits -> attribute queries.

This is the first stage of every run. It resolves the catalog (generating the synthetic one
when the config names none), validates it under the config's bad-row policy, splits products
so that no product is in two splits, generates graded attribute queries per split (held-out
phrasings for validation and test), and writes all of it under `data.work_dir`.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

from tfmmsearch.config import Config
from tfmmsearch.data.catalog import read_catalog
from tfmmsearch.data.queries import Query, generate_queries
from tfmmsearch.data.schema import Catalog
from tfmmsearch.data.splits import split_products
from tfmmsearch.data.synthetic import generate_synthetic_catalog

logger = logging.getLogger(__name__)

SPLITS = ("train", "validation", "test")
_SYNTHETIC_MARKER = "synthetic.json"


@dataclass
class PreparedData:
    """Everything later stages need, in memory, plus where it was written."""

    catalog: Catalog
    splits: dict[str, list[str]]
    queries: dict[str, list[Query]]
    work_dir: Path

    def split_catalog(self, split: str) -> Catalog:
        return self.catalog.subset(self.splits[split])


def resolve_catalog_dir(config: Config) -> Path:
    """The configured catalog directory, or the synthetic catalog (generated once per parameters)."""
    if config.data.catalog_dir:
        return Path(config.data.catalog_dir)
    synthetic = config.data.synthetic
    out_dir = Path(config.data.work_dir) / "synthetic_catalog"
    params = {"num_items": synthetic.num_items, "seed": synthetic.seed, "image_size": synthetic.image_size}
    marker = out_dir / _SYNTHETIC_MARKER
    if marker.is_file() and json.loads(marker.read_text()) == params:
        logger.info("using the synthetic catalog already at %s", out_dir)
        return out_dir
    logger.info("generating a synthetic catalog of %d items (seed %d) into %s",
                synthetic.num_items, synthetic.seed, out_dir)
    generate_synthetic_catalog(out_dir, **params)
    marker.write_text(json.dumps(params))
    return out_dir


def _write_queries(path: Path, queries: list[Query]) -> None:
    with path.open("w", encoding="utf-8") as handle:
        for query in queries:
            handle.write(json.dumps(asdict(query), ensure_ascii=False) + "\n")


def prepare_data(config: Config, progress: bool = True) -> PreparedData:
    """Runs the data stage of `config` and returns the prepared catalog, splits and queries."""
    data = config.data
    work_dir = Path(data.work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    catalog = read_catalog(resolve_catalog_dir(config), on_bad_row=data.on_bad_row, progress=progress)

    fractions = (data.splits.train, data.splits.validation, data.splits.test)
    splits = split_products([p.product_id for p in catalog.products], fractions, seed=data.splits.seed)
    queries: dict[str, list[Query]] = {}
    for split in SPLITS:
        phrasing = "train" if split == "train" else "heldout"
        queries[split] = generate_queries(
            catalog.subset(splits[split]).products,
            data.attributes,
            seed=data.queries.seed,
            phrasings_per_set=data.queries.phrasings_per_attribute_set,
            max_extra_attributes=data.queries.max_extra_attributes,
            phrasing_split=phrasing,
            heldout_fraction=data.queries.heldout_phrasing_fraction,
        )
        _write_queries(work_dir / f"queries_{split}.jsonl", queries[split])
        logger.info("%s split: %d products, %d queries (%s phrasings)",
                    split, len(splits[split]), len(queries[split]), phrasing)
    (work_dir / "splits.json").write_text(json.dumps(splits))
    logger.info("wrote splits.json and queries_{train,validation,test}.jsonl to %s", work_dir)
    return PreparedData(catalog, splits, queries, work_dir)
