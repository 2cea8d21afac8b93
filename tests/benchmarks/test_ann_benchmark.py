"""benchmarks/ann.py end to end on a tiny synthetic set (the 1M / 10M runs: RESULTS.md).

CI runs the three systems of the package's own stack; faiss-cpu and hnswlib are the `ann`
extra, not the test extra, so their rows come only from real runs. What is checked is the
plumbing: every row and its types, exact systems exact, the IVF exact when it probes every
list, recall that never falls as nprobe grows, verdicts computed from the rows, and a report
naming the command that made it.
"""

import json

import pytest

from tests.benchmarks.scripts import load_benchmark

pytestmark = pytest.mark.slow

bench = load_benchmark("ann")
SYSTEMS = "exact-in-graph,numpy-exact,tfmmsearch-ivf"
FIELDS = {"system": str, "data": str, "n": int, "recall_at_10": float, "recall_at_100": float,
          "p50_ms_b1": float, "p99_ms_b1": float, "p50_ms_b32": float, "memory_mb": float,
          "scan_memory_mb": float, "build_s": float}


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("ann")
    argv = ["--sizes", "3000", "--queries", "20", "--data", "synthetic", "--systems", SYSTEMS,
            "--nprobes", "1,2,4,16,all", "--rounds", "1", "--batches", "2", "--out", str(out)]
    assert bench.main(argv) == 0
    return out, argv


def test_rows_have_every_field_with_its_type(tiny_run):
    out, _ = tiny_run
    rows = json.loads((out / "ann.json").read_text())
    assert {row["system"] for row in rows} == set(SYSTEMS.split(","))
    for row in rows:
        for name, kind in FIELDS.items():
            assert isinstance(row[name], (int, float) if kind is float else kind), (name, row)
        assert 0.0 <= row["recall_at_10"] <= 1.0 and 0.0 <= row["recall_at_100"] <= 1.0
        assert row["p50_ms_b1"] > 0 and row["p50_ms_b32"] > 0 and row["memory_mb"] > 0
        assert row["n"] == 3000 and row["data"] == "synthetic"
        if row["system"] == "tfmmsearch-ivf":
            assert isinstance(row["nprobe"], int) and isinstance(row["lists"], int)
            assert row["scan_memory_mb"] < row["memory_mb"]  # bf16 structure + float32 re-score
        else:
            assert row["nprobe"] is None and row["lists"] is None


def test_exact_systems_and_ivf_probing_every_list_find_the_true_neighbours(tiny_run):
    out, _ = tiny_run
    rows = json.loads((out / "ann.json").read_text())
    exact = [row for row in rows if row["system"] in ("exact-in-graph", "numpy-exact")]
    assert len(exact) == 2 and all(row["recall_at_10"] == 1.0 and row["recall_at_100"] == 1.0
                                   for row in exact)
    ivf = sorted((row for row in rows if row["system"] == "tfmmsearch-ivf"), key=lambda r: r["nprobe"])
    lists = bench.default_list_count(3000)
    assert [row["nprobe"] for row in ivf] == [1, 2, 4, 16, lists]
    assert ivf[-1]["recall_at_10"] == 1.0
    for fewer, more in zip(ivf, ivf[1:]):
        assert more["recall_at_10"] >= fewer["recall_at_10"]
        assert more["recall_at_100"] >= fewer["recall_at_100"]


def test_report_names_the_command_and_judges_the_targets_from_the_rows(tiny_run):
    out, argv = tiny_run
    report = (out / "ann.md").read_text()
    assert "python benchmarks/ann.py " + " ".join(argv) in report
    assert "## synthetic, N = 3,000" in report and "## Targets" in report
    assert "TensorFlow's per-call floor here" in report  # what a batch-1 search cannot beat
    assert (out / "ann.png").stat().st_size > 0
    rows = json.loads((out / "ann.json").read_text())
    exact = next(row for row in rows if row["system"] == "exact-in-graph")
    for verdict in bench.verdicts(rows):
        if verdict.get("ivf"):
            column = "p50_ms_b1" if verdict["batch"] == 1 else "p50_ms_b32"
            assert verdict["ivf"]["recall_at_10"] >= 0.95
            assert verdict["speedup"] == round(exact[column] / verdict["ivf"][column], 2)
            assert verdict["speedup_met"] == (verdict["speedup"] >= 10)


def test_merge_replaces_rows_of_the_same_setting_and_keeps_the_others():
    old = [{"system": "hnsw", "data": "synthetic", "n": 10, "nprobe": None, "lists": None, "ef": 100, "v": 1},
           {"system": "faiss-ivf", "data": "synthetic", "n": 10, "nprobe": 4, "lists": 3, "v": 1}]
    new = [{"system": "faiss-ivf", "data": "synthetic", "n": 10, "nprobe": 4, "lists": 3, "v": 2}]
    merged = bench.merge_rows(old, new)
    assert [(row["system"], row["v"]) for row in merged] == [("faiss-ivf", 2), ("hnsw", 1)]


def test_recall_counts_float_ties_at_the_kth_score_as_found():
    import numpy as np

    truth_ids = np.array([[0, 1, 2]])
    truth_scores = np.array([[0.9, 0.8, 0.7]], np.float32)
    # Item 7 ties the 3rd true score within float32 noise; a duplicate and padding never count.
    found = bench.recall(np.array([[0, 7, 0, -1]]), np.array([[0.9, 0.7 - 1e-7, 0.9, -np.inf]]),
                         truth_ids, truth_scores, 3)
    assert found == pytest.approx(2 / 3)


def test_a_merged_report_keeps_profiles_of_earlier_steps_in_their_own_table(tmp_path):
    row = {"system": "exact-in-graph", "data": "synthetic", "n": 10, "nprobe": None, "lists": None,
           "recall_at_10": 1.0, "recall_at_100": 1.0, "p50_ms_b1": 1.0, "p99_ms_b1": 1.0,
           "p50_ms_b32": 1.0, "memory_mb": 1.0, "build_s": 0.0}
    profile = {"data": "synthetic", "n": 10, "lists": 3, "nprobe": 2, "batch": 1}
    meta = {"machine": "test", "runs": [
        {"id": "old", "command": "a", "wall_s": 1, "data": {}, "profiles": [
            dict(profile, ms={"gather": 1.5})]},
        {"id": "new", "command": "b", "wall_s": 1, "data": {}, "profiles": [
            dict(profile, ms={"scan": 0.5, "re-score": 0.25})]}]}
    bench.write_markdown(tmp_path / "ann.md", [row], meta)
    report = (tmp_path / "ann.md").read_text()
    assert "| old | synthetic | 10 | 3 | 2 | 1 | 1.5 |" in report
    assert "| new | synthetic | 10 | 3 | 2 | 1 | 0.5 | 0.25 |" in report
