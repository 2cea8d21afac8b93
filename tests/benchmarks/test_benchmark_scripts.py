"""benchmarks/quality.py, speed.py and export_speed.py run end to end on a tiny config.

The real runs take the Myntra catalog and pretrained towers (benchmarks/RESULTS.md); these
runs prove the scripts' plumbing: every row and task is produced from the exported model,
targets are judged from the measured values, the speed numbers are positive and the
exported `retrieve` returns exactly numpy's top 100 on random data.
"""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.benchmarks.scripts import load_benchmark
from tests.conftest import make_tiny_config
from tfmmsearch.config import save_config

pytestmark = pytest.mark.slow


def _script(name: str):
    return load_benchmark(name)


def test_recording_keeps_the_attribute_queries_rankings_only():
    # title_to_image also scores image-only items (with titles as queries): it must not
    # replace the image_only attribute ranking the error analysis reads.
    class Fixed:
        name = "fixed"

        def score(self, query_texts, titles, image_paths, item_mode):
            order = np.arange(len(titles), dtype=np.float32)
            return np.tile(order if query_texts[0] == "navy tees" else -order, (len(query_texts), 1))

    recording = _script("quality").RecordingSystem(Fixed(), ["navy tees", "red caps"])
    recording.score(["navy tees", "red caps"], [""] * 5, ["a"] * 5, "image_only")
    recording.score(["Men Navy Tee", "Red Cap"], [""] * 5, ["a"] * 5, "image_only")
    np.testing.assert_array_equal(recording.top_k["image_only"][:, 0], [4, 4])


@pytest.fixture(scope="module")
def quality_run(tmp_path_factory, tiny_hub_cache):
    root = tmp_path_factory.mktemp("bench")
    config_path = root / "tiny.yaml"
    # The Myntra config's head options, so both scripts run the code paths the real run takes.
    # One epoch: the assertions read the scripts' plumbing, not how well the tiny model learns.
    save_config(make_tiny_config(tiny_hub_cache, root / "unused", [
        "model.ranking_lexical=true", "model.ranking_candidate_sampling=top_retrieved",
        "model.projection_dropout=0.2", "towers.image.colour_histogram_bins=2",
        "training.epochs=1"]), config_path)
    code = _script("quality").main(["--config", str(config_path), "--out", str(root / "out"),
                                    "--results", str(root / "results"), "--max-queries", "40",
                                    "--t2i-queries", "25"])
    assert code == 0
    return root, config_path


def test_quality_reports_every_system_task_and_target(quality_run):
    root, _ = quality_run
    summary = json.loads((root / "results" / "quality.json").read_text())
    rows = summary["rows"]
    assert len(rows) == 9 and rows[0]["system"] == "BM25 over titles"
    for row in rows:
        assert set(row) == {"system", "full", "image_only", "title_to_image"}
        assert 0.0 <= row["full"]["ndcg@10"] <= 1.0
        t2i = row["title_to_image"]
        assert t2i["num_queries"] == min(25, summary["test_products"] - t2i["skipped"])
    assert summary["queries_scored"] + summary["queries_dropped"] == 40
    by_name = {row["system"]: row for row in rows}
    for check in summary["targets"][:3]:
        assert check["met"] == (check["margin"] >= 0)
    headline = by_name["tfmmsearch attention fusion + ranking head (export serving_default)"]
    assert summary["targets"][0]["value"] == headline["full"]["ndcg@10"]
    # Text-only systems find nothing by image: BM25 image_only equals scoring every item 0.
    assert by_name["BM25 over titles"]["image_only"] == by_name[
        "text only (ablation of the attention model, retrieval)"]["image_only"]
    # Curves: the k=10 point is the table's NDCG@10.
    for name, curve in summary["curves"].items():
        assert curve["ndcg"][curve["k"].index(10)] == pytest.approx(by_name[name]["full"]["ndcg@10"])
    weights = summary["modality_weights"]
    assert sum(row["products"] for row in weights) == summary["test_products"]
    for row in weights:
        assert row["text"] + row["image"] == pytest.approx(1.0, abs=1e-4)
    # Error analysis: the headline in both attribute tasks, the text-only head in full.
    errors = summary["attribute_errors"]
    assert set(errors[headline["system"]]) == {"full", "image_only"}
    assert set(errors["text only + ranking head (ablation)"]) == {"full"}
    for modes in errors.values():
        for result in modes.values():
            assert result["queries"] == summary["queries_scored"]
            assert sum(result["grade_counts"].values()) == result["slots"]
            assert sum(result["ideal_grade_counts"].values()) == result["slots"]
            assert 0 <= result["blamed_slots"] <= result["fillable_grade2_slots"]
            # every blamed slot misses at least one named attribute
            assert sum(result["wrong_attribute"].values()) >= result["blamed_slots"]
    with Image.open(root / "results" / "quality_metric_at_k.png") as image:
        assert image.size[0] > 600
    assert "Targets:" in (root / "results" / "quality.md").read_text()


def test_speed_measures_training_serving_and_index_scale(quality_run):
    root, config_path = quality_run
    out = root / "out"
    code = _script("speed").main([
        "--export", str(out / "export" / "attention"), "--config", str(config_path),
        "--set", f"data.work_dir={out / 'data'}", "--work", str(root / "speed"),
        "--results", str(root / "results"), "--rounds", "2", "--train-batch", "8",
        "--train-products", "40", "--sizes", "300,1000", "--in-process"])
    assert code == 0
    summary = json.loads((root / "results" / "speed.json").read_text())
    rates = summary["training"]["examples_per_s"]
    assert rates["cached"] > rates["towers every step"] > 0
    assert summary["reindex"]["items"] == 150 and summary["reindex"]["items_per_s"] > 0
    assert summary["serving_index_items"] == 150  # latency ran over the re-indexed version
    for batch in ("1", "32"):
        serving = summary["serving"][batch]
        for name in ("serving_default", "embed_query"):
            assert 0 < serving[name]["p50_ms"] <= serving[name]["p99_ms"]
    assert [(r["items"], r["batch"]) for r in summary["index_scale"]] == [(300, 1), (300, 32), (1000, 1),
                                                                          (1000, 32)]
    for row in summary["index_scale"]:
        assert row["agreement_with_numpy"] == 1.0  # the served top 100 is numpy's exact top 100
        assert row["index_bytes"] == row["items"] * 16 * 4 * 3
    assert (root / "results" / "speed_latency_vs_index_size.png").stat().st_size > 10_000


def test_export_speed_times_both_ways_and_the_indexes_agree(quality_run):
    # The quality run's finished attention training (same config, same data dir, so its feature
    # cache) is export_speed's run: its `train` call is then the documented no-op on a finished
    # run, and the two timed exports read and move aside the cache that training filled.
    root, config_path = quality_run
    data_dir = root / "out" / "data"
    out = root / "export_speed"
    shutil.copytree(root / "out" / "attention", out / "run")
    result = _script("export_speed").main([
        "--config", str(config_path), "--out", str(out), "--set", f"data.work_dir={data_dir}",
        "--rounds", "1", "--results", str(root / "results")])
    assert result["items"] > 100  # the synthetic catalog (a few rows are deliberately bad)
    assert result["export_with_cache_median_s"] > 0 and result["export_encoding_again_s"] > 0
    assert result["max_abs_embedding_difference"] < 1e-4
    # The cache was restored after the timing without it.
    assert list((data_dir / "feature_cache").glob("images-*.npz"))
    assert not (data_dir / "feature_cache.aside").exists()
    # No training happened here: the run is the copied one, and both exports are new versions.
    assert json.loads((out / "run" / "metrics.json").read_text()) == json.loads(
        (root / "out" / "attention" / "metrics.json").read_text())
    [base] = (out / "export").iterdir()
    assert sorted(p.name for p in base.iterdir() if p.name.isdigit()) == ["1", "2"]
    written = json.loads((root / "results" / "export_speed.json").read_text())
    assert written["speedup"] == pytest.approx(result["speedup"])
