"""Data preparation entrypoint: catalog -> validated products -> splits -> queries and log.

This is the first stage of every run. It resolves the catalog (generating the synthetic one
when the config names none), validates it under the config's bad-row policy, splits products
so that no product is in two splits, generates graded attribute queries per split (held-out
phrasings for validation and test) when attributes are a training source, reads the search
log when it is one (simulating one next to the synthetic catalog when asked) and splits its
sessions by day, and writes all of it under `data.work_dir`.

With `data.sources.attributes: 0` the catalog's attribute columns are never read: a catalog
with nothing but ids, titles and images trains from its log.
"""

from __future__ import annotations

import json
import logging
from datetime import date
from dataclasses import asdict, dataclass
from pathlib import Path

from tfmmsearch.config import Config
from tfmmsearch.data.catalog import read_catalog
from tfmmsearch.data.queries import Query, generate_queries
from tfmmsearch.data.schema import Catalog
from tfmmsearch.data.search_log import TimeSplit, read_search_log, split_by_time
from tfmmsearch.data.splits import split_products
from tfmmsearch.data.synthetic import CSV_COLUMNS, generate_synthetic_catalog
from tfmmsearch.data.synthetic_log import SEARCH_LOG_FILE, generate_synthetic_search_log

logger = logging.getLogger(__name__)

SPLITS = ("train", "validation", "test")
_SYNTHETIC_MARKER = "synthetic.json"
_SYNTHETIC_LOG_MARKER = "synthetic_log.json"
LOG_SPLIT_FILE = "search_log_split.json"


@dataclass
class PreparedData:
    """Everything later stages need, in memory, plus where it was written."""

    catalog: Catalog
    splits: dict[str, list[str]]
    queries: dict[str, list[Query]]  # empty lists when attributes are not a source
    work_dir: Path
    search_log: TimeSplit | None = None  # the log's sessions by day, when it is a source

    def split_catalog(self, split: str) -> Catalog:
        return self.catalog.subset(self.splits[split])


def resolve_catalog_dir(config: Config) -> Path:
    """The configured catalog directory, or the synthetic catalog (generated once per parameters)."""
    if config.data.catalog_dir:
        return Path(config.data.catalog_dir)
    synthetic = config.data.synthetic
    out_dir = Path(config.data.work_dir) / "synthetic_catalog"
    # The generator's columns are part of the marker: a catalog drawn by an older version
    # (fewer columns) is drawn again rather than reused.
    params = {"num_items": synthetic.num_items, "seed": synthetic.seed,
              "image_size": synthetic.image_size, "columns": list(CSV_COLUMNS)}
    marker = out_dir / _SYNTHETIC_MARKER
    if marker.is_file() and json.loads(marker.read_text()) == params:
        logger.info("using the synthetic catalog already at %s", out_dir)
        return out_dir
    logger.info("generating a synthetic catalog of %d items (seed %d) into %s",
                synthetic.num_items, synthetic.seed, out_dir)
    generate_synthetic_catalog(out_dir, num_items=synthetic.num_items, seed=synthetic.seed,
                               image_size=synthetic.image_size)
    marker.write_text(json.dumps(params))
    return out_dir


def _write_queries(path: Path, queries: list[Query]) -> None:
    with path.open("w", encoding="utf-8") as handle:
        for query in queries:
            handle.write(json.dumps(asdict(query), ensure_ascii=False) + "\n")


def resolve_search_log(config: Config, catalog: Catalog) -> Path:
    """The configured search log, or one simulated over the synthetic catalog (once per
    parameters) when the config asks for synthetic sessions."""
    log = config.data.search_log
    if log.path:
        return Path(log.path)
    synthetic = config.data.synthetic
    params = {"num_sessions": log.synthetic_sessions, "days": log.synthetic_days,
              "catalog": {"num_items": synthetic.num_items, "seed": synthetic.seed,
                          "image_size": synthetic.image_size}}
    path = Path(catalog.root) / SEARCH_LOG_FILE
    marker = Path(catalog.root) / _SYNTHETIC_LOG_MARKER
    if path.is_file() and marker.is_file() and json.loads(marker.read_text()) == params:
        logger.info("using the synthetic search log already at %s", path)
        return path
    logger.info("simulating a search log of %d sessions over %d days into %s",
                log.synthetic_sessions, log.synthetic_days, path)
    generate_synthetic_search_log(catalog.products, path, num_sessions=log.synthetic_sessions,
                                  days=log.synthetic_days, seed=config.data.synthetic.seed)
    marker.write_text(json.dumps(params))
    return path


def _prepare_search_log(config: Config, catalog: Catalog, work_dir: Path,
                        progress: bool) -> TimeSplit:
    log_config = config.data.search_log
    path = resolve_search_log(config, catalog)
    log = read_search_log(path, product_ids=[p.product_id for p in catalog.products],
                          on_bad_row=config.data.on_bad_row, progress=progress,
                          fields=log_config.fields or None)
    time_split = log_config.time_split
    split = split_by_time(log, (time_split.train, time_split.validation, time_split.test))
    if log_config.train_from or log_config.train_until:
        split = split.with_training_days(
            date.fromisoformat(log_config.train_from) if log_config.train_from else None,
            date.fromisoformat(log_config.train_until) if log_config.train_until else None)
    summary = {"source": str(path), "read": log.report.summary(),
               "skipped": dict(log.report.skipped),
               "sessions": {name: len(sessions) for name, sessions in split.splits().items()},
               "days": {name: [str(days[0]), str(days[-1])] if days else []
                        for name, days in split.days.items()},
               "unseen_test_query_share": split.unseen_query_share}
    (work_dir / LOG_SPLIT_FILE).write_text(json.dumps(summary, indent=2))
    logger.info("search log %s: %s; by day: %s; test queries unseen in training: %s; wrote %s",
                path, log.report.summary(),
                ", ".join(f"{name} {count} sessions" for name, count in summary["sessions"].items()),
                "n/a" if split.unseen_query_share is None else f"{split.unseen_query_share:.1%}",
                work_dir / LOG_SPLIT_FILE)
    return split


def prepare_data(config: Config, progress: bool = True,
                 attribute_queries: bool | None = None) -> PreparedData:
    """Runs the data stage of `config` and returns the prepared catalog, splits and queries.

    `attribute_queries` (default: when attributes are a training source) generates the
    attribute queries; the protocol evaluation asks for them even for a run that trained on
    the log alone, since they are its labels (the model never reads those columns)."""
    if attribute_queries is None:
        attribute_queries = config.data.sources.attributes > 0
    data = config.data
    work_dir = Path(data.work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    catalog = read_catalog(resolve_catalog_dir(config), on_bad_row=data.on_bad_row, progress=progress)

    fractions = (data.splits.train, data.splits.validation, data.splits.test)
    splits = split_products([p.product_id for p in catalog.products], fractions, seed=data.splits.seed)
    queries: dict[str, list[Query]] = {}
    for split in SPLITS:
        phrasing = "train" if split == "train" else "heldout"
        queries[split] = []
        if attribute_queries:
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
        logger.info("%s split: %d products, %d attribute queries%s",
                    split, len(splits[split]), len(queries[split]),
                    f" ({phrasing} phrasings)" if attribute_queries else
                    " (attributes are not a training source)")
    (work_dir / "splits.json").write_text(json.dumps(splits))
    logger.info("wrote splits.json and queries_{train,validation,test}.jsonl to %s", work_dir)
    search_log = None
    if data.sources.search_log > 0:
        search_log = _prepare_search_log(config, catalog, work_dir, progress)
    return PreparedData(catalog, splits, queries, work_dir, search_log)
