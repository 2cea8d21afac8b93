"""`make demo`: the main job on the embedded synthetic catalog, end to end as far as it exists.

Stages run today: synthetic catalog -> validation -> product splits -> graded attribute
queries -> TFDS shards -> a batch through the tf.data pipeline. Training, evaluation and
export join this list as they land (see the open issues).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from tfmmsearch.config import Config

logger = logging.getLogger(__name__)


def run_demo(config: Config) -> dict:
    """Runs every stage that exists and prints a short report; returns the numbers it printed."""
    from tfmmsearch.data.prepare import prepare_data
    from tfmmsearch.data.queries import grade_matrix

    start = time.time()
    prepared = prepare_data(config)
    report = {"products": len(prepared.catalog), "skipped": prepared.catalog.report.num_skipped}
    print(f"\ncatalog: {prepared.catalog.source} -- {prepared.catalog.report.summary()}")
    for split, ids in prepared.splits.items():
        queries = prepared.queries[split]
        grades = grade_matrix(queries, prepared.split_catalog(split).products, config.data.attributes)
        relevant = (grades == 2).sum(axis=1)
        report[f"{split}_queries"] = len(queries)
        print(f"  {split:10s} {len(ids):5d} products  {len(queries):5d} queries  "
              f"grade-2 products per query: median {int(sorted(relevant)[len(relevant) // 2]) if len(relevant) else 0}")
    print("\nexample held-out queries (validation split):")
    for query in prepared.queries["validation"][:5]:
        print(f"  {query.text!r:45s} {query.attributes}")

    from tfmmsearch.data.pipeline import catalog_dataset
    from tfmmsearch.data.tfds_catalog import load_catalog_split, prepare_catalog_dataset

    tfds_dir = Path(config.data.work_dir) / "tfds"
    prepare_catalog_dataset(prepared.catalog, prepared.splits, tfds_dir)
    counts = {split: sum(1 for _ in load_catalog_split(tfds_dir, split)) for split in prepared.splits}
    print(f"\nTFDS shards in {tfds_dir}: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    batch = next(iter(catalog_dataset(prepared.split_catalog("train"), batch_size=8,
                                      image_size=config.data.image_size)))
    print("one training batch: " + ", ".join(f"{k} {tuple(v.shape)} {v.dtype.name}" for k, v in batch.items()))
    report["seconds"] = round(time.time() - start, 1)
    print(f"\ndemo finished in {report['seconds']} s; data outputs in {prepared.work_dir}")
    print("training, evaluation and export are not part of the demo yet (model and export issues).")
    return report
