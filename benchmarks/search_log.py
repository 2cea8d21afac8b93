"""Myntra search-log benchmark: learning from the shop's own signals, end to end in one run.

    python benchmarks/search_log.py                         # configs/myntra_log.yaml
    python benchmarks/search_log.py --set training.epochs=3 --out runs/bench-log-3ep

Stages (each logged with its wall time; baselines computed in the same run):
 1. data: the catalog, the log split by day (80/10/10), the judged set of test-day queries
    graded by the rater's rule of benchmarks/judged_set.py.
 2. train (frozen MiniLM / EfficientNet-Lite0 features cached once, shared by every run):
    `log_only` (no attribute column read; also the from-scratch reference of the feedback
    round), `log_attributes` (log + attribute queries), `base` (training days up to
    --warm-split-day) and `warm` (warm-started from `base` on the later training days, with
    half the epochs).
 3. evaluate: judged test-day queries (BM25, zero-shot MiniLM and each model, rows for queries
    naming a brand and queries unseen on training days); re-ranking of what the shop showed on
    test days (click-NDCG@10, purchase 3 / click 1, raw and inverse-propensity weighted); full
    catalog recall@100 of purchased products; exposure (relevant products the old search never
    showed); protocol `full` on the test products.
 4. write results/search_log.{md,json} and the position-bias plot, and check the targets.

Log metrics favour the ranker that produced the log (every click was on something BM25
showed near the top); the judged set is the decisive measure. A rerun with the same --out
reuses finished trainings.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import platform
import sys
from datetime import timedelta
from pathlib import Path

import numpy as np

import tfmmsearch  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
from tfmmsearch.config import load_config, save_config
from tfmmsearch.data.bm25 import BM25Index
from tfmmsearch.data.log_pairs import CLICK_GRADE, PURCHASE_GRADE
from tfmmsearch.data.position_bias import PositionBias
from tfmmsearch.data.prepare import prepare_data
from tfmmsearch.data.queries import grade_matrix
from tfmmsearch.evaluation.judged import evaluate_judged
from tfmmsearch.evaluation.metrics import top_k_indices
from tfmmsearch.evaluation.model_system import EncoderMemo, TrainedModelSystem
from tfmmsearch.evaluation.protocol import FULL, BM25System, evaluate_attribute_task
from tfmmsearch.evaluation.zero_shot import ZeroShotTextSystem
from tfmmsearch.logs import setup_logging
from tfmmsearch.model.build import load_trained_model
from tfmmsearch.model.feature_cache import FeatureStore, ItemTable

sys.path.insert(0, str(Path(__file__).resolve().parent))
from judged_set import build_judged_set, write_judged_set  # noqa: E402
from plots import line_plot  # noqa: E402
from quality import Stopwatch, train_variant  # noqa: E402

logger = logging.getLogger("benchmarks.search_log")

NDCG_K = 10
RECALL_K = 100
SHOWN_DEPTH = 20  # what the old search showed per session


# --------------------------------------------------------------------------- systems


class LogModel:
    """A trained run as a judged-set `SearchSystem`, plus the scores the log metrics need."""

    def __init__(self, name: str, run_dir: Path, memo: EncoderMemo | None = None):
        self.config, self.model = load_trained_model(run_dir)
        self.name = name
        memo = memo or EncoderMemo(self.model.encoders, self.model.image_size)
        self.system = TrainedModelSystem(name, self.model, memo=memo)
        self.retrieval = TrainedModelSystem(f"{name} (fused retrieval)", self.model, rerank=0,
                                            memo=memo)
        self.text_only = TrainedModelSystem(f"{name} (text only)", self.model, use_image=False,
                                            rerank=0, memo=memo)

    def shown_scores(self, queries: list[str], shown: np.ndarray, titles: list[str],
                     image_paths: list[str]) -> np.ndarray:
        """Ranking-head scores [S, 20] of each session's shown products (catalog indices)."""
        return self.system.head_scores(self.system.embed_queries(queries),
                                       self.system.item_outputs(titles, image_paths), shown,
                                       self.system.words(queries, titles), block=256)


def prefill_memo(memo: EncoderMemo, config, products) -> None:
    """Fills the evaluation memo from the runs' feature cache (the same frozen encoders), so the
    deep encoders do not run again over the catalog."""
    items = ItemTable.from_products(products)
    cached = FeatureStore(config, memo.encoders, items,
                          Path(config.data.work_dir) / "feature_cache").item_features()
    if {"title_features", "image_features"} <= set(cached):
        memo.prefill(items.titles, items.image_paths, cached["title_features"],
                     cached["image_features"])


# --------------------------------------------------------------------------- log metrics


def session_gains(sessions) -> np.ndarray:
    """float [S, 20]: gain 2^grade - 1 of each shown product (purchase 3, click 1, else 0)."""
    gains = np.zeros((len(sessions), SHOWN_DEPTH))
    for row, session in enumerate(sessions):
        clicked, purchased = set(session.clicked), set(session.purchased)
        for rank, pid in enumerate(session.shown[:SHOWN_DEPTH]):
            grade = PURCHASE_GRADE if pid in purchased else CLICK_GRADE if pid in clicked else 0
            gains[row, rank] = 2.0 ** grade - 1.0
    return gains


def click_ndcg(order: np.ndarray, gains: np.ndarray, k: int = NDCG_K) -> float:
    """Mean NDCG@k over sessions of re-ordering their shown list by `order` [S, 20] (indices
    into the list), against the sessions' own gains (the ideal: the gains sorted)."""
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    ranked = np.take_along_axis(gains, order, axis=1)[:, :k]
    ideal = -np.sort(-gains, axis=1)[:, :k]
    idcg = ideal @ discounts
    keep = idcg > 0
    return float(np.mean((ranked[keep] @ discounts) / idcg[keep]))


def reranking_metrics(scores: np.ndarray, gains: np.ndarray, weights: np.ndarray) -> dict:
    """Click-NDCG@10 raw and inverse-propensity weighted (each logged rank's gain times the
    clipped 1 / propensity of that rank) of ordering by `scores` [S, 20]."""
    order = np.argsort(-scores, axis=1, kind="stable")
    return {"click_ndcg@10": click_ndcg(order, gains),
            "ipw_click_ndcg@10": click_ndcg(order, gains * weights[None, :])}


def purchase_recall(top: np.ndarray, sessions, position: dict[str, int]) -> float:
    """Share of test-day purchases (session, product) found in the session query's top 100."""
    found = total = 0
    for row, session in zip(top, sessions):
        retrieved = set(row.tolist())
        for pid in session.purchased:
            total += 1
            found += position[pid] in retrieved
    return found / total if total else float("nan")


# --------------------------------------------------------------------------- report


def markdown(summary: dict) -> str:
    lines = [f"# Search-log benchmark ({summary['config']})", "",
             f"Log: {summary['log']['sessions']} sessions by day; test days "
             f"{summary['log']['test_days'][0]} to {summary['log']['test_days'][-1]}; "
             f"unseen-query share of test sessions {summary['log']['unseen_query_share']:.3f}.", "",
             "## Judged test-day queries (NDCG@10 / Recall@100 / MRR)", "",
             f"{summary['judged_set']['judged_queries']} distinct test-day queries graded by the "
             f"rater's rule (benchmarks/judged_set.py): {summary['judged_set']['brand_queries']} "
             f"name a brand, {summary['judged_set']['unseen_queries']} were never typed on a "
             "training day.", "",
             "| system | all | naming a brand | unseen in training |", "|---|---|---|---|"]
    for row in summary["judged"]:
        cells = [f"{row[t]['ndcg@10']:.3f} / {row[t]['recall@100']:.3f} / {row[t]['mrr']:.3f}"
                 for t in ("judged", "judged:brand", "judged:unseen")]
        lines.append(f"| {row['system']} | " + " | ".join(cells) + " |")
    lines += ["", "## Re-ranking what the shop showed on test days (click-NDCG@10)", "",
              "| ordering | raw | inverse-propensity weighted |", "|---|---|---|"]
    for name, values in summary["reranking"].items():
        lines.append(f"| {name} | {values['click_ndcg@10']:.4f} | {values['ipw_click_ndcg@10']:.4f} |")
    lines += ["", "## Full-catalog retrieval of test-day purchases", "",
              "| system | recall@100 of purchased products |", "|---|---|"]
    lines += [f"| {name} | {value:.3f} |" for name, value in summary["purchase_recall"].items()]
    exposure = summary["exposure"]
    lines += ["", "## Exposure: relevant products the old search never showed", "",
              f"Judged grade-2 products ranked below {SHOWN_DEPTH} by BM25 (never shown by the "
              f"old search): {exposure['unshown_relevant']} over the judged queries.", "",
              "| system | share of them in its top 100 | share in its top 10 |", "|---|---|---|"]
    lines += [f"| {name} | {v['top100']:.3f} | {v['top10']:.3f} |"
              for name, v in exposure["systems"].items()]
    lines += ["", f"Test-day purchases our BM25 ranks below {SHOWN_DEPTH}: "
              f"{exposure['purchases_below_20']} of {exposure['purchases']}; retrieved in the "
              f"log-only model's top 100: {exposure['purchases_below_20_retrieved']}.", ""]
    lines += ["## Protocol `full` on the test products (NDCG@10)", "",
              "| system | NDCG@10 |", "|---|---|"]
    lines += [f"| {name} | {value:.3f} |" for name, value in summary["protocol_full"].items()]
    lines += ["", "## Feedback round (warm start)", "", "| run | judged NDCG@10 | train s |",
              "|---|---|---|"]
    for name, values in summary["warm_start"].items():
        lines.append(f"| {name} | {values['ndcg@10']:.3f} | {values['seconds']} |")
    lines += ["", "## Position bias (estimated on the training days)", "",
              summary["position_bias_table"], "", "## Targets", ""]
    lines += [f"- {'met' if t['met'] else 'MISSED'}: {t['target']} ({t['value']:.3f})"
              for t in summary["targets"]]
    lines += ["", "Stage wall times (s): " + ", ".join(f"{k} {v}" for k, v in
                                                       summary["stages"].items())
              + f"; total {summary['total_seconds']} s.", ""]
    return "\n".join(lines)


# --------------------------------------------------------------------------- main


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/myntra_log.yaml")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--out", default="runs/bench-log")
    parser.add_argument("--results", default="benchmarks/results")
    parser.add_argument("--warm-split-day", type=int, default=30,
                        help="the base model of the feedback round trains on log days 1..N")
    parser.add_argument("--min-judged-queries", type=int, default=300)
    parser.add_argument("--shared-cache", action="store_true",
                        help="keep the config's data.work_dir (warm feature cache)")
    args = parser.parse_args(argv)
    setup_logging()
    watch = Stopwatch()
    out, results = Path(args.out), Path(args.results)
    out.mkdir(parents=True, exist_ok=True)
    results.mkdir(parents=True, exist_ok=True)
    overrides = list(args.set) + ([] if args.shared_cache else [f"data.work_dir={out / 'data'}"])
    config = load_config(args.config, overrides)
    save_config(config, out / "benchmark-config.yaml")

    with watch.stage("data"):
        prepared = prepare_data(config, progress=False)
        log = prepared.search_log
        products = prepared.catalog.products
        judged = build_judged_set(products, log, min_queries=args.min_judged_queries)
        write_judged_set(judged, out / "judged.jsonl")
        first_day = log.days["train"][0]
        split_day = first_day + timedelta(days=args.warm_split_day - 1)

    def variant(**log_settings):
        search_log = dataclasses.replace(config.data.search_log, **log_settings.pop("log", {}))
        sources = dataclasses.replace(config.data.sources, **log_settings.pop("sources", {}))
        data = dataclasses.replace(config.data, search_log=search_log, sources=sources)
        training = dataclasses.replace(config.training, **log_settings.pop("training", {}))
        return dataclasses.replace(config, data=data, training=training)

    runs = {
        "log_only": variant(),
        "log_attributes": variant(sources={"attributes": 1.0}),
        "base": variant(log={"train_until": split_day.isoformat()}),
        "warm": variant(log={"train_from": (split_day + timedelta(days=1)).isoformat()},
                        training={"epochs": max(1, config.training.epochs // 2)}),
    }
    seconds = {}
    for name, run_config in runs.items():
        with watch.stage(f"train_{name}"):
            warm = out / "base" if name == "warm" else None
            seconds[name] = train_variant(run_config, out / name, warm_start=warm)

    titles = [p.title for p in products]
    image_paths = [str(p.image_path) if p.image_path else "" for p in products]
    position = {p.product_id: i for i, p in enumerate(products)}
    with watch.stage("evaluate_judged"):
        first = LogModel("log-only model + ranking head", out / "log_only")
        memo = first.system.memo
        prefill_memo(memo, config, products)
        models = {"log_only": first,
                  "log_attributes": LogModel("logs + attributes model + ranking head",
                                             out / "log_attributes", memo),
                  "base": LogModel(f"days 1-{args.warm_split_day} model", out / "base", memo),
                  "warm": LogModel(f"warm-started on days {args.warm_split_day + 1}+", out / "warm",
                                   memo)}
        systems = [BM25System("BM25 over titles"),
                   ZeroShotTextSystem(f"{config.towers.text.encoder} zero-shot over titles",
                                      first.model.encoders.text, first.model.encoders.query),
                   first.system, first.retrieval, first.text_only,
                   models["log_attributes"].system, models["log_attributes"].retrieval,
                   models["base"].system, models["warm"].system]
        judged_rows = [row.to_dict() for row in evaluate_judged(
            systems, judged.queries, list(position), titles, image_paths,
            subsets=judged.subsets)]

    with watch.stage("evaluate_log"):
        bias = PositionBias.from_dict(json.loads((out / "log_only" / "position_bias.json").read_text()))
        clip = config.data.search_log.max_propensity_weight
        weights = bias.weights(np.arange(1, SHOWN_DEPTH + 1), clip)
        test = [s for s in log.test if s.clicked and len(s.shown) >= SHOWN_DEPTH]
        gains = session_gains(test)
        shown = np.array([[position[pid] for pid in s.shown[:SHOWN_DEPTH]] for s in test])
        queries = [s.query for s in test]
        reranking = {"logged order (the shop's BM25)": reranking_metrics(
            -np.arange(SHOWN_DEPTH)[None, :].repeat(len(test), 0).astype(float), gains, weights)}
        oracle = gains + 1e-6 * -np.arange(SHOWN_DEPTH)[None, :]
        reranking["oracle (the sessions' own clicks)"] = reranking_metrics(oracle, gains, weights)
        for name in ("log_only", "log_attributes"):
            reranking[models[name].name] = reranking_metrics(
                models[name].shown_scores(queries, shown, titles, image_paths), gains, weights)

        bought = [s for s in log.test if s.purchased]
        distinct = list(dict.fromkeys(s.query for s in bought))
        row_of = {q: i for i, q in enumerate(distinct)}
        bm25_scores = BM25Index(titles).score(distinct)
        bm25_top = top_k_indices(bm25_scores, RECALL_K)
        recall_systems = {"BM25 over titles": bm25_top}
        for name in ("log_only", "log_attributes"):
            scores = models[name].system.score(distinct, titles, image_paths, FULL)
            recall_systems[models[name].name] = top_k_indices(scores, RECALL_K)
        purchase = {name: purchase_recall(top[[row_of[s.query] for s in bought]], bought, position)
                    for name, top in recall_systems.items()}

        # Exposure: relevant (judged grade 2) products the old search never put in its top 20.
        judged_texts = [q.query for q in judged.queries]
        judged_bm25 = top_k_indices(BM25Index(titles).score(judged_texts), SHOWN_DEPTH)
        unshown = []
        for row, query in enumerate(judged.queries):
            shown_set = set(judged_bm25[row].tolist())
            unshown.append({position[pid] for pid, g in query.grades.items()
                            if g == 2 and position[pid] not in shown_set})
        exposure_systems = {}
        for system in (first.system, models["log_attributes"].system):
            top = top_k_indices(system.score(judged_texts, titles, image_paths, FULL), RECALL_K)
            total = sum(len(u) for u in unshown)
            exposure_systems[system.name] = {
                "top100": sum(len(u & set(t.tolist())) for u, t in zip(unshown, top)) / total,
                "top10": sum(len(u & set(t[:10].tolist())) for u, t in zip(unshown, top)) / total}
        below = [(s, pid) for s in bought for pid in s.purchased
                 if position[pid] not in set(bm25_top[row_of[s.query]][:SHOWN_DEPTH].tolist())]
        log_only_top = recall_systems[first.name]
        exposure = {"unshown_relevant": sum(len(u) for u in unshown), "systems": exposure_systems,
                    "purchases": sum(len(s.purchased) for s in bought),
                    "purchases_below_20": len(below),
                    "purchases_below_20_retrieved": sum(
                        position[pid] in set(log_only_top[row_of[s.query]].tolist())
                        for s, pid in below)}

    with watch.stage("evaluate_protocol"):
        protocol = prepare_data(config, progress=False, attribute_queries=True)
        test_products = protocol.split_catalog("test").products
        test_queries = protocol.queries["test"][:1000]
        grades = grade_matrix(test_queries, test_products, config.data.attributes)
        texts = [q.text for q in test_queries]
        t_titles = [p.title for p in test_products]
        t_paths = [str(p.image_path) if p.image_path else "" for p in test_products]
        protocol_full = {}
        for system in (BM25System("BM25 over titles"), first.system, first.retrieval,
                       first.text_only, models["log_attributes"].system,
                       models["log_attributes"].retrieval, models["log_attributes"].text_only):
            protocol_full[system.name] = evaluate_attribute_task(
                system, texts, grades, t_titles, t_paths)["ndcg@10"]

    by_name = {row["system"]: row for row in judged_rows}
    ndcg = {name: by_name[models[name].name]["judged"]["ndcg@10"] for name in models}
    warm_start = {"from scratch on every training day (log-only)": {
                      "ndcg@10": ndcg["log_only"], "seconds": seconds["log_only"]},
                  models["base"].name: {"ndcg@10": ndcg["base"], "seconds": seconds["base"]},
                  models["warm"].name: {"ndcg@10": ndcg["warm"], "seconds": seconds["warm"]}}
    logged = reranking["logged order (the shop's BM25)"]["ipw_click_ndcg@10"]
    brand = by_name[first.name]["judged:brand"]["ndcg@10"]
    targets = [
        {"target": "log-trained judged NDCG@10 >= 0.90", "value": ndcg["log_only"],
         "met": ndcg["log_only"] >= 0.90},
        {"target": "queries naming a brand within 0.03 of all queries (log-only)",
         "value": brand, "met": brand >= ndcg["log_only"] - 0.03},
        {"target": "IPW click-NDCG@10 >= logged order + 0.02 (log-only)",
         "value": reranking[first.name]["ipw_click_ndcg@10"] - logged,
         "met": reranking[first.name]["ipw_click_ndcg@10"] - logged >= 0.02},
        {"target": "purchase recall@100 >= 0.90 (log-only)", "value": purchase[first.name],
         "met": purchase[first.name] >= 0.90},
        {"target": "log-only protocol full NDCG@10 >= 0.85", "value": protocol_full[first.name],
         "met": protocol_full[first.name] >= 0.85},
        {"target": "logs + attributes protocol full NDCG@10 >= 0.90",
         "value": protocol_full[models["log_attributes"].name],
         "met": protocol_full[models["log_attributes"].name] >= 0.90},
        {"target": "logs + attributes fused retrieval above its text-only ablation (protocol)",
         "value": protocol_full[models["log_attributes"].retrieval.name]
         - protocol_full[models["log_attributes"].text_only.name],
         "met": protocol_full[models["log_attributes"].retrieval.name]
         > protocol_full[models["log_attributes"].text_only.name]},
        {"target": "warm start within 0.01 of from-scratch (judged NDCG@10)",
         "value": ndcg["warm"] - ndcg["log_only"], "met": ndcg["warm"] >= ndcg["log_only"] - 0.01},
        {"target": "warm start in at most half the from-scratch training time",
         "value": (seconds["warm"] or 0) / max(1e-9, seconds["log_only"] or 1e-9),
         "met": (seconds["warm"] or 0) <= 0.5 * (seconds["log_only"] or 0)},
    ]
    line_plot(results / "search_log_position_bias.png", [{
        "series": {"estimated propensity (regression-EM)": (list(range(1, bias.max_rank + 1)),
                                                            bias.propensities.tolist()),
                   "raw CTR relative to rank 1": (list(range(1, bias.max_rank + 1)),
                                                  (bias.clicks / np.maximum(bias.impressions, 1)
                                                   / (bias.clicks[0] / bias.impressions[0])).tolist())},
        "xlabel": "rank shown", "ylabel": "examination propensity", "title": "position bias"}],
        title=f"{config.name}: training days of the log")
    summary = {
        "config": args.config, "overrides": overrides,
        "log": {"sessions": {k: len(v) for k, v in log.splits().items()},
                "test_days": [str(d) for d in log.days["test"]],
                "unseen_query_share": log.unseen_query_share},
        "judged_set": judged.report, "judged": judged_rows, "reranking": reranking,
        "purchase_recall": purchase, "exposure": exposure, "protocol_full": protocol_full,
        "warm_start": warm_start, "position_bias": bias.to_dict(),
        "position_bias_table": bias.table(clip), "targets": targets,
        "train_seconds": seconds, "stages": watch.stages, "total_seconds": watch.total,
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count()},
    }
    (results / "search_log.json").write_text(json.dumps(summary, indent=2, default=str))
    (results / "search_log.md").write_text(markdown(summary))
    print(markdown(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
