"""`make demo`: the main job end to end on the embedded synthetic catalog.

synthetic catalog + simulated search log -> validation -> splits (products; log sessions by
day) + graded attribute queries -> TFDS shards -> tiny TF-Hub towers -> multi-task training on
attribute queries and the log's clicks and purchases (position-bias weighted; checkpoints,
TensorBoard) -> protocol evaluation with BM25 and ablations -> versioned SavedModel export ->
three searches through its `serving_default` signature -> a filtered search -> an upsert of a
new product and a search that finds it in the next version (no retraining).
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


FILTERED_QUERY = ("red dress", "gender:Women AND price:[* TO 2500]")
# A brand the model has never seen, in words it knows: lexical retrieval brings it in by the
# brand word, the towers and the head place it among the blue party dresses.
NEW_PRODUCT = {"product_id": "zephyr-1", "title": "Zephyr Women Blue Party Dress",
               "brand": "Zephyr", "gender": "Women", "article_type": "Dresses",
               "base_colour": "Blue", "usage": "Party", "price": "1899.00"}
NEW_PRODUCT_QUERY = "zephyr blue party dress"


def _filtered_search_and_upsert(config: Config, version_dir: Path, catalog, titles: dict) -> dict:
    """One `search_filtered` call, then `tfmmsearch index --upsert` of a product the model has
    never seen, and a search that finds it in the next version."""
    from tfmmsearch.data.catalog import write_catalog
    from tfmmsearch.exporting.export import read_update_catalog, update_index
    from tfmmsearch.exporting.updates import IndexUpdate
    from tfmmsearch.serving.local import LocalSavedModelClient
    from tfmmsearch.serving.query import format_results

    query, filter_text = FILTERED_QUERY
    outputs = LocalSavedModelClient(version_dir).search_filtered([query], filter_text)
    print(f"filter: {filter_text}  ({int(outputs['num_results'][0])} results)")
    print(format_results([query], outputs, k=5, titles=titles))
    by_id = catalog.by_id()
    for product_id in outputs["product_ids"][0][:int(outputs["num_results"][0])][:5]:
        attributes = by_id[str(product_id)].attributes
        print(f"    {product_id}: gender {attributes.get('gender')}, "
              f"price {attributes.get('price') or '(none)'}")

    # A one-product catalog: the shop adds a dress; its photo is a like dress's.
    donor = next(p for p in catalog.products if p.image_path and all(
        p.attributes.get(column) == NEW_PRODUCT[column]
        for column in ("article_type", "base_colour", "usage")))
    upsert_dir = Path(config.data.work_dir) / "demo_upsert"
    (upsert_dir / "images").mkdir(parents=True, exist_ok=True)
    image = upsert_dir / "images" / f"{NEW_PRODUCT['product_id']}.jpg"
    image.write_bytes(donor.image_path.read_bytes())
    columns = [c for c in catalog.columns if c != "image"]
    row = {column: NEW_PRODUCT.get(column, donor.attributes.get(column, ""))
           for column in columns}
    write_catalog(upsert_dir, [{**row, "image": f"images/{image.name}"}])
    new_version, report = update_index(version_dir.parent, lambda filters: IndexUpdate(
        upsert=read_update_catalog(upsert_dir, "error", filters)))
    print(f"tfmmsearch index --model {version_dir.parent} --upsert {upsert_dir}")
    print(f"  -> {new_version}: {report.summary()}")
    new_query = NEW_PRODUCT_QUERY
    found = LocalSavedModelClient(new_version).search([new_query])
    print(format_results([new_query], found, k=3,
                         titles={**titles, NEW_PRODUCT["product_id"]: NEW_PRODUCT["title"]}))
    ids = [str(i) for i in found["product_ids"][0]]
    rank = ids.index(NEW_PRODUCT["product_id"]) + 1 if NEW_PRODUCT["product_id"] in ids else None
    print(f"the new product is result {rank} of {new_query!r}" if rank else
          f"the new product is not in the top {len(ids)} of {new_query!r}")
    return {"filtered_results": int(outputs["num_results"][0]), "upsert": report.summary(),
            "new_product_rank": rank, "version": str(new_version)}


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

    _banner("1/7 data: synthetic catalog and search log, validation, splits, attribute queries")
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

    _banner("2/7 towers: TF-Hub modules built offline")
    cache_dir = config.towers.hub_cache_dir or None
    ensure_built([config.towers.text.preprocessor, config.towers.text.encoder, config.towers.image.handle],
                 cache_dir)

    _banner(f"3/7 training into {run_dir}")
    if run_dir.exists():
        shutil.rmtree(run_dir)  # the demo always trains from scratch
    result = train(config, run_dir)
    report["validation"] = result.validation

    _banner("4/7 evaluation on the test split (held-out phrasings)")
    rows = evaluate(run_dir, split="test", max_queries=300, title_to_image_queries=300)
    report["evaluation"] = [row.to_dict() for row in rows]

    _banner("5/7 export for TensorFlow Serving")
    version_dir = export(run_dir)
    print(f"exported {version_dir} (serve with serving/docker-compose.yml; see serving/README.md)")

    _banner("6/7 searches through the exported serving_default signature")
    client = LocalSavedModelClient(version_dir)
    outputs = client.search(EXAMPLE_QUERIES)
    titles = {p.product_id: p.title for p in prepared.catalog.products}
    print(format_results(EXAMPLE_QUERIES, outputs, k=5, titles=titles))

    _banner("7/7 a filtered search, then a new product upserted without retraining")
    report["live"] = _filtered_search_and_upsert(config, version_dir, prepared.catalog, titles)

    report["seconds"] = round(time.time() - start, 1)
    report["export"] = str(version_dir)
    print(f"\ndemo finished in {report['seconds']:.0f} s")
    print(f"  run directory   {run_dir} (checkpoints, metrics.json, evaluation-test.md)")
    print(f"  TensorBoard     tensorboard --logdir {run_dir / 'logs'} --host 127.0.0.1")
    print(f"  export          {report['live']['version']} (after the upsert)")
    print(f"  query it again  tfmmsearch query {version_dir.parent} \"blue shirt\" "
          f"--catalog {prepared.catalog.root}")
    return report
