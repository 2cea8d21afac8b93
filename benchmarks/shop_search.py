"""Shop-search benchmark: hybrid retrieval quality, filter latency and live-update speed of an export.

    python benchmarks/shop_search.py --run runs/bench-log/log_attributes --out runs/bench-shop

Sections, each in its own process (a long-lived TF process distorts later timings, see
RESULTS.md), each writing OUT/sections/<name>.json; the main process merges them into
OUT/shop_search.{json,md} (and --results, default benchmarks/results):
 1. export: the run's model with an index over its whole catalog (reusing training's cached
    frozen-encoder features) and export.filters = FILTERS, written as version 1 of
    OUT/export/shop-search.
 2. quality: through the loaded SavedModel's signatures. Systems: BM25 over titles (the
    baseline, tfmmsearch.data.bm25), dense, lexical (the in-graph BM25 of the index), RRF
    (k = 60) and convex fusion with its weight tuned on judged queries of the log's validation
    days; each with the ranking head (the `serving_default` / `search` signature, fusion set
    through the export's variables; lexical + head = convex weight 0) and without it (dense:
    `retrieve`; lexical: the order of `index.lexical.scores`; RRF / convex: the fused order,
    computed with exporting/fusion.py from `embed_query` x the index and `index.lexical.scores`).
    Rows: protocol `full` on the test products, judged test-day queries (all, brand) over the
    12k index, test-day purchased-product recall@100 over the 12k index.
 3. latency: `search` vs `search_filtered` p50/p99, batch 1 and 32, fusion dense and rrf, at the
    real index and tiled to --sizes (perturbed copies, filter columns tiled too), interleaved
    rounds, ratios side by side.
 4. updates: item-tower throughput (embed_catalog on a sample, extrapolated to a full index),
    re-index of the unchanged catalog (content-hash reuse), upsert of 100 retitled products,
    patch of 1,000 products' filter values; each through `update_index` (load, apply, save the
    next version) and applied in process (no save).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import platform
import random
import shlex
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

import tfmmsearch  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
import tensorflow as tf

from tfmmsearch.logs import setup_logging

logger = logging.getLogger("benchmarks.shop_search")

FILTERS = {"gender": "categorical", "article_type": "categorical", "base_colour": "categorical",
           "season": "categorical", "year": "numeric"}
TYPICAL_FILTERS = ["gender:Men", "gender:Men AND article_type:(Tshirts OR Shirts)",
                   "NOT base_colour:Black year:[2012 TO *]"]
CONVEX_GRID = [round(0.1 * i, 1) for i in range(11)]
MODEL_NAME = "shop-search"
SECTIONS = ("export", "quality", "latency", "updates")
TOP = 100
LONG_LIST = 200  # the longer fused list the quality section also tries
RARE_WORD_TITLES = 20  # a query word in at most this many titles is rare


# --------------------------------------------------------------------------- config and data


def project_root(run_dir: Path) -> Path:
    """The directory the run's relative paths are relative to: the first ancestor holding
    `configs/` (the repository the run was trained in)."""
    for parent in [run_dir, *run_dir.parents]:
        if (parent / "configs").is_dir():
            return parent
    return Path.cwd()


def run_config(run_dir: Path, root: Path | None = None, log_from: Path | None = None):
    """The run's config with its relative data paths made absolute against `root`; with
    `log_from`, that run's search log and its time split (for a model not trained on the log,
    evaluated on the judged test days of one that was)."""
    from tfmmsearch.model.build import load_run_config

    config = load_run_config(run_dir)
    if log_from:
        config = dataclasses.replace(config, data=dataclasses.replace(
            config.data, search_log=load_run_config(log_from).data.search_log))
    root = root or project_root(run_dir.resolve())

    def absolute(value: str) -> str:
        return value if not value or Path(value).is_absolute() else str((root / value).resolve())

    data = config.data
    log = dataclasses.replace(data.search_log, path=absolute(data.search_log.path))
    data = dataclasses.replace(data, work_dir=absolute(data.work_dir),
                               catalog_dir=absolute(data.catalog_dir), search_log=log)
    towers = config.towers
    if getattr(towers, "hub_cache_dir", ""):
        towers = dataclasses.replace(towers, hub_cache_dir=absolute(towers.hub_cache_dir))
    export = dataclasses.replace(config.export, filters=dict(FILTERS))
    return dataclasses.replace(config, data=data, towers=towers, export=export)


def args_config(args):
    """The config every section works from: RUN's, with --log-from's search log if given."""
    return run_config(Path(args.run), log_from=args.log_from)


def read_products(config):
    from tfmmsearch.data.catalog import read_catalog
    from tfmmsearch.data.prepare import resolve_catalog_dir

    return read_catalog(resolve_catalog_dir(config), on_bad_row=config.data.on_bad_row)


def log_split(config, products):
    from tfmmsearch.data.search_log import read_search_log, split_by_time

    log = config.data.search_log
    read = read_search_log(log.path, product_ids=[p.product_id for p in products],
                           on_bad_row=config.data.on_bad_row, fields=log.fields or None)
    shares = log.time_split
    return split_by_time(read, (shares.train, shares.validation, shares.test))


def latest_version(base: Path) -> Path:
    from tfmmsearch.contract import resolve_version_dir

    return resolve_version_dir(base)


def load_export(path: Path):
    import tensorflow_text  # noqa: F401  (the export's tokenizer ops)

    return tf.saved_model.load(str(path))


class Timer:
    def __init__(self):
        self.stages: dict[str, float] = {}

    def __call__(self, name: str):
        timer = self

        class _Stage:
            def __enter__(self):
                self.start = time.perf_counter()
                logger.info("== %s ...", name)

            def __exit__(self, *exc):
                timer.stages[name] = round(time.perf_counter() - self.start, 1)
                logger.info("== %s: %.1f s", name, timer.stages[name])

        return _Stage()


# --------------------------------------------------------------------------- 1. export


def section_export(args) -> dict:
    from tfmmsearch.exporting.export import (exclusive_writer, model_item_features,
                                             search_module, write_version)
    from tfmmsearch.model.build import load_trained_model

    config = args_config(args)
    base = Path(args.out) / "export" / MODEL_NAME
    started = time.perf_counter()
    config, model = load_trained_model(args.run, config=config)
    catalog = read_products(config)
    products = catalog.products
    if args.max_products:
        products = products[:args.max_products]
    with exclusive_writer(base):
        module = search_module(config, model, products, catalog.columns, catalog.source, TOP)
        version = write_version(module, base, module.signatures(), products, base.name,
                                model_item_features(model))
    return {"version": str(version), "items": len(products), "filters": FILTERS,
            "seconds": round(time.perf_counter() - started, 1)}


# --------------------------------------------------------------------------- 2. quality


class Served:
    """The loaded export, its index rows, and every way of ranking the current index."""

    def __init__(self, module, batch_size: int = 32):
        from tfmmsearch.exporting.index_rows import read_index

        self.module = module
        self.all_rows = read_index(module)
        self.rows = self.all_rows
        self.batch_size = batch_size

    def use(self, rows) -> None:
        from tfmmsearch.exporting.index_rows import write_index

        write_index(self.module, rows)
        self.rows = rows

    def _batches(self, texts):
        for first in range(0, len(texts), self.batch_size):
            yield first, tf.constant(list(texts[first:first + self.batch_size]), tf.string)

    def _ids_to_positions(self, ids: np.ndarray) -> np.ndarray:
        position = self._position()
        return np.array([[position.get(i.decode(), -1) if i else -1 for i in row] for row in ids])

    def _position(self):
        if getattr(self, "_position_rows", None) is not self.rows:
            self._position_map, self._position_rows = self.rows.position_of(), self.rows
        return self._position_map

    def served(self, texts, fusion: str, weight: float = 0.5, signature="serving_default",
               candidates: int = TOP):
        """Top-100 positions through a signature (`search`: fusion and the head's short-list
        length set in the variables)."""
        self.module.fusion_type.assign(fusion)
        self.module.convex_weight.assign(weight)
        self.module.rrf_k.assign(60.0)
        self.module.rerank_candidates.assign(candidates)
        call = self.module.signatures[signature]
        out = []
        for _, batch in self._batches(texts):
            out.append(self._ids_to_positions(call(query=batch)["product_ids"].numpy()))
        return np.concatenate(out)

    def fused(self, texts, fusion: str, weight: float = 0.5) -> np.ndarray:
        """Top-100 positions of a candidate list itself (no ranking head)."""
        from tfmmsearch.exporting.fusion import convex_fusion, reciprocal_rank_fusion
        from tfmmsearch.model.lexical import MAX_QUERY_WORDS, word_ids

        embed = self.module.signatures["embed_query"]
        index = self.module.index
        out = []
        for _, batch in self._batches(texts):
            lexical = index.lexical.scores(word_ids(batch, MAX_QUERY_WORDS))
            if fusion == "lexical":
                top = tf.math.top_k(lexical, k=min(TOP, lexical.shape[1])).indices
            else:
                dense = tf.matmul(embed(query=batch)["embedding"], index.embeddings,
                                  transpose_b=True)
                if fusion == "rrf":
                    top = reciprocal_rank_fusion(dense, lexical, TOP, 60.0)[0]
                elif fusion == "convex":
                    top = convex_fusion(dense, lexical, weight, TOP)[0]
                else:
                    top = tf.math.top_k(dense, k=min(TOP, dense.shape[1])).indices
            out.append(top.numpy())
        return np.concatenate(out)


class TopSystem:
    """A `SearchSystem` over the served index: the returned positions rank first, in order."""

    def __init__(self, name: str, top_of):
        self.name, self.top_of = name, top_of

    def tops(self, texts) -> np.ndarray:
        return self.top_of(list(texts))

    def score(self, query_texts, titles, image_paths, item_mode):
        top = self.tops(query_texts)
        scores = np.full((len(query_texts), len(titles)), -np.inf)
        rows = np.repeat(np.arange(len(top)), top.shape[1])
        ranks = np.tile(-np.arange(top.shape[1], dtype=np.float64), len(top))
        keep = top.reshape(-1) >= 0
        scores[rows[keep], top.reshape(-1)[keep]] = ranks[keep]
        return scores


def systems_of(served: Served, weight: float, bm25_titles_system) -> list:
    s = served
    return [
        bm25_titles_system,
        TopSystem("dense + head", lambda t: s.served(t, "dense")),
        TopSystem("dense, no head (retrieve)", lambda t: s.served(t, "dense", signature="retrieve")),
        TopSystem("lexical + head (convex w=0)", lambda t: s.served(t, "convex", 0.0)),
        TopSystem("lexical, no head (in-graph BM25 order)", lambda t: s.fused(t, "lexical")),
        TopSystem("RRF k=60 + head", lambda t: s.served(t, "rrf")),
        TopSystem("RRF k=60, no head", lambda t: s.fused(t, "rrf")),
        TopSystem(f"convex w={weight:.1f} + head", lambda t: s.served(t, "convex", weight)),
        TopSystem(f"convex w={weight:.1f}, no head", lambda t: s.fused(t, "convex", weight)),
        # A longer fused list, so the lexical entries do not push dense ones out of the head's
        # reach (the head still returns the top 100).
        TopSystem(f"RRF k=60 + head, {LONG_LIST} candidates",
                  lambda t: s.served(t, "rrf", candidates=LONG_LIST)),
        TopSystem(f"convex w={weight:.1f} + head, {LONG_LIST} candidates",
                  lambda t: s.served(t, "convex", weight, candidates=LONG_LIST)),
    ]


def rare_word_queries(texts, titles, max_titles: int = RARE_WORD_TITLES) -> list[str]:
    """The queries holding a word that at most `max_titles` catalog titles contain: where exact
    word matching should help most (rare brands, model names)."""
    titles_with = Counter(word for title in titles for word in set(title.lower().split()))
    return [t for t in texts if any(0 < titles_with[w] <= max_titles for w in t.lower().split())]


def section_quality(args) -> dict:
    from tfmmsearch.data.judgments import read_judgments
    from tfmmsearch.data.prepare import prepare_data
    from tfmmsearch.data.queries import grade_matrix
    from tfmmsearch.evaluation.judged import evaluate_judged
    from tfmmsearch.evaluation.protocol import BM25System, evaluate_attribute_task

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from judged_set import build_judged_set  # noqa: E402
    from search_log import purchase_recall  # noqa: E402

    timer = Timer()
    config = args_config(args)
    base = Path(args.out) / "export" / MODEL_NAME
    with timer("load"):
        served = Served(load_export(latest_version(base)))
        catalog = read_products(config)
        by_id = {p.product_id: p for p in catalog.products}
        products = [by_id[pid] for pid in served.all_rows.product_ids]
        titles = [p.title for p in products]
        paths = [str(p.image_path) if p.image_path else "" for p in products]
        ids = list(served.all_rows.product_ids)
        split = log_split(config, products)

    with timer("judged_sets"):
        judged = list(read_judgments(args.judged).queries)
        subsets = json.loads(Path(args.subsets).read_text())
        if args.max_judged and len(judged) > args.max_judged:
            judged = [judged[i] for i in sorted(random.Random(0).sample(range(len(judged)),
                                                                        args.max_judged))]
            kept = {q.query for q in judged}
            subsets = {name: [t for t in texts if t in kept] for name, texts in subsets.items()}
        validation = build_judged_set(products, dataclasses.replace(split, test=split.validation),
                                      min_queries=1, max_queries=args.max_validation, seed=0)

    bm25 = BM25System("BM25 over titles (baseline)")
    with timer("tune_convex"):
        grid = {"+ head": {}, "no head": {}}
        for weight in CONVEX_GRID:
            rows = evaluate_judged(
                [TopSystem("+ head", lambda t, w=weight: served.served(t, "convex", w)),
                 TopSystem("no head", lambda t, w=weight: served.fused(t, "convex", w))],
                validation.queries, ids, titles, paths)
            for row in rows:
                grid[row["system"]][weight] = row["judged"]["ndcg@10"]
            logger.info("convex w=%.1f: validation judged NDCG@10 %s", weight,
                        {r["system"]: round(r["judged"]["ndcg@10"], 4) for r in rows})
        best = max(CONVEX_GRID, key=lambda w: (grid["+ head"][w], -abs(w - 0.5)))
        best_no_head = max(CONVEX_GRID, key=lambda w: (grid["no head"][w], -abs(w - 0.5)))

    systems = systems_of(served, best, bm25)
    with timer("judged_test"):
        rare = rare_word_queries([q.query for q in judged], titles)
        judged_rows = evaluate_judged(systems, judged, ids, titles, paths,
                                      subsets={"brand": subsets["brand"], "rare_word": rare})

    with timer("purchase_recall"):
        bought = [s for s in split.test if s.purchased]
        distinct = list(dict.fromkeys(s.query for s in bought))
        row_of = {q: i for i, q in enumerate(distinct)}
        position = {pid: i for i, pid in enumerate(ids)}
        order = [row_of[s.query] for s in bought]
        recall = {}
        for system in systems:
            if isinstance(system, TopSystem):
                top = system.tops(distinct)
            else:
                from tfmmsearch.evaluation.metrics import top_k_indices
                top = top_k_indices(system.score(distinct, titles, paths, "full"), TOP)
            recall[system.name] = purchase_recall(top[order], bought, position)

    with timer("protocol_full"):
        protocol = prepare_data(dataclasses.replace(
            config, data=dataclasses.replace(config.data, work_dir=str(Path(args.out) / "data"))),
            progress=False, attribute_queries=True)
        test_products = protocol.split_catalog("test").products
        queries = protocol.queries["test"][:args.protocol_queries]
        grades = grade_matrix(queries, test_products, config.data.attributes)
        served.use(served.all_rows.take([position[p.product_id] for p in test_products]))
        t_titles = [p.title for p in test_products]
        t_paths = [str(p.image_path) if p.image_path else "" for p in test_products]
        protocol_full = {s.name: evaluate_attribute_task(s, [q.text for q in queries], grades,
                                                         t_titles, t_paths)
                         for s in systems}
        served.use(served.all_rows)

    return {"convex_grid": grid, "convex_weight": best, "convex_weight_no_head": best_no_head,
            "validation": {"source": "judged queries of the log's validation days "
                                     "(benchmarks/judged_set.py rater's rule)",
                           "queries": len(validation.queries),
                           "days": [str(split.days["validation"][0]),
                                    str(split.days["validation"][-1])]},
            "judged": [r.to_dict() for r in judged_rows],
            "judged_queries": len(judged), "brand_queries": len(subsets["brand"]),
            "rare_word_queries": len(rare), "rare_word_titles": RARE_WORD_TITLES,
            "purchase_recall": recall, "purchase_queries": len(distinct),
            "purchases": sum(len(s.purchased) for s in bought),
            "protocol_full": protocol_full, "protocol_queries": len(queries),
            "protocol_products": len(test_products), "index_items": len(ids),
            "stages": timer.stages}


# --------------------------------------------------------------------------- 3. latency


def tiled_rows(rows, size: int, seed: int = 0):
    """The index rows tiled to `size` rows: copy c of product p is `p~c`, its vectors with small
    Gaussian noise (sd 0.01 per dimension), every other field (words, filters) copied."""
    from tfmmsearch.exporting.index_rows import IndexRows

    if size <= len(rows):
        return rows.take(np.arange(size))
    rng = np.random.default_rng(seed)
    copies = -(-size // len(rows))
    ids = np.concatenate([rows.product_ids if c == 0 else
                          np.array([f"{p}~{c}" for p in rows.product_ids], object)
                          for c in range(copies)])[:size]
    fields = {}
    for name, values in rows.fields.items():
        if name in ("embedding", "text", "image"):
            out = np.empty((size,) + values.shape[1:], values.dtype)
            for c in range(copies):
                first, last = c * len(rows), min(size, (c + 1) * len(rows))
                part = values[:last - first]
                if c:
                    part = part + rng.standard_normal(part.shape, np.float32) * 0.01
                out[first:last] = part
            fields[name] = out
        else:
            fields[name] = np.concatenate([values] * copies)[:size]
    return IndexRows(ids, fields)


def percentiles(samples: list[float]) -> dict:
    values = np.array(samples) * 1000.0
    return {"p50_ms": float(np.median(values)), "p99_ms": float(np.percentile(values, 99)),
            "samples": len(values)}


def section_latency(args) -> dict:
    from tfmmsearch.exporting.index_rows import read_index, write_index

    module = load_export(latest_version(Path(args.out) / "export" / MODEL_NAME))
    base_rows = read_index(module)
    texts = [json.loads(line)["query"] for line in Path(args.judged).read_text().splitlines()
             if line][:512]
    search = module.signatures["serving_default"]
    filtered = module.signatures["search_filtered"]
    results = []
    for size in [int(s) for s in args.sizes.split(",")]:
        started = time.perf_counter()
        rows = tiled_rows(base_rows, size)
        write_index(module, rows)
        del rows
        logger.info("index of %d items assigned in %.1f s", size, time.perf_counter() - started)
        for batch in (1, 32):
            rounds = args.rounds_1 if batch == 1 else args.rounds_32
            if size > 100_000:
                rounds = max(5, rounds // 3)
            variants = [("search", None)] + [(f"search_filtered {f!r}", f)
                                             for f in [""] + TYPICAL_FILTERS]
            samples = {(fusion, name): [] for fusion in ("dense", "rrf") for name, _ in variants}
            counts = {}
            cell_start = time.perf_counter()
            done = 0
            for r in range(rounds + 1):  # round 0 warms up
                if r >= 3 and time.perf_counter() - cell_start > args.latency_budget_s:
                    logger.info("latency %d items, batch %d: time budget spent after %d rounds",
                                size, batch, done)
                    break
                done = r
                query = [texts[(r * batch + i) % len(texts)] for i in range(batch)]
                q = tf.constant(query, tf.string)
                for fusion in ("dense", "rrf"):
                    module.fusion_type.assign(fusion)
                    for name, filter_text in variants:
                        start = time.perf_counter()
                        if filter_text is None:
                            out = search(query=q)
                        else:
                            out = filtered(query=q, filter=tf.constant([filter_text] * batch))
                        out["product_ids"].numpy()
                        elapsed = time.perf_counter() - start
                        if r == 0:
                            logger.info("%s %s first call %.0f ms", fusion, name, elapsed * 1e3)
                        if r:
                            samples[(fusion, name)].append(elapsed)
                        elif filter_text:
                            counts[filter_text] = float(np.mean(out["num_results"].numpy()))
            row = {"items": size, "batch": batch, "rounds": done, "num_results": counts,
                   "timings": {f"{fusion} | {name}": percentiles(values)
                               for (fusion, name), values in samples.items()}}
            for fusion in ("dense", "rrf"):
                unfiltered = row["timings"][f"{fusion} | search"]["p50_ms"]
                for name, _ in variants[1:]:
                    t = row["timings"][f"{fusion} | {name}"]
                    t["ratio_p50_vs_search"] = t["p50_ms"] / unfiltered
            dense = row["timings"]["dense | search"]["p50_ms"]
            for name, _ in variants:
                row["timings"][f"rrf | {name}"]["ratio_p50_vs_dense"] = (
                    row["timings"][f"rrf | {name}"]["p50_ms"]
                    / row["timings"][f"dense | {name}"]["p50_ms"])
            logger.info("latency %d items, batch %d: %s", size, batch,
                        {k: round(v["p50_ms"], 1) for k, v in row["timings"].items()})
            results.append(row)
    module.fusion_type.assign("dense")
    return {"rows": results, "filters": TYPICAL_FILTERS}


# --------------------------------------------------------------------------- 4. updates


UPDATE_NAMES = ("reindex_unchanged", "upsert_100_new_titles", "patch_1000_filter_values")


def section_updates(args) -> dict:
    from tfmmsearch.exporting.export import catalog_embedder, embed_catalog, update_index
    from tfmmsearch.exporting.index_rows import export_attribute_columns, read_index, write_index
    from tfmmsearch.exporting.updates import IndexUpdate, plan_update

    config = args_config(args)
    base = Path(args.out) / "export" / MODEL_NAME
    catalog = read_products(config)
    module = load_export(latest_version(base))
    indexed = set(read_index(module).product_ids)
    products = [p for p in catalog.products if p.product_id in indexed]
    rng = random.Random(0)
    out: dict = {"items": len(products)}

    # Item-tower throughput on a sample (what a from-scratch index costs per item).
    sample = rng.sample(products, min(args.embed_sample, len(products)))
    columns = export_attribute_columns(module)
    embed_catalog(module.index_outputs, sample[:8], columns=columns)  # warm up
    start = time.perf_counter()
    embed_catalog(module.index_outputs, sample, columns=columns)
    seconds = time.perf_counter() - start
    out["embed_sample"] = {"items": len(sample), "seconds": round(seconds, 2),
                           "items_per_s": len(sample) / seconds,
                           "extrapolated_full_index_s": len(products) * seconds / len(sample)}

    retitled = rng.sample(products, min(100, len(products) // 4))  # others stay unchanged
    upsert = [dataclasses.replace(p, title=f"{p.title} Limited Edition") for p in retitled]
    patched = rng.sample(products, min(1000, len(products) // 2))
    patch = {p.product_id: {"season": "Winter" if p.attributes.get("season") != "Winter"
                            else "Summer", "year": "2020"} for p in patched}
    updates = {"reindex_unchanged": (lambda: IndexUpdate(catalog=products), len(products)),
               "upsert_100_new_titles": (lambda: IndexUpdate(upsert=upsert), len(upsert)),
               "patch_1000_filter_values": (lambda: IndexUpdate(patch=patch), len(patch))}

    # Applied in process on the loaded module (no SavedModel written): median of rounds.
    embedder = catalog_embedder(module)
    applied = {}
    for name, (make, count) in updates.items():
        times, report = [], None
        for _ in range(args.update_rounds):
            current = read_index(module)
            start = time.perf_counter()
            rows, report = plan_update(module, current, make(), embedder)
            write_index(module, rows)
            times.append(time.perf_counter() - start)
            write_index(module, current)
        applied[name] = {"items": count, "seconds": float(np.median(times)),
                         "items_per_s": count / float(np.median(times)), "rounds": len(times),
                         "report": report.summary()}
        logger.info("in process %s: %.2f s (%s)", name, applied[name]["seconds"],
                    report.summary())
    out["applied_in_process"] = applied
    del module

    # Through update_index: load the latest version, apply, save the next one (what
    # `tfmmsearch index` does). Once each (each writes a version of ~the model's size).
    through = {}
    for name in args.versioned_updates.split(","):
        make, count = updates[name]
        start = time.perf_counter()
        version, report = update_index(base, lambda filters, make=make: make())
        seconds = time.perf_counter() - start
        through[name] = {"items": count, "seconds": seconds, "items_per_s": count / seconds,
                         "version": Path(version).name, "report": report.summary()}
        logger.info("update_index %s: %.1f s (%s)", name, seconds, report.summary())
    out["update_index"] = through
    unchanged = through.get("reindex_unchanged", applied["reindex_unchanged"])["seconds"]
    full = out["embed_sample"]["extrapolated_full_index_s"] + unchanged
    out["full_index_estimate"] = {"seconds": full, "items_per_s": len(products) / full,
                                  "how": "embed_catalog sample throughput x catalog size + the "
                                         "unchanged re-index's own cost (hashing, apply, save)"}
    return out


# --------------------------------------------------------------------------- report


def _f(value, digits=3):
    return "n/a" if value is None else f"{value:.{digits}f}"


def markdown(summary: dict) -> str:
    lines = ["# Shop-search benchmark: hybrid retrieval, filters, live updates", "",
             f"Command: `{summary['command']}`", "",
             f"Run `{summary['run']}`; machine: {summary['machine']}; total "
             f"{summary['total_seconds']} s (sections: "
             + ", ".join(f"{k} {v} s" for k, v in summary["section_seconds"].items()) + ").", ""]
    export = summary.get("export")
    if export:
        lines += [f"Export: {export['items']} items, filters {export['filters']}, "
                  f"{export['seconds']} s ({export['version']}).", ""]
    q = summary.get("quality")
    if q:
        lines += ["## 1. Quality through the export's signatures", "",
                  f"Convex weight tuned on {q['validation']['queries']} {q['validation']['source']}"
                  f" ({q['validation']['days'][0]} to {q['validation']['days'][1]}), grid 0.0..1.0"
                  f" step 0.1, judged NDCG@10 over the {q['index_items']}-item index: "
                  f"w = {q['convex_weight']:.1f} with the head (w = "
                  f"{q['convex_weight_no_head']:.1f} is best without it).", "",
                  f"Rows: protocol `full` on the {q['protocol_products']} test products "
                  f"({q['protocol_queries']} held-out-phrasing test queries); judged test-day "
                  f"queries over the whole {q['index_items']}-item index ({q['judged_queries']} "
                  f"queries, {q['brand_queries']} naming a brand, "
                  f"{q.get('rare_word_queries', 'not counted: an older run;')} holding a word that "
                  f"at most {q.get('rare_word_titles', RARE_WORD_TITLES)} titles contain); "
                  f"recall@100 of the test days' "
                  f"{q['purchases']} purchases ({q['purchase_queries']} distinct queries) over the "
                  f"whole index. `+ head`: the export's `search` (serving_default) with that "
                  f"fusion (lexical + head is convex weight 0: the BM25 top 100 re-scored by the "
                  f"head); `no head`: the candidate list's own order.", "",
                  "| system | protocol full NDCG@10 | protocol full R@100 | judged NDCG@10 | "
                  "judged brand NDCG@10 | judged rare-word NDCG@10 | judged R@100 | "
                  "purchase R@100 |",
                  "|---|---|---|---|---|---|---|---|"]
        by_name = {r["system"]: r for r in q["judged"]}
        for name, full in q["protocol_full"].items():
            j = by_name[name]
            lines.append(f"| {name} | {_f(full['ndcg@10'])} | {_f(full['recall@100'])} | "
                         f"{_f(j['judged']['ndcg@10'])} | {_f(j['judged:brand']['ndcg@10'])} | "
                         f"{_f(j.get('judged:rare_word', {}).get('ndcg@10'))} | "
                         f"{_f(j['judged']['recall@100'])} | "
                         f"{_f(q['purchase_recall'][name])} |")
        lines += ["", "Convex weight grid (validation judged NDCG@10):", "",
                  "| w | " + " | ".join(f"{w:.1f}" for w in CONVEX_GRID) + " |",
                  "|---|" + "---|" * len(CONVEX_GRID)]
        for label, values in q["convex_grid"].items():
            lines.append(f"| {label} | " + " | ".join(
                _f(values.get(w, values.get(str(w)))) for w in CONVEX_GRID) + " |")
        lines += [""]
    lat = summary.get("latency")
    if lat:
        lines += ["## 2. Filter latency (`search` vs `search_filtered`)", "",
                  "p50 / p99 ms, interleaved rounds in one process (round 0 warm-up dropped); "
                  "ratio: filtered p50 / unfiltered `search` p50 of the same fusion (target "
                  "<= 1.2x); `rrf/dense`: the same call with fusion rrf over dense.", "",
                  "| items | batch | fusion | call | p50 ms | p99 ms | vs search | rrf/dense | "
                  "mean results |", "|---|---|---|---|---|---|---|---|---|"]
        for row in lat["rows"]:
            for key, t in row["timings"].items():
                fusion, call = key.split(" | ")
                filter_text = call[len("search_filtered "):].strip("'\"") \
                    if call.startswith("search_filtered") else None
                results = row["num_results"].get(filter_text) if filter_text else None
                lines.append(
                    f"| {row['items']:,} | {row['batch']} | {fusion} | `{call}` | "
                    f"{t['p50_ms']:.1f} | {t['p99_ms']:.1f} | "
                    f"{_f(t.get('ratio_p50_vs_search'), 2)} | "
                    f"{_f(t.get('ratio_p50_vs_dense'), 2)} | "
                    f"{'' if results is None else f'{results:.0f}'} |")
        lines += ["", f"Samples per cell: " + ", ".join(
            f"{r['items']:,} x batch {r['batch']}: {r['rounds']}" for r in lat["rows"])
            + " (p99 of few samples is close to the max).", ""]
    up = summary.get("updates")
    if up:
        e = up["embed_sample"]
        full = up["full_index_estimate"]
        embedded = (f"`embed_catalog` over all {e['items']} items (measured)"
                    if e["items"] == up["items"] else
                    f"`embed_catalog` over a {e['items']}-item sample (extrapolated)")
        lines += ["## 3. Update speed (12k Myntra export)", "",
                  f"Full index from scratch: {embedded} ran {e['items_per_s']:.1f} items/s "
                  f"({e['seconds']} s) -> {e['extrapolated_full_index_s']:.0f} s for "
                  f"{up['items']} items, plus the unchanged re-index's own cost (hashing, "
                  f"apply, save): ~{full['seconds']:.0f} s, {full['items_per_s']:.1f} items/s.",
                  "",
                  "| update | items | in process (apply, no save): s | items/s | "
                  "update_index (load + apply + save version): s | items/s | report |",
                  "|---|---|---|---|---|---|---|"]
        for name, a in up["applied_in_process"].items():
            t = up["update_index"].get(name)  # only the --versioned-updates ran this way
            versioned = (f"{t['seconds']:.1f} | {t['items_per_s']:.0f} | {t['report']}" if t
                         else f"not run | | {a['report']}")
            lines.append(f"| {name} | {a['items']} | {a['seconds']:.2f} (median of "
                         f"{a['rounds']}) | {a['items_per_s']:.0f} | {versioned} |")
        lines.append("")
    if summary.get("notes"):
        lines += ["## Notes", ""] + [f"- {note}" for note in summary["notes"]] + [""]
    return "\n".join(lines)


# --------------------------------------------------------------------------- main


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", required=True, help="a trained run directory")
    parser.add_argument("--out", required=True, help="exports and section results go here")
    parser.add_argument("--results", default="benchmarks/results",
                        help="also write shop_search.{json,md} here ('' for OUT only)")
    parser.add_argument("--log-from", type=Path,
                        help="take the search log and its day split from this run's config "
                             "(for a RUN trained without the log)")
    parser.add_argument("--judged", help="judged test-day queries (default RUN/../judged.jsonl)")
    parser.add_argument("--subsets", help="default: JUDGED less .jsonl + .subsets.json")
    parser.add_argument("--sections", default=",".join(SECTIONS))
    parser.add_argument("--section", help=argparse.SUPPRESS)  # internal: run one, in this process
    parser.add_argument("--report-only", action="store_true",
                        help="only merge OUT/sections/*.json into the report (no section runs)")
    parser.add_argument("--note", action="append", default=[],
                        help="a line for the report's Notes (e.g. what else ran on the machine)")
    parser.add_argument("--in-process", action="store_true",
                        help="run the sections in this process (tests; timings less clean)")
    parser.add_argument("--max-products", type=int, default=0, help="index only the first N")
    parser.add_argument("--max-judged", type=int, default=0, help="sample of judged test queries")
    parser.add_argument("--max-validation", type=int, default=600)
    parser.add_argument("--protocol-queries", type=int, default=500)
    parser.add_argument("--sizes", default="12000,1000000")
    parser.add_argument("--rounds-1", type=int, default=40)
    parser.add_argument("--rounds-32", type=int, default=15)
    parser.add_argument("--latency-budget-s", type=float, default=150,
                        help="stop a (size, batch) cell's rounds after this long (>= 3 rounds)")
    parser.add_argument("--embed-sample", type=int, default=300)
    parser.add_argument("--update-rounds", type=int, default=3)
    parser.add_argument("--versioned-updates", default=",".join(UPDATE_NAMES),
                        help="which updates also go through update_index (load, apply, save a "
                             f"version), comma-separated from {', '.join(UPDATE_NAMES)}")
    args = parser.parse_args(argv)
    setup_logging()
    run = Path(args.run)
    args.judged = args.judged or str(run.parent / "judged.jsonl")
    args.subsets = args.subsets or args.judged[:-len(".jsonl")] + ".subsets.json"
    out = Path(args.out)
    sections_dir = out / "sections"
    sections_dir.mkdir(parents=True, exist_ok=True)

    def run_section(name: str) -> None:
        started = time.perf_counter()
        result = {"export": section_export, "quality": section_quality,
                  "latency": section_latency, "updates": section_updates}[name](args)
        result["section_seconds"] = round(time.perf_counter() - started, 1)
        (sections_dir / f"{name}.json").write_text(json.dumps(result, indent=2, default=str))

    if args.section:
        run_section(args.section)
        return 0

    argv = list(sys.argv[1:] if argv is None else argv)
    command = "python benchmarks/shop_search.py " + " ".join(shlex.quote(a) for a in argv)
    started = time.perf_counter()
    previous = out / "shop_search.json"
    if args.report_only and previous.is_file():
        command = json.loads(previous.read_text())["command"]
    for name in ([] if args.report_only else args.sections.split(",")):
        logger.info("===== section %s", name)
        if args.in_process:
            run_section(name)
            continue
        subprocess.run([sys.executable, str(Path(__file__).resolve()), *argv, "--section", name],
                       check=True)
    summary = {"command": command, "run": str(run),
               "machine": f"{os.cpu_count()} CPU cores, Python {platform.python_version()}, "
                          f"TensorFlow {tf.__version__}"}
    seconds = {}
    for name in SECTIONS:
        path = sections_dir / f"{name}.json"
        if path.is_file():
            summary[name] = json.loads(path.read_text())
            seconds[name] = summary[name].get("section_seconds")
    summary["section_seconds"] = seconds
    summary["notes"] = list(args.note)
    summary["total_seconds"] = round(time.perf_counter() - started, 1)
    if args.report_only and previous.is_file():
        summary["total_seconds"] = json.loads(previous.read_text())["total_seconds"]
    text = markdown(summary)
    targets = [Path(args.out)] + ([Path(args.results)] if args.results else [])
    for target in targets:
        target.mkdir(parents=True, exist_ok=True)
        (target / "shop_search.json").write_text(json.dumps(summary, indent=2, default=str))
        (target / "shop_search.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
