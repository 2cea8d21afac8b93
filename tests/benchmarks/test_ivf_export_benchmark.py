"""benchmarks/ivf_export.py end to end on the tiny towers (the real run: results/ivf_export.md).

Checks the plumbing: both exports answer every timed call at every size and batch, the IVF
export probing every list finds what the exact one finds, and the report names its command.
"""

from __future__ import annotations

import json

import pytest

from tests.benchmarks.scripts import load_benchmark

pytestmark = pytest.mark.slow  # two exports of a tiny model (~1 min on 2 cores)

bench = load_benchmark("ivf_export")


def test_exact_and_ivf_exports_are_timed_side_by_side(tmp_path, tiny_hub_cache):
    out = tmp_path / "out"
    assert bench.main([
        "--out", str(out), "--results", "", "--config", "", "--items", "30",
        "--sizes", "400", "--rounds-1", "2", "--rounds-32", "1", "--nprobes", "1,64",
        "--nprobe", "2",
        "--set", f"towers.hub_cache_dir={tiny_hub_cache}", "--set", "data.synthetic.num_items=60",
        "--set", "towers.image.image_size=64", "--set", "model.embedding_dim=16",
        "--set", "export.filters={gender: categorical, article_type: categorical}"]) == 0
    summary = json.loads((out / "ivf_export.json").read_text())
    assert list(summary["sizes"]) == ["400"]  # copies of the 30 products
    for entry in summary["sizes"].values():
        # 64 lists or more is every list of a 400-item index: the exact answer.
        assert entry["recall"]["retrieve_embedding nprobe=64"] == 1.0
        assert 0.0 <= entry["recall"]["retrieve_embedding nprobe=1"] <= 1.0
        assert [row["batch"] for row in entry["latency"]] == [1, 32]
        for row in entry["latency"]:
            labels = {key.split(" | ", 1)[1] for key in row["timings"] if key.startswith("ivf")}
            assert labels == {label for label, *_ in bench.variants([1, 64])}
            for key, timing in row["timings"].items():
                assert timing["p50_ms"] > 0 and timing["samples"] >= 1, key
                if key.startswith("ivf"):
                    assert timing["speedup_p50_vs_exact"] > 0
    assert summary["sizes"]["400"]["latency"][0]["items"] == 400
    text = (out / "ivf_export.md").read_text()
    assert "python benchmarks/ivf_export.py --out" in text and "## 400 items" in text
