"""`make demo`: the main job end to end on the embedded synthetic catalog.

synthetic catalog + simulated search log -> validation -> splits (products; log sessions by
day) + graded attribute queries -> TFDS shards -> tiny TF-Hub towers -> multi-task training on
attribute queries and the log's clicks and purchases (position-bias weighted; checkpoints,
TensorBoard) -> protocol evaluation with BM25 and ablations -> versioned SavedModel export ->
three searches through its `serving_default` signature.
Each run starts a fresh run directory; the data and hub caches are reused.
"""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path

from tfmmsearch.config import Config

logger = logging.getLogger(__name__)

EXAMPLE_QUERIES = ["black caps", "red dress for women", "mens navy blue sneakers"]


def _banner(text: str) -> None:
    print(f"\n=== {text} ===", flush=True)


def run_demo(config: Config, run_dir: str | Path | None = None) -> dict:
    """Runs every stage and prints what it did and where the outputs went."""
    from tfmmsearch.data.prepare import prepare_data
    from tfmmsearch.data.tfds_catalog import split_size
    from tfmmsearch.evaluation.evaluate import evaluate
    from tfmmsearch.exporting.export import export
    from tfmmsearch.hub.registry import ensure_built
    from tfmmsearch.serving.query import format_results
    from tfmmsearch.serving.local import LocalSavedModelClient
    from tfmmsearch.training.streaming import prepare_item_source
    from tfmmsearch.training.train import train

    start = time.time()
    run_dir = Path(run_dir or Path(config.data.work_dir).parent / "run")
    report: dict = {}

    _banner("1/6 data: synthetic catalog and search log, validation, splits, attribute queries")
    prepared = prepare_data(config)
    print(f"catalog {prepared.catalog.source}: {prepared.catalog.report.summary()}")
    for split, ids in prepared.splits.items():
        print(f"  {split:10s} {len(ids):5d} products {len(prepared.queries[split]):6d} queries")
    if prepared.search_log is not None:
        log = prepared.search_log
        print("search log by day: " + ", ".join(
            f"{name} {len(sessions)} sessions ({log.days[name][0]} to {log.days[name][-1]})"
            for name, sessions in log.splits().items() if sessions))
        if log.unseen_query_share is not None:
            print(f"  test-day queries never typed on a training day: {log.unseen_query_share:.1%}")
    # The same shards training streams its items from (training.item_source: tfds); train()
    # reuses them.
    builder = prepare_item_source(prepared, config)
    counts = {split: split_size(builder, split) for split in prepared.splits}
    print(f"TFDS shards in {builder.data_dir} (training items from "
          f"{config.training.item_source}): " + ", ".join(f"{k} {v}" for k, v in counts.items()))

    _banner("2/6 towers: TF-Hub modules built offline")
    cache_dir = config.towers.hub_cache_dir or None
    ensure_built([config.towers.text.preprocessor, config.towers.text.encoder, config.towers.image.handle],
                 cache_dir)

    _banner(f"3/6 training into {run_dir}")
    if run_dir.exists():
        shutil.rmtree(run_dir)  # the demo always trains from scratch
    result = train(config, run_dir)
    report["validation"] = result.validation

    _banner("4/6 evaluation on the test split (held-out phrasings)")
    rows = evaluate(run_dir, split="test", max_queries=300, title_to_image_queries=300)
    report["evaluation"] = [row.to_dict() for row in rows]

    _banner("5/6 export for TensorFlow Serving")
    version_dir = export(run_dir)
    print(f"exported {version_dir} (serve with serving/docker-compose.yml; see serving/README.md)")

    _banner("6/6 searches through the exported serving_default signature")
    client = LocalSavedModelClient(version_dir)
    outputs = client.search(EXAMPLE_QUERIES)
    titles = {p.product_id: p.title for p in prepared.catalog.products}
    print(format_results(EXAMPLE_QUERIES, outputs, k=5, titles=titles))

    report["seconds"] = round(time.time() - start, 1)
    report["export"] = str(version_dir)
    print(f"\ndemo finished in {report['seconds']:.0f} s")
    print(f"  run directory   {run_dir} (checkpoints, metrics.json, evaluation-test.md)")
    print(f"  TensorBoard     tensorboard --logdir {run_dir / 'logs'} --host 127.0.0.1")
    print(f"  export          {version_dir}")
    print(f"  query it again  tfmmsearch query {version_dir.parent} \"blue shirt\" "
          f"--catalog {prepared.catalog.root}")
    return report
