"""Myntra search-quality benchmark (../shared/benchmark/PROTOCOL.md), end to end in one run.

    python benchmarks/quality.py                      # configs/myntra.yaml, everything from scratch
    python benchmarks/quality.py --set training.epochs=5 --out runs/bench-quality-5ep

Stages (each logged with its wall time):
 1. data: read the catalog, split by product (train / validation / test), generate queries;
    test queries use phrasings held out from training.
 2. train the configured model (attention fusion) and its concat-fusion ablation; frozen
    MiniLM / EfficientNet-Lite0 features are computed once into the run's own feature cache
    (so the wall time includes them) and shared by both trainings.
 3. export both with an index over the test products, and evaluate the exported models'
    `serving_default` (and `retrieve`) signatures, as TF Serving would run them.
 4. baselines in the same run: BM25 over titles and zero-shot all-MiniLM-L6-v2 over titles;
    ablations of the trained model: text only, image only (in process, same weights).
 5. write results/quality.{md,json} and metric-vs-K plots, and check the issue's targets.

A rerun with the same --out reuses finished trainings (and resumes an interrupted one from
its backup); exports are written as new versions.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import platform
import random
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

import tfmmsearch  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
from tfmmsearch.config import load_config, save_config
from tfmmsearch.data.prepare import prepare_data
from tfmmsearch.data.queries import grade_matrix
from tfmmsearch.evaluation.error_analysis import attribute_errors
from tfmmsearch.evaluation.exported_system import ExportedSearchSystem, LoadedExport
from tfmmsearch.evaluation.metrics import RELEVANT_GRADE, metric_curves, top_k_indices
from tfmmsearch.evaluation.model_system import EncoderMemo, TrainedModelSystem
from tfmmsearch.evaluation.protocol import FULL, IMAGE_ONLY, BM25System, evaluate_all
from tfmmsearch.evaluation.report import markdown_table, text_table
from tfmmsearch.evaluation.zero_shot import ZeroShotTextSystem
from tfmmsearch.exporting.export import export
from tfmmsearch.logs import setup_logging
from tfmmsearch.model.build import RUN_WEIGHTS, load_trained_model
from tfmmsearch.training.train import train

sys.path.insert(0, str(Path(__file__).resolve().parent))
from plots import line_plot  # noqa: E402

logger = logging.getLogger("benchmarks.quality")

CURVE_KS = (1, 2, 3, 5, 10, 20, 30, 50, 75, 100)
TARGETS = (  # (label, system, task, metric, threshold)
    ("full NDCG@10 >= 0.90", "headline", FULL, "ndcg@10", 0.90),
    ("image_only NDCG@10 >= 0.65", "headline", IMAGE_ONLY, "ndcg@10", 0.65),
    ("title_to_image Recall@10 >= 0.20", "headline", "title_to_image", "recall@10", 0.20),
)


class Stopwatch:
    """Wall time per named stage, logged as each finishes."""

    def __init__(self):
        self.start = time.time()
        self.stages: dict[str, float] = {}

    def stage(self, name: str):
        watch = self

        class _Stage:
            def __enter__(self):
                self.t0 = time.time()
                logger.info("stage %s ...", name)

            def __exit__(self, *exc):
                watch.stages[name] = round(time.time() - self.t0, 1)
                logger.info("stage %s done in %.0f s", name, watch.stages[name])

        return _Stage()

    @property
    def total(self) -> float:
        return round(time.time() - self.start, 1)


class RecordingSystem:
    """Wraps a SearchSystem and keeps the top 100 of its attribute-task rankings (curves, errors).

    Only calls with the attribute queries count: title_to_image also scores image-only items,
    with product titles as queries."""

    def __init__(self, system, attribute_queries: list[str]):
        self.system, self.name = system, system.name
        self.attribute_queries = list(attribute_queries)
        self.top_k: dict[str, np.ndarray] = {}

    def score(self, query_texts, titles, image_paths, item_mode):
        scores = self.system.score(query_texts, titles, image_paths, item_mode)
        if item_mode in (FULL, IMAGE_ONLY) and list(query_texts) == self.attribute_queries:
            self.top_k[item_mode] = top_k_indices(np.asarray(scores))
        return scores


def train_variant(config, run_dir: Path, warm_start: Path | None = None):
    """Trains unless run_dir already holds this config's final weights (reuse on rerun)."""
    weights = run_dir / (RUN_WEIGHTS + ".index")
    saved = run_dir / "config.yaml"
    if weights.is_file() and saved.is_file():
        previous = load_config(saved)
        if previous == config:
            logger.info("reusing the finished training in %s", run_dir)
            return json.loads((run_dir / "metrics.json").read_text()).get("seconds")
        logger.warning("%s holds a run with a different config; training again", run_dir)
    result = train(config, run_dir, verbose=2, warm_start=warm_start)
    return round(result.seconds, 1)


def modality_weights_by_group(products, weights: np.ndarray, column: str) -> list[dict]:
    """Mean fusion weights (text, image) of the products, grouped by an attribute column."""
    groups: dict[str, list[int]] = defaultdict(list)
    for index, product in enumerate(products):
        groups[product.attributes.get(column, "") or "(none)"].append(index)
    rows = []
    for name, members in sorted(groups.items(), key=lambda item: -len(item[1])):
        mean = weights[members].mean(axis=0)
        rows.append({column: name, "products": len(members), "text": float(mean[0]),
                     "image": float(mean[1])})
    return rows


def check_targets(rows: list[dict], headline: str, text_only: str, fused_retrieval: str) -> list[dict]:
    by_name = {row["system"]: row for row in rows}
    checks = []
    for label, _, task, metric, threshold in TARGETS:
        value = by_name[headline][task][metric]
        checks.append({"target": label, "value": value, "met": value >= threshold,
                       "margin": value - threshold})
    fused = by_name[fused_retrieval][FULL]["ndcg@10"]
    text = by_name[text_only][FULL]["ndcg@10"]
    checks.append({"target": "fusion helps: fused retrieval full NDCG@10 > its text-only ablation",
                   "value": fused, "met": fused > text, "margin": fused - text})
    return checks


def write_report(path: Path, summary: dict) -> None:
    lines = [
        f"Test split of `{summary['config']}`: {summary['test_products']} products, "
        f"{summary['queries_scored']} held-out-phrasing queries scored ({summary['queries_dropped']} "
        f"dropped: no grade-2 product), {summary['t2i_queries']} title_to_image queries. "
        "Rows marked (export ...) call the exported SavedModel's signatures; ablation rows run "
        "the same trained weights in process.",
        "",
        markdown_table(summary["rows"]),
        "",
        "Targets:",
        "",
    ]
    for check in summary["targets"]:
        mark = "met" if check["met"] else "MISSED"
        lines.append(f"- {check['target']}: {check['value']:.3f} ({mark}, margin {check['margin']:+.3f})")
    lines += ["", "Mean modality weights of the attention model per master category (test products, "
              "full items):", "", "| master_category | products | text | image |", "|---|---|---|---|"]
    for row in summary["modality_weights"]:
        lines.append(f"| {row['master_category']} | {row['products']} | {row['text']:.3f} | "
                     f"{row['image']:.3f} |")
    lines += ["", "Where NDCG@10 is lost: in the top-10 slots the ideal ranking fills with grade-2 "
              "products, those holding another product, and which named attribute it gets wrong "
              "(one product can miss several); then the top-10 grade mix against the ideal's.", "",
              "| system | items | fillable grade-2 slots | missed | wrong: article_type | gender | "
              "base_colour | usage | top-10 grades 0/1/2 | ideal 0/1/2 |", "|---|---|---|---|---|---|---|---|---|---|"]
    for system, modes in summary["attribute_errors"].items():
        for mode, result in modes.items():
            wrong = result["wrong_attribute"]
            mix = "/".join(str(result["grade_counts"][g]) for g in ("0", "1", "2"))
            ideal = "/".join(str(result["ideal_grade_counts"][g]) for g in ("0", "1", "2"))
            lines.append(f"| {system} | {mode} | {result['fillable_grade2_slots']} | {result['blamed_slots']} | "
                         + " | ".join(str(wrong.get(role, 0)) for role in
                                      ("article_type", "gender", "base_colour", "usage"))
                         + f" | {mix} | {ideal} |")
    lines += ["", "Stage wall times (s): " + ", ".join(f"{k} {v:.0f}" for k, v in summary["stages"].items())
              + f"; total {summary['total_seconds']:.0f} s ({summary['total_seconds'] / 60:.1f} min).", ""]
    path.write_text("\n".join(lines))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/myntra.yaml")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="config override (repeatable), as in `tfmmsearch train --set`")
    parser.add_argument("--out", default="runs/bench-quality",
                        help="runs, feature cache and exports of this benchmark")
    parser.add_argument("--results", default="benchmarks/results",
                        help="where quality.md, quality.json and the plots go")
    parser.add_argument("--max-queries", type=int, default=1000,
                        help="held-out-phrasing test queries (seeded sample)")
    parser.add_argument("--t2i-queries", type=int, default=1000, help="title_to_image queries")
    parser.add_argument("--shared-cache", action="store_true",
                        help="keep the config's data.work_dir (warm feature cache) instead of --out/data")
    args = parser.parse_args(argv)
    setup_logging()
    watch = Stopwatch()
    out, results = Path(args.out), Path(args.results)
    out.mkdir(parents=True, exist_ok=True)
    results.mkdir(parents=True, exist_ok=True)

    overrides = list(args.set)
    if not args.shared_cache:
        overrides.append(f"data.work_dir={out / 'data'}")
    config = load_config(args.config, overrides)
    concat = dataclasses.replace(config, model=dataclasses.replace(config.model, fusion="concat"))
    save_config(config, out / "benchmark-config.yaml")

    with watch.stage("data"):
        prepared = prepare_data(config, progress=False)
        test_products = prepared.split_catalog("test").products
        queries = list(prepared.queries["test"])
        if args.max_queries and len(queries) > args.max_queries:
            queries = random.Random(0).sample(queries, args.max_queries)
    train_seconds = {}
    with watch.stage("train_attention"):
        train_seconds["attention"] = train_variant(config, out / "attention")
    with watch.stage("train_concat"):
        train_seconds["concat"] = train_variant(concat, out / "concat")
    with watch.stage("export"):
        exports = {name: export(out / name, base_dir=out / "export" / name, products=test_products,
                                top_k=100) for name in ("attention", "concat")}

    titles = [p.title for p in test_products]
    image_paths = [str(p.image_path) if p.image_path else "" for p in test_products]
    grades = grade_matrix(queries, test_products, config.data.attributes)
    with watch.stage("evaluate"):
        _, model = load_trained_model(out / "attention")
        memo = EncoderMemo(model.encoders, model.image_size)
        attention_export = LoadedExport(exports["attention"])
        concat_export = LoadedExport(exports["concat"])
        headline = "tfmmsearch attention fusion + ranking head (export serving_default)"
        fused_retrieval = "tfmmsearch attention fusion retrieval (export retrieve)"
        text_only = "text only (ablation of the attention model, retrieval)"
        text_only_head = "text only + ranking head (ablation)"
        systems = [
            BM25System("BM25 over titles"),
            ZeroShotTextSystem(f"{config.towers.text.encoder} zero-shot over titles", model.encoders.text,
                               model.encoders.query),
            ExportedSearchSystem(headline, attention_export, "serving_default"),
            ExportedSearchSystem(fused_retrieval, attention_export, "retrieve"),
            TrainedModelSystem(text_only, model, use_image=False, rerank=0, memo=memo),
            TrainedModelSystem(text_only_head, model, use_image=False, memo=memo),
            TrainedModelSystem("image only (ablation of the attention model, retrieval)", model,
                               use_text=False, rerank=0, memo=memo),
            ExportedSearchSystem("concat fusion + ranking head (export serving_default)", concat_export,
                                 "serving_default"),
            ExportedSearchSystem("concat fusion retrieval (export retrieve)", concat_export, "retrieve"),
        ]
        answerable = (grades >= RELEVANT_GRADE).any(axis=1)
        recorded = [RecordingSystem(system, [q.text for q, kept in zip(queries, answerable) if kept])
                    for system in systems]
        rows = evaluate_all(recorded, [q.text for q in queries], grades, titles, image_paths,
                            max_t2i_queries=args.t2i_queries, seed=0)
    rows = [row.to_dict() for row in rows]
    curves = {system.name: metric_curves(system.top_k[FULL], grades[answerable], CURVE_KS)
              for system in recorded if FULL in system.top_k}
    answerable_queries = [query for query, kept in zip(queries, answerable) if kept]
    analysed = {headline: (FULL, IMAGE_ONLY), text_only_head: (FULL,)}
    errors = {system.name: {mode: attribute_errors(system.top_k[mode], grades[answerable],
                                                   answerable_queries, test_products,
                                                   config.data.attributes)
                            for mode in analysed[system.name]}
              for system in recorded if system.name in analysed}
    weights = attention_export.index_arrays(titles, image_paths)["modality_weights"]
    summary = {
        "config": args.config, "overrides": overrides,
        "test_products": len(test_products), "queries_scored": int(answerable.sum()),
        "queries_dropped": int((~answerable).sum()),
        "t2i_queries": rows[0]["title_to_image"]["num_queries"],
        "rows": rows, "curves": curves, "attribute_errors": errors,
        "modality_weights": modality_weights_by_group(test_products, weights, "master_category"),
        "targets": check_targets(rows, headline, text_only, fused_retrieval),
        "train_seconds": train_seconds, "stages": watch.stages, "total_seconds": watch.total,
        "exports": {name: str(path) for name, path in exports.items()},
        "machine": {"python": platform.python_version(), "processor": platform.processor(),
                    "cpus": os.cpu_count()},
    }
    (results / "quality.json").write_text(json.dumps(summary, indent=2))
    write_report(results / "quality.md", summary)
    line_plot(results / "quality_metric_at_k.png", [
        {"series": {name: (c["k"], c["ndcg"]) for name, c in curves.items()},
         "xlabel": "K", "ylabel": "NDCG@K", "logx": True, "title": "full task: NDCG@K"},
        {"series": {name: (c["k"], c["recall"]) for name, c in curves.items()},
         "xlabel": "K", "ylabel": "Recall@K (grade 2)", "logx": True, "title": "full task: Recall@K"},
    ], title=f"{config.name}: test split, {summary['queries_scored']} held-out-phrasing queries")
    print(text_table(rows))
    for check in summary["targets"]:
        print(f"{'met   ' if check['met'] else 'MISSED'} {check['target']}: {check['value']:.3f} "
              f"(margin {check['margin']:+.3f})")
    logger.info("benchmark finished in %.0f s; wrote %s, %s and %s", watch.total,
                results / "quality.md", results / "quality.json", results / "quality_metric_at_k.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
