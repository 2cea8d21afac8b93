"""benchmarks/shop_search.py end to end on an untrained tiny run (the real run: results/shop_search.md).

A 60-item synthetic catalog with Myntra's filter columns added (season, year), a simulated
search log, a hand-made judged set; tiny index sizes and rounds. Checks the plumbing: every
section ran through the export, every system has every row, ratios and counts are consistent.
"""

from __future__ import annotations

import csv
import json

import pytest

from tests.benchmarks.scripts import load_benchmark
from tests.conftest import make_untrained_run

# ~3 min on 2 cores: four SavedModel saves (the export and three update_index versions).
pytestmark = pytest.mark.slow


bench = load_benchmark("shop_search")


def _myntra_like_catalog(root, hub_cache):
    """The tiny synthetic catalog with season and year columns, and a search log over it."""
    from tfmmsearch.config import load_config
    from tfmmsearch.data.catalog import read_catalog
    from tfmmsearch.data.prepare import resolve_catalog_dir
    from tfmmsearch.data.synthetic_log import generate_synthetic_search_log

    config = load_config(None, [f"data.work_dir={root / 'gen'}", "data.synthetic.num_items=60",
                                f"towers.hub_cache_dir={hub_cache}"])
    source = resolve_catalog_dir(config)
    catalog_dir = root / "catalog"
    catalog_dir.mkdir()
    (catalog_dir / "images").symlink_to((source / "images").resolve())
    with open(source / "products.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    for i, row in enumerate(rows):
        row["season"] = ("Summer", "Winter", "Fall")[i % 3]
        row["year"] = str(2010 + i % 6)
        row["base_colour"] = "Black" if i % 4 == 0 else row["base_colour"]
    with open(catalog_dir / "products.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    products = read_catalog(catalog_dir).products
    log = generate_synthetic_search_log(products, root / "search_log.jsonl", num_sessions=600,
                                        days=20, seed=0)
    return catalog_dir, log, products


@pytest.fixture(scope="module")
def shop_run(tmp_path_factory, tiny_hub_cache):
    root = tmp_path_factory.mktemp("shop")
    catalog_dir, log, products = _myntra_like_catalog(root, tiny_hub_cache)
    run = make_untrained_run(root, tiny_hub_cache, [f"data.catalog_dir={catalog_dir}",
                                                    f"data.search_log.path={log}"])
    # A hand-made judged set: each query's grade-2 products share its article type.
    judged = []
    for product in products[:6]:
        kind = product.attributes["article_type"]
        grades = {p.product_id: 2 for p in products if p.attributes["article_type"] == kind}
        judged.append({"query": f"{product.attributes['gender']} {kind}".lower(),
                       "judgments": grades})
    judged = list({q["query"]: q for q in judged}.values())
    judged_path = root / "judged.jsonl"
    judged_path.write_text("".join(json.dumps(q) + "\n" for q in judged))
    (root / "judged.subsets.json").write_text(json.dumps({"brand": [judged[0]["query"]],
                                                          "unseen": []}))
    out, results = root / "out", root / "results"
    code = bench.main(["--run", str(run), "--out", str(out), "--results", str(results),
                       "--judged", str(judged_path), "--sizes", "60,150", "--rounds-1", "2",
                       "--rounds-32", "1", "--embed-sample", "8", "--update-rounds", "1",
                       "--protocol-queries", "30", "--max-validation", "20", "--in-process",
                       # one versioned update (each saves a SavedModel): a patch alone
                       "--versioned-updates", "patch_1000_filter_values"])
    assert code == 0
    return json.loads((results / "shop_search.json").read_text()), results, len(judged)


def test_every_section_ran_and_the_markdown_names_the_command(shop_run):
    summary, results, _ = shop_run
    assert {"export", "quality", "latency", "updates"} <= set(summary)
    assert summary["export"]["items"] == 60
    text = (results / "shop_search.md").read_text()
    assert "python benchmarks/shop_search.py --run" in text
    for heading in ("## 1. Quality", "## 2. Filter latency", "## 3. Update speed"):
        assert heading in text


def test_quality_has_every_system_on_every_row(shop_run):
    summary, _, num_judged = shop_run
    quality = summary["quality"]
    names = list(quality["protocol_full"])
    assert len(names) == 11 and names[0].startswith("BM25")
    assert sum(f"{bench.LONG_LIST} candidates" in name for name in names) == 2
    assert [row["system"] for row in quality["judged"]] == names
    assert set(quality["purchase_recall"]) == set(names)
    for row in quality["judged"]:
        assert row["judged"]["num_queries"] == num_judged
        assert 0.0 <= row["judged"]["ndcg@10"] <= 1.0
        assert row["judged:brand"]["num_queries"] == 1
        assert row["judged:rare_word"]["num_queries"] == quality["rare_word_queries"]
    assert quality["convex_weight"] in bench.CONVEX_GRID
    assert set(quality["convex_grid"]["+ head"]) == {str(w) for w in bench.CONVEX_GRID}


def test_latency_rows_hold_every_call_and_the_ratios(shop_run):
    summary, _, _ = shop_run
    rows = summary["latency"]["rows"]
    assert [(r["items"], r["batch"]) for r in rows] == [(60, 1), (60, 32), (150, 1), (150, 32)]
    for row in rows:
        assert len(row["timings"]) == 2 * (2 + len(bench.TYPICAL_FILTERS))
        for key, timing in row["timings"].items():
            assert timing["p50_ms"] > 0 and timing["samples"] == row["rounds"]
            if "search_filtered" in key:
                assert timing["ratio_p50_vs_search"] > 0
        # Every filter keeps at most the index; "gender:Men" keeps fewer than all of it.
        assert 0 < row["num_results"]["gender:Men"] <= min(row["items"], 100)


def test_updates_reuse_embed_and_patch_what_they_should(shop_run):
    summary, _, _ = shop_run
    updates = summary["updates"]
    assert updates["embed_sample"]["items"] == 8 and updates["embed_sample"]["items_per_s"] > 0
    applied = updates["applied_in_process"]
    assert "0 embedded" in applied["reindex_unchanged"]["report"]
    assert applied["upsert_100_new_titles"]["items"] == 15  # a quarter of the tiny 60
    assert "15 embedded" in applied["upsert_100_new_titles"]["report"]
    through = updates["update_index"]
    assert list(through) == ["patch_1000_filter_values"]
    assert through["patch_1000_filter_values"]["items"] == 30
    assert "30 patched" in through["patch_1000_filter_values"]["report"]
    assert "0 embedded" in through["patch_1000_filter_values"]["report"]
    assert through["patch_1000_filter_values"]["version"] == "2"


def test_tiled_rows_copy_fields_and_perturb_vectors():
    import numpy as np

    from tfmmsearch.exporting.index_rows import IndexRows

    rows = IndexRows(np.array(["a", "b"], object),
                     {"embedding": np.ones((2, 4), np.float32), "text": np.ones((2, 4), np.float32),
                      "image": np.ones((2, 4), np.float32), "mask": np.ones((2, 3), np.float32),
                      "filter_values": np.array([["Men"], ["Women"]], object)})
    tiled = bench.tiled_rows(rows, 5)
    assert list(tiled.product_ids) == ["a", "b", "a~1", "b~1", "a~2"]
    assert list(tiled.fields["filter_values"][:, 0]) == ["Men", "Women", "Men", "Women", "Men"]
    np.testing.assert_array_equal(tiled.fields["embedding"][:2], 1.0)
    assert not np.array_equal(tiled.fields["embedding"][2:], np.ones((3, 4)))
    np.testing.assert_array_equal(tiled.fields["mask"], 1.0)


def test_rare_word_queries_hold_a_word_few_titles_contain():
    titles = ["red shirt"] * 3 + ["blue shirt", "Zephyr dress"]
    queries = ["red shirt", "zephyr dress", "blue", "green shirt"]
    assert bench.rare_word_queries(queries, titles, max_titles=1) == ["zephyr dress", "blue"]
    assert bench.rare_word_queries(queries, titles, max_titles=3) == queries[:3]
