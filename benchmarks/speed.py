"""Speed benchmarks: training throughput, serving latency, index scale, re-indexing.

    python benchmarks/speed.py --export runs/bench-quality/export/attention

Every comparison is measured side by side in this one process, interleaved round by round,
and reported as the median over rounds (>= 5):
 1. training examples/s of the same model with cached frozen-tower features vs computing the
    MiniLM and EfficientNet-Lite0 towers every step (real Myntra titles, queries and images);
 2. re-indexing the whole Myntra catalog with the export (`tfmmsearch.reindex`): items/s; the
    new version (12,000 items) is the index for 3;
 3. latency of the exported `serving_default` vs `embed_query` alone, batch 1 and 32, p50/p99;
 4. `retrieve` over 10k / 100k / 1M random unit vectors (D=256) assigned to the export's index,
    vs numpy on the same data (the export's `embed_query`, then matmul + argpartition + sort of
    the top 100); also the in-graph matmul + top_k alone vs numpy matmul + argpartition alone.
Results go to results/speed.{md,json} and a latency-vs-index-size plot.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import platform
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

import tfmmsearch  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
import tensorflow as tf
from tfmmsearch.config import load_config
from tfmmsearch.data.prepare import prepare_data, resolve_catalog_dir
from tfmmsearch.contract import list_versions, resolve_version_dir
from tfmmsearch.exporting.export import reindex
from tfmmsearch.logs import setup_logging
from tfmmsearch.training.datasets import training_dataset
from tfmmsearch.training.examples import AttributeIds, build_examples
from tfmmsearch.model.feature_cache import ItemTable, encode_images, encode_texts
from tfmmsearch.model.build import build_encoders, build_model
from tfmmsearch.training.train import _optimizer

sys.path.insert(0, str(Path(__file__).resolve().parent))
from plots import line_plot  # noqa: E402

logger = logging.getLogger("benchmarks.speed")

TOP_K = 100


def percentile_ms(seconds: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(seconds) * 1000.0, q))


def rss_mib() -> float:
    """Resident memory of this process (Linux /proc), MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    return float("nan")


def timed(fn, *args) -> float:
    start = time.perf_counter()
    fn(*args)
    return time.perf_counter() - start


# ---------------------------------------------------------------------------- 1. training


def training_throughput(config, rounds: int, batch_size: int, num_products: int) -> dict:
    """examples/s of one train step, cached features vs towers computed every step."""
    prepared = prepare_data(config, progress=False)
    train_ids = set(prepared.splits["train"])
    products = [p for p in prepared.catalog.products if p.product_id in train_ids][:num_products]
    items = ItemTable.from_products(products)
    attribute_ids = AttributeIds.from_products(prepared.catalog.products, config.data.attributes)
    examples = build_examples(prepared.queries["train"], products, config.data.attributes,
                              max_per_query=config.data.queries.max_positives_per_query,
                              seed=0, attribute_ids=attribute_ids)
    encoders = build_encoders(config)
    size = config.towers.image.image_size
    logger.info("training throughput: %d pairs over %d products, batch %d; encoding the cached "
                "features of this subset first", len(examples), len(products), batch_size)
    cached = {
        "title_features": encode_texts(encoders.text, items.titles, desc="titles"),
        "image_features": encode_images(encoders.image, items.image_paths, size, desc="images"),
        "query_features": encode_texts(encoders.query, examples.query_texts, desc="queries"),
    }
    setups = {}
    for name, inputs in (("cached", cached), ("towers every step", {})):
        dataset = training_dataset(examples, items, batch_size=batch_size, seed=0, image_size=size,
                                   cached=inputs, words=config.model.ranking_lexical).repeat()
        model = build_model(config, encoders)  # batches without cached features run the encoders
        model.compile(optimizer=_optimizer(config, 100))
        iterator = iter(dataset)
        step = tf.function(model.train_step)  # one optimizer step, as fit() runs it
        for _ in range(2):  # trace and warm up
            step(next(iterator))
        setups[name] = (step, iterator)
    steps = {"cached": 40, "towers every step": 4}
    per_round: dict[str, list[float]] = {name: [] for name in setups}
    for round_index in range(rounds):
        for name, (step, iterator) in setups.items():
            batches = [next(iterator) for _ in range(steps[name])]  # input time excluded
            start = time.perf_counter()
            for batch in batches:
                logs = step(batch)
            float(logs["total_loss"])  # wait for the last step to finish
            per_round[name].append(steps[name] * batch_size / (time.perf_counter() - start))
        logger.info("training round %d: %s", round_index + 1,
                    ", ".join(f"{n} {v[-1]:.0f} ex/s" for n, v in per_round.items()))
    cached_rate = float(np.median(per_round["cached"]))
    towers_rate = float(np.median(per_round["towers every step"]))
    ratios = [c / t for c, t in zip(per_round["cached"], per_round["towers every step"])]
    return {"batch_size": batch_size, "pairs": len(examples), "rounds": rounds,
            "examples_per_s": {"cached": cached_rate, "towers every step": towers_rate},
            "per_round": per_round, "ratio_median": float(np.median(ratios))}


# ---------------------------------------------------------------------------- 2. re-indexing


def reindexing(export_base: Path, catalog_dir: str, work: Path) -> tuple[dict, Path]:
    """Copies the export's latest version and re-indexes the catalog with `tfmmsearch.reindex`."""
    base = work / "reindex"
    shutil.rmtree(base, ignore_errors=True)
    source = resolve_version_dir(export_base)
    shutil.copytree(source, base / "1")
    start = time.perf_counter()
    version_dir = reindex(base, catalog_dir, on_bad_row="skip")
    seconds = time.perf_counter() - start
    import tensorflow_text  # noqa: F401

    size = int(tf.shape(tf.saved_model.load(str(version_dir)).index.product_ids)[0])
    logger.info("re-indexed %d items in %.0f s: %.1f items/s", size, seconds, size / seconds)
    return {"items": size, "seconds": seconds, "items_per_s": size / seconds,
            "note": "includes reading the catalog, embedding every item (title + image) with the "
                    "export's index_outputs, and saving the new version"}, version_dir


# ---------------------------------------------------------------------------- 3. serving latency


def serving_latency(module, queries: list[str], rounds: int, calls: dict[int, int]) -> dict:
    signatures = {"serving_default": module.signatures["serving_default"],
                  "embed_query": module.signatures["embed_query"]}
    results = {}
    rng = random.Random(0)
    for batch, per_round in calls.items():
        def batch_of():
            return tf.constant(rng.sample(queries, batch))
        for fn in signatures.values():
            for _ in range(3):
                fn(query=batch_of())  # warm up
        samples = {name: [] for name in signatures}
        ratios = []
        for _ in range(rounds):
            round_samples = {name: [] for name in signatures}
            for _ in range(per_round):
                for name, fn in signatures.items():  # interleaved: same load for both
                    query = batch_of()
                    round_samples[name].append(timed(lambda: fn(query=query)))
            for name in signatures:
                samples[name] += round_samples[name]
            ratios.append(np.median(round_samples["serving_default"]) /
                          np.median(round_samples["embed_query"]))
        results[batch] = {name: {"p50_ms": percentile_ms(values, 50), "p99_ms": percentile_ms(values, 99),
                                 "calls": len(values)} for name, values in samples.items()}
        results[batch]["ratio_p50_median_of_rounds"] = float(np.median(ratios))
        logger.info("batch %d: serving_default p50 %.1f ms, embed_query p50 %.1f ms (ratio %.2f)", batch,
                    results[batch]["serving_default"]["p50_ms"], results[batch]["embed_query"]["p50_ms"],
                    results[batch]["ratio_p50_median_of_rounds"])
    return results


# ---------------------------------------------------------------------------- 4. index scale


def numpy_top_k(queries: np.ndarray, embeddings: np.ndarray, k: int = TOP_K) -> np.ndarray:
    """The baseline: exact scores, argpartition for the top k, then sort those k."""
    scores = queries @ embeddings.T
    top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(scores, top, axis=1), axis=1)
    return np.take_along_axis(top, order, axis=1)


def index_scale(module, queries: list[str], sizes: list[int], dim: int, rounds: int,
                batches: list[int]) -> list[dict]:
    embed = module.signatures["embed_query"]
    retrieve = module.signatures["retrieve"]
    index = module.index
    op_only = tf.function(lambda q: tf.math.top_k(tf.matmul(q, index.embeddings, transpose_b=True), k=TOP_K))
    rows = []
    rng = np.random.default_rng(0)
    for size in sizes:
        embeddings = rng.standard_normal((size, dim), dtype=np.float32)
        embeddings /= np.linalg.norm(embeddings, axis=1, keepdims=True)
        gc.collect()
        before = rss_mib()
        index.assign(tf.constant([f"p{i}" for i in range(size)]), embeddings, embeddings, embeddings,
                     np.ones((size, 2), np.float32), np.full((size, 2), 0.5, np.float32))
        after = rss_mib()
        for batch in batches:
            texts = tf.constant(queries[:batch])
            query_vectors = embed(query=texts)["embedding"].numpy()
            # Same answers: the served top 100 equal numpy's (ties aside) on this data.
            served = retrieve(query=texts)["product_ids"].numpy()
            expected = numpy_top_k(query_vectors, embeddings)
            agree = float(np.mean([len({int(p[1:]) for p in map(bytes.decode, s)} & set(e)) / TOP_K
                                   for s, e in zip(served, expected)]))
            for _ in range(2):
                op_only(tf.constant(query_vectors))
            per_call = max(3, int(20 * min(1.0, 100_000 / size)) if batch == 1 else 3)
            samples = {"retrieve": [], "embed_query": [], "numpy_top_k": [], "tf_matmul_top_k": []}
            ratios, op_ratios = [], []
            for _ in range(rounds):
                r = {name: [] for name in samples}
                for _ in range(per_call):
                    r["retrieve"].append(timed(lambda: retrieve(query=texts)))
                    r["embed_query"].append(timed(lambda: embed(query=texts)))
                    r["numpy_top_k"].append(timed(numpy_top_k, query_vectors, embeddings))
                    q = tf.constant(query_vectors)
                    r["tf_matmul_top_k"].append(timed(lambda: [t.numpy() for t in op_only(q)]))
                for name in samples:
                    samples[name] += r[name]
                ratios.append(np.median(r["retrieve"]) / (np.median(r["embed_query"]) + np.median(r["numpy_top_k"])))
                op_ratios.append(np.median(r["tf_matmul_top_k"]) / np.median(r["numpy_top_k"]))
            row = {"items": size, "batch": batch, "dim": dim, "agreement_with_numpy": agree,
                   "index_bytes": size * dim * 4 * 3,
                   "rss_increase_mib": after - before,
                   "ratio_retrieve_vs_embed_plus_numpy": float(np.median(ratios)),
                   "ratio_tf_op_vs_numpy": float(np.median(op_ratios))}
            for name, values in samples.items():
                row[f"{name}_p50_ms"] = percentile_ms(values, 50)
                row[f"{name}_p99_ms"] = percentile_ms(values, 99)
            rows.append(row)
            logger.info("index %d, batch %d: retrieve p50 %.1f ms, embed_query %.1f ms, numpy %.1f ms, "
                        "tf op %.1f ms; ratio %.2f (op only %.2f); RSS +%.0f MiB", size, batch,
                        row["retrieve_p50_ms"], row["embed_query_p50_ms"], row["numpy_top_k_p50_ms"],
                        row["tf_matmul_top_k_p50_ms"], row["ratio_retrieve_vs_embed_plus_numpy"],
                        row["ratio_tf_op_vs_numpy"], row["rss_increase_mib"])
        del embeddings
    return rows


# ---------------------------------------------------------------------------- report


def write_report(path: Path, summary: dict) -> None:
    t = summary["training"]
    lines = [f"Machine: {summary['machine']}. Medians over {t['rounds']} interleaved rounds; each "
             "section in a fresh process.", "",
             "Training throughput (train step, batch "
             f"{t['batch_size']}, same model and data; input pipeline excluded):", "",
             "| inputs | examples/s |", "|---|---|"]
    for name, rate in t["examples_per_s"].items():
        lines.append(f"| {name} | {rate:.1f} |")
    lines += ["", f"Ratio cached / towers every step: **{t['ratio_median']:.1f}x** (target >= 10x).", ""]
    r = summary["reindex"]
    lines += [f"Re-indexing the catalog with the export (`tfmmsearch index`): {r['items']} items in "
              f"{r['seconds']:.0f} s = **{r['items_per_s']:.1f} items/s** ({r['note']}).", ""]
    lines += [f"Serving latency of the export over a {summary['serving_index_items']}-item index "
              "(in-process SavedModel, CPU):",
              "", "| batch | serving_default p50 | p99 | embed_query p50 | p99 | ratio p50 |", "|---|---|---|---|---|---|"]
    for batch, row in summary["serving"].items():
        lines.append(f"| {batch} | {row['serving_default']['p50_ms']:.1f} ms | {row['serving_default']['p99_ms']:.1f} ms"
                     f" | {row['embed_query']['p50_ms']:.1f} ms | {row['embed_query']['p99_ms']:.1f} ms | "
                     f"{row['ratio_p50_median_of_rounds']:.2f}x |")
    lines += ["", "Target: search p50 <= 1.5x embed_query p50.", "",
              "Index scale (random unit vectors, D=256; `retrieve` from query text vs the export's "
              "`embed_query` + numpy matmul/argpartition/sort; op only = in-graph matmul + top_k vs "
              "numpy matmul + argpartition + sort on the same vectors):", "",
              "| items | batch | retrieve p50 | embed_query p50 | numpy top-100 p50 | tf matmul+top_k p50 | "
              "ratio retrieve / (embed + numpy) | ratio op only | index MiB (3 x N x D floats) | RSS +MiB | "
              "same top 100 |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for row in summary["index_scale"]:
        lines.append(f"| {row['items']:,} | {row['batch']} | {row['retrieve_p50_ms']:.1f} ms | "
                     f"{row['embed_query_p50_ms']:.1f} ms | {row['numpy_top_k_p50_ms']:.1f} ms | "
                     f"{row['tf_matmul_top_k_p50_ms']:.1f} ms | {row['ratio_retrieve_vs_embed_plus_numpy']:.2f}x"
                     f" | {row['ratio_tf_op_vs_numpy']:.2f}x | {row['index_bytes'] / 2**20:.0f} | "
                     f"{row['rss_increase_mib']:.0f} | {row['agreement_with_numpy']:.3f} |")
    lines += ["", f"Total wall time {summary['total_seconds']:.0f} s.", ""]
    path.write_text("\n".join(lines))


SECTIONS = ("training", "reindex", "serving", "index_scale")


def run_section(args, config, export_base: Path, work: Path) -> dict:
    """One section's results, measured in this process."""
    if args.section == "training":
        return {"training": training_throughput(config, args.rounds, args.train_batch, args.train_products)}
    if args.section == "reindex":
        if args.skip_reindex:
            return {"reindex": {"items": 0, "seconds": float("nan"), "items_per_s": float("nan"),
                                "note": "skipped: latency runs use the export's own index"}}
        result, _ = reindexing(export_base, str(resolve_catalog_dir(config)), work)
        return {"reindex": result}
    import tensorflow_text  # noqa: F401

    reindexed = work / "reindex"
    version_dir = resolve_version_dir(export_base if args.skip_reindex or not list_versions(reindexed)
                                     else reindexed)
    module = tf.saved_model.load(str(version_dir))
    queries = [q.text for q in prepare_data(config, progress=False).queries["test"]]
    if args.section == "serving":
        items = int(tf.shape(module.index.product_ids)[0])
        return {"serving": serving_latency(module, queries, args.rounds, {1: 40, 32: 8}),
                "serving_index_items": items}
    sizes = [int(s) for s in args.sizes.split(",")]
    return {"index_scale": index_scale(module, queries, sizes, dim=int(module.index.embeddings.shape[1]),
                                       rounds=args.rounds, batches=[1, 32])}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--export", default="runs/bench-quality/export/attention",
                        help="base directory of an export (benchmarks/quality.py writes one)")
    parser.add_argument("--config", default="configs/myntra.yaml")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--work", default="runs/bench-speed", help="scratch space (re-indexed export)")
    parser.add_argument("--results", default="benchmarks/results")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--train-batch", type=int, default=32)
    parser.add_argument("--train-products", type=int, default=512)
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--skip-reindex", action="store_true",
                        help="use the export's own index for the latency runs (faster, smaller index)")
    parser.add_argument("--section", choices=("all",) + SECTIONS, default="all",
                        help="run one section only (used internally: each runs in its own process)")
    parser.add_argument("--part-out", default="", help="where --section writes its JSON")
    parser.add_argument("--in-process", action="store_true",
                        help="run the sections in this process (tests; timings less clean)")
    args = parser.parse_args(argv)
    setup_logging()
    start = time.time()
    work, results = Path(args.work), Path(args.results)
    work.mkdir(parents=True, exist_ok=True)
    results.mkdir(parents=True, exist_ok=True)
    config = load_config(args.config, args.set)
    export_base = Path(args.export)
    if not list_versions(export_base):
        parser.error(f"{export_base} holds no exported version; run benchmarks/quality.py first "
                     "or pass --export BASE_DIR")
    if args.section != "all":
        part = run_section(args, config, export_base, work)
        Path(args.part_out).write_text(json.dumps(part, default=str))
        return 0

    summary = {"machine": f"{os.cpu_count()} CPU cores, Python {platform.python_version()}, "
                          f"TensorFlow {tf.__version__}",
               "commands": " ".join(sys.argv)}
    # Each section runs in a fresh process: in one long-lived process, the index-scale timings
    # after training and re-indexing came out up to 13x slower than in a fresh one (RESULTS.md).
    for section in SECTIONS:
        if args.in_process:  # through JSON as from a section process (string keys)
            part = run_section(argparse.Namespace(**{**vars(args), "section": section}),
                               config, export_base, work)
            summary.update(json.loads(json.dumps(part, default=str)))
            continue
        part_out = work / f"part-{section}.json"
        command = [sys.executable, str(Path(__file__).resolve()), *(argv if argv is not None else sys.argv[1:]),
                   "--section", section, "--part-out", str(part_out)]
        logger.info("section %s in a fresh process", section)
        subprocess.run(command, check=True)
        summary.update(json.loads(part_out.read_text()))
    summary["total_seconds"] = time.time() - start
    (results / "speed.json").write_text(json.dumps(summary, indent=2, default=str))
    write_report(results / "speed.md", summary)
    panels = []
    for batch in (1, 32):
        rows = [row for row in summary["index_scale"] if row["batch"] == batch]
        xs = [row["items"] for row in rows]
        panels.append({"series": {
            "retrieve (export, from query text)": (xs, [r["retrieve_p50_ms"] for r in rows]),
            "embed_query + numpy top-100": (xs, [r["embed_query_p50_ms"] + r["numpy_top_k_p50_ms"] for r in rows]),
            "numpy matmul + argpartition": (xs, [r["numpy_top_k_p50_ms"] for r in rows]),
            "tf matmul + top_k (in-graph op)": (xs, [r["tf_matmul_top_k_p50_ms"] for r in rows]),
        }, "xlabel": "items in the index", "ylabel": "p50 latency (ms)", "logx": True, "logy": True,
            "title": f"batch {batch}"})
    line_plot(results / "speed_latency_vs_index_size.png", panels, title="Exact top-100 retrieval, D=256")
    print((results / "speed.md").read_text())
    logger.info("wrote %s, %s and %s", results / "speed.md", results / "speed.json",
                results / "speed_latency_vs_index_size.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
