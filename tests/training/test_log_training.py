"""A shop with a catalog of ids, titles and images only, and a search log: train, evaluate with
judged queries, export; then a feedback round warm-started from that model."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from tests.conftest import make_tiny_config
from tfmmsearch.config import ConfigError
from tfmmsearch.data.catalog import read_catalog
from tfmmsearch.data.judgments import JudgedQuery, write_judgments
from tfmmsearch.data.prepare import prepare_data
from tfmmsearch.data.synthetic import generate_synthetic_catalog
from tfmmsearch.data.synthetic_log import generate_synthetic_search_log
from tfmmsearch.model.build import build_model, load_trained_model
from tfmmsearch.model.warm_start import WarmStartError, warm_start

pytestmark = pytest.mark.heavy  # trains or exports in its fixtures: scheduled first

DAYS = 10


@pytest.fixture(scope="module")
def shop(tmp_path_factory):
    """A catalog directory with product_id, title and image only, and a 10-day search log
    simulated over the full synthetic catalog (whose attributes the shop never shows us)."""
    root = tmp_path_factory.mktemp("shop")
    full = root / "full"
    generate_synthetic_catalog(full, num_items=150, seed=0, image_size=32)
    products = read_catalog(full).products
    catalog = root / "catalog"
    shutil.copytree(full / "images", catalog / "images")
    with (catalog / "products.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["product_id", "title", "image"])
        for product in products:
            image = f"images/{product.image_path.name}" if product.image_path else ""
            writer.writerow([product.product_id, product.title, image])
    log = generate_synthetic_search_log(products, root / "log.jsonl", num_sessions=900, days=DAYS)
    return catalog, log, products


def log_overrides(catalog: Path, log: Path, work_dir: Path, *extra: str) -> list[str]:
    return [f"data.catalog_dir={catalog}", f"data.work_dir={work_dir}",
            f"data.search_log.path={log}", "data.sources.attributes=0",
            "data.sources.search_log=1", "training.item_source=memory", *extra]


@pytest.fixture(scope="module")
def log_run(shop, tiny_hub_cache, tmp_path_factory):
    from tfmmsearch.training.train import train

    catalog, log, _ = shop
    root = tmp_path_factory.mktemp("log_run")
    config = make_tiny_config(tiny_hub_cache, root / "data",
                              log_overrides(catalog, log, root / "data",
                                            f"export.base_dir={root / 'export'}"))
    run_dir = root / "run"
    return config, run_dir, train(config, run_dir, verbose=0)


@pytest.fixture(scope="module")
def log_export(log_run) -> Path:
    """The log run exported once (config's export.base_dir); the tests below only read it."""
    from tfmmsearch.exporting.export import export

    _, run_dir, _ = log_run
    return export(run_dir)


def test_a_catalog_without_attribute_columns_trains_from_its_log(log_run):
    config, run_dir, result = log_run
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["complete"] and metrics["train_pairs"] > 100
    history = metrics["history"]
    assert history["retrieval_loss"][-1] < history["retrieval_loss"][0]
    assert 0.0 < result.validation["val_ndcg@10"] <= 1.0  # on the log's validation days
    prepared = prepare_data(config, progress=False)
    assert all(not queries for queries in prepared.queries.values())  # no attribute query
    split = json.loads((Path(config.data.work_dir) / "search_log_split.json").read_text())
    assert sum(split["sessions"].values()) == 900 and split["sessions"]["test"] > 0
    bias = json.loads((run_dir / "position_bias.json").read_text())
    assert bias["propensities"][0] == 1.0 and len(bias["propensities"]) == 20
    events = list((run_dir / "logs" / "position_bias").glob("events.out.tfevents.*"))
    tags = {value.tag for path in events for event in tf.compat.v1.train.summary_iterator(str(path))
            for value in event.summary.value}
    assert {"position_bias/propensity", "position_bias/click_weight"} <= tags


def test_the_log_run_evaluates_on_judged_queries_and_exports(log_run, log_export, shop):
    from tfmmsearch.evaluation.evaluate import evaluate
    from tfmmsearch.serving.local import LocalSavedModelClient

    config, run_dir, _ = log_run
    _, _, products = shop
    tees = {p.product_id: 2 for p in products if p.attributes["article_type"] == "Tshirts"}
    judged = run_dir.parent / "judged.jsonl"
    write_judgments(judged, [JudgedQuery("tshirts", tees, 0)])
    rows = evaluate(run_dir, judgments=judged, judgments_only=True)
    assert rows and all("judged" in row.results for row in rows)
    assert (run_dir / "evaluation-judged.md").is_file()
    outputs = LocalSavedModelClient(log_export).search(["tshirts"])
    assert len(outputs["product_ids"][0]) == min(config.export.top_k, len(products))


def test_warm_start_reads_a_run_or_an_export_and_refuses_another_architecture(log_run,
                                                                             log_export):
    config, run_dir, _ = log_run
    _, trained = load_trained_model(run_dir)
    probe = {"query": tf.constant(["red tshirt", "black shoes"])}
    expected = trained.embed_queries(probe).numpy()
    for source in (run_dir, log_export):
        tf.keras.utils.set_random_seed(123)
        fresh = build_model(config)
        fresh.build_heads()
        assert not np.allclose(fresh.embed_queries(probe).numpy(), expected)
        warm_start(fresh, source)
        np.testing.assert_allclose(fresh.embed_queries(probe).numpy(), expected, atol=1e-6)
    other = build_model(make_tiny_config(Path(config.towers.hub_cache_dir),
                                         Path(config.data.work_dir), ["model.embedding_dim=8"]))
    other.build_heads()
    with pytest.raises(WarmStartError, match="does not match|incompatible|shape"):
        warm_start(other, run_dir)
    with pytest.raises(WarmStartError, match="neither a run directory"):
        warm_start(other, run_dir.parent / "nowhere")


def test_a_feedback_round_warm_starts_on_the_newer_days_only(log_run, shop, tmp_path):
    from tfmmsearch.training.train import train

    config, run_dir, _ = log_run
    catalog, log, _ = shop
    days = json.loads((Path(config.data.work_dir) / "search_log_split.json").read_text())["days"]
    newer = days["train"][1]  # from the second training day on
    overrides = log_overrides(catalog, log, tmp_path / "data", "training.epochs=1",
                              f"data.search_log.train_from={newer}")
    round_config = make_tiny_config(Path(config.towers.hub_cache_dir), tmp_path / "data",
                                    overrides)
    prepared = prepare_data(round_config, progress=False)
    assert all(str(s.day) >= newer for s in prepared.search_log.train)
    full = prepare_data(config, progress=False).search_log
    assert len(prepared.search_log.train) < len(full.train)
    assert [s.session_id for s in prepared.search_log.test] == [s.session_id for s in full.test]

    round_dir = tmp_path / "round"
    result = train(round_config, round_dir, verbose=0, warm_start=run_dir)
    assert json.loads((round_dir / "warm_start.json").read_text())["source"] == str(run_dir)
    assert json.loads((round_dir / "metrics.json").read_text())["warm_start"] == str(run_dir)
    assert len(result.history["retrieval_loss"]) == 1
    with pytest.raises(ConfigError, match="warm-start"):  # the same run, another warm start
        train(round_config, round_dir, verbose=0, warm_start=None)
    missing = tmp_path / "never-trained"
    with pytest.raises(WarmStartError, match="neither a run directory"):
        train(round_config, missing, verbose=0, warm_start=tmp_path / "nowhere")
    assert not missing.exists()  # refused before the run directory was made


def test_skipped_negatives_need_in_memory_items(shop, tiny_hub_cache, tmp_path):
    catalog, log, _ = shop
    with pytest.raises(ConfigError, match="item_source: memory"):
        make_tiny_config(tiny_hub_cache, tmp_path, log_overrides(
            catalog, log, tmp_path, "training.item_source=tfds"))
    config = make_tiny_config(tiny_hub_cache, tmp_path, log_overrides(
        catalog, log, tmp_path, "training.item_source=tfds",
        "data.search_log.skipped_as_negatives=false"))
    assert config.training.item_source == "tfds"
