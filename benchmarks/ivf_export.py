"""End-to-end latency of an export's signatures with an exact vs an IVF index (`export.index`).

    python benchmarks/ivf_export.py --out runs/bench-ivf-export

benchmarks/ann.py measures the index alone on vectors; this measures what a TF Serving
client sees: the loaded SavedModel's `search` (dense and RRF fusion, ranking head included),
`search_filtered`, `retrieve` (query tower + index) and `retrieve_embedding` (the index alone,
nprobe per request), at batch 1 and 32, exact and IVF side by side in interleaved rounds.

The model is CONFIG's (default configs/myntra.yaml: MiniLM + EfficientNet-Lite0 towers, D =
256) with untrained heads: latency does not depend on training, only on shapes. Two exports
(exact, ivf) index --items real Myntra products; for each --sizes the index is then replaced
by those products' rows plus perturbed copies (cosine about 0.85 to their source, renormalised;
filter columns and title words copied), so the IVF lists are learned on clustered vectors.
Recall@10 of the IVF export's `retrieve` and `search` against the exact export's, on the same
index and queries, says what the speed costs. Queries: the search log's (the shop's own).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shlex
import shutil
import sys
import time
from pathlib import Path

import numpy as np

import tfmmsearch  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
import tensorflow as tf

from tfmmsearch.logs import setup_logging

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ann import at_cosine, normalised  # noqa: E402  (the copies ann.py's Myntra data makes)
from shop_search import TYPICAL_FILTERS, load_export, percentiles  # noqa: E402

logger = logging.getLogger("benchmarks.ivf_export")

KINDS = ("exact", "ivf")
COPY_COSINE = 0.85  # a perturbed copy's cosine to its source product


def make_runs(args, out: Path) -> dict[str, Path]:
    """Two run directories (exact / ivf index) sharing one untrained model's weights."""
    from tfmmsearch.config import load_config, save_config
    from tfmmsearch.model.build import RUN_WEIGHTS, build_model

    runs = {}
    weights = None
    for kind in KINDS:
        config = load_config(args.config or None, list(args.set) + [
            f"data.work_dir={out / 'data'}", f"export.base_dir={out / 'export'}",
            f"export.model_name={kind}", f"export.index.type={kind}",
            f"export.index.lists={args.lists}", f"export.index.nprobe={args.nprobe}",
            "model.item_features=[]"])
        run_dir = out / f"run-{kind}"
        if run_dir.exists():
            shutil.rmtree(run_dir)
        (run_dir / RUN_WEIGHTS).parent.mkdir(parents=True)
        save_config(config, run_dir / "config.yaml")
        if weights is None:
            model = build_model(config)
            model.build_heads()
            model.save_weights(str(run_dir / RUN_WEIGHTS))
            weights = run_dir / RUN_WEIGHTS
        else:
            for part in weights.parent.iterdir():
                shutil.copy(part, run_dir / RUN_WEIGHTS.rsplit("/", 1)[0] / part.name)
        runs[kind] = run_dir
    return runs


def perturbed_rows(rows, size: int, seed: int = 0):
    """`rows` and perturbed copies up to `size`: copy c of product p is `p~c`, its vectors at
    cosine COPY_COSINE to p's (ann.py's construction), every other field copied."""
    from tfmmsearch.exporting.index_rows import IndexRows

    if size <= len(rows):
        return rows.take(np.arange(size))
    rng = np.random.default_rng(seed)
    source = np.arange(size) % len(rows)
    copy = np.arange(size) // len(rows)
    ids = np.array([p if c == 0 else f"{p}~{c}" for p, c in
                    zip(rows.product_ids[source], copy)], object)
    fields = {}
    for name, values in rows.fields.items():
        taken = values[source]
        if name in ("embedding", "text", "image"):
            copies = copy > 0
            taken[copies] = at_cosine(normalised(taken[copies]), COPY_COSINE, rng)
        fields[name] = taken
    return IndexRows(ids, fields)


def query_texts(path: Path, products) -> list[str]:
    """Up to 2,000 queries of a JSONL file with a 'query' field, else the products' titles."""
    if path.is_file():
        lines = path.read_text().splitlines()[:2000]
        return [json.loads(line)["query"] for line in lines if line.strip()]
    logger.info("no %s: the products' titles are the queries", path)
    return [p.title for p in products if p.title]


def index_bytes(module) -> dict[str, int]:
    """Bytes each index variable holds (strings: their bytes + TF's 24-byte tstring header),
    the memory an export's catalog costs beside its fixed model weights."""
    found, stack = {}, [("index", module.index)]
    while stack:  # a loaded export's objects carry no `.variables`: walk their attributes
        path, node = stack.pop()
        for key, value in vars(node).items():
            if isinstance(value, tf.Variable):
                found.setdefault(id(value), (f"{path}.{key}", value))
            elif hasattr(value, "__dict__") and not key.startswith("_") and \
                    not callable(value) and type(value).__module__.startswith("tensorflow"):
                stack.append((f"{path}.{key}", value))
    sizes = {}
    for name, variable in found.values():
        if variable.dtype == tf.string:
            values = variable.numpy().reshape(-1)
            sizes[name] = int(sum(len(v) for v in values) + 24 * len(values))
        else:
            sizes[name] = int(tf.size(variable, out_type=tf.int64)) * variable.dtype.size
    return sizes


def _call(module, signature: str, batch: list[str], filter_text: str | None = None,
          nprobe: int = 0, embedding=None):
    function = module.signatures[signature]
    if signature == "retrieve_embedding":
        return function(embedding=embedding, nprobe=tf.fill([len(batch)], nprobe))
    if signature == "search_filtered":
        return function(query=tf.constant(batch), filter=tf.constant([filter_text] * len(batch)))
    return function(query=tf.constant(batch))


def variants(nprobes: list[int]) -> list[tuple]:
    """(label, signature, fusion, filter, nprobe) of every timed call."""
    rows = [("search dense", "serving_default", "dense", None, 0),
            ("search rrf", "serving_default", "rrf", None, 0),
            (f"search_filtered dense {TYPICAL_FILTERS[1]!r}", "search_filtered", "dense",
             TYPICAL_FILTERS[1], 0),
            ("retrieve", "retrieve", "dense", None, 0)]
    rows += [(f"retrieve_embedding nprobe={n}", "retrieve_embedding", "dense", None, n)
             for n in nprobes]
    return rows


def recall(found, expected) -> float:
    """Mean overlap of each row's real ids with the expected row's (top 10)."""
    values = []
    for got, want in zip(found.numpy(), expected.numpy()):
        want = [w for w in want[:10] if w]
        values.append(len(set(got[:10]) & set(want)) / max(len(want), 1))
    return float(np.mean(values))


def measure(args, modules: dict, texts: list[str], size: int, batch: int) -> dict:
    rounds = args.rounds_1 if batch == 1 else args.rounds_32
    if size > 100_000:
        rounds = max(5, rounds // 2)
    calls = variants([int(n) for n in args.nprobes.split(",")])
    samples = {(kind, label): [] for kind in KINDS for label, *_ in calls}
    started = time.perf_counter()
    done = 0
    for r in range(rounds + 1):  # round 0 warms up
        if r >= 3 and time.perf_counter() - started > args.budget_s:
            logger.info("%d items, batch %d: time budget spent after %d rounds", size, batch, done)
            break
        done = r
        query = [texts[(r * batch + i) % len(texts)] for i in range(batch)]
        embedding = modules["exact"].signatures["embed_query"](query=tf.constant(query))["embedding"]
        for label, signature, fusion, filter_text, nprobe in calls:
            for kind in KINDS:
                if signature == "retrieve_embedding" and kind == "exact" and nprobe != calls[-1][4]:
                    continue  # exact ignores nprobe: time it once
                module = modules[kind]
                module.fusion_type.assign(fusion)
                start = time.perf_counter()
                _call(module, signature, query, filter_text, nprobe, embedding)["product_ids"].numpy()
                if r:
                    samples[(kind, label)].append(time.perf_counter() - start)
    timings = {}
    for (kind, label), values in samples.items():
        if values:
            timings[f"{kind} | {label}"] = percentiles(values)
    for label, *_ in calls:
        exact = timings.get(f"exact | {label}") or timings[f"exact | {calls[-1][0]}"]
        ivf = timings[f"ivf | {label}"]
        ivf["speedup_p50_vs_exact"] = exact["p50_ms"] / ivf["p50_ms"]
    return {"items": size, "batch": batch, "rounds": done, "timings": timings}


def quality(modules: dict, texts: list[str], nprobes: list[int], batch: int = 32) -> dict:
    """Recall@10 of the IVF export against the exact one on the same index and queries (in
    batches: a [B, N] score block of 256 queries over 1M items is 1 GB per intermediate)."""
    found = {}

    def add(name, got, want):
        found.setdefault(name, []).append(recall(got, want))

    for first in range(0, min(len(texts), 256), batch):
        queries = tf.constant(texts[first:first + batch])
        for fusion in ("dense", "rrf"):
            for module in modules.values():
                module.fusion_type.assign(fusion)
            add(f"search {fusion}",
                modules["ivf"].signatures["serving_default"](query=queries)["product_ids"],
                modules["exact"].signatures["serving_default"](query=queries)["product_ids"])
        exact = modules["exact"].signatures["retrieve"](query=queries)["product_ids"]
        add("retrieve", modules["ivf"].signatures["retrieve"](query=queries)["product_ids"], exact)
        embedding = modules["exact"].signatures["embed_query"](query=queries)["embedding"]
        for n in nprobes:
            add(f"retrieve_embedding nprobe={n}", modules["ivf"].signatures["retrieve_embedding"](
                embedding=embedding, nprobe=tf.fill([int(queries.shape[0])], n))["product_ids"],
                exact)
    for module in modules.values():
        module.fusion_type.assign("dense")
    return {name: float(np.mean(values)) for name, values in found.items()}


def markdown(summary: dict) -> str:
    lines = ["# IVF vs exact index, end to end (loaded SavedModel signatures)", "",
             f"Command: `{summary['command']}`", "",
             f"Machine: {summary['machine']}, TF_ENABLE_ONEDNN_OPTS={summary.get('onednn')}. Model: {summary['config']} towers, D = "
             f"{summary['dim']}, untrained heads; index: {summary['items']} real Myntra "
             f"products and perturbed copies (cosine {COPY_COSINE}); dense vectors: "
             f"{summary.get('item_vectors')}. IVF: lists "
             f"{summary['lists'] or 'about sqrt(N)'}, export nprobe {summary['nprobe']}.", ""]
    for size, entry in summary["sizes"].items():
        lines += [f"## {int(size):,} items", "",
                  f"Index assignment: exact {entry['assign_s']['exact']:.1f} s, ivf (k-means + "
                  f"lists) {entry['assign_s']['ivf']:.1f} s. Recall@10 of the IVF export vs the "
                  "exact one: " + ", ".join(f"{k} {v:.3f}" for k, v in entry["recall"].items())
                  + ". Index memory per item: " + ", ".join(
                      f"{kind} {value:,.0f} B" for kind, value in entry["index_bytes_per_item"].items()), "",
                  "| call | batch | exact p50 ms | ivf p50 ms | ivf p99 ms | speed-up |",
                  "|---|---|---|---|---|---|"]
        for row in entry["latency"]:
            for key, ivf in row["timings"].items():
                if not key.startswith("ivf | "):
                    continue
                label = key[len("ivf | "):]
                exact = row["timings"].get(f"exact | {label}")
                shown = f"{exact['p50_ms']:.1f}" if exact else "(as above)"
                lines.append(f"| {label} | {row['batch']} | {shown} | {ivf['p50_ms']:.1f} | "
                             f"{ivf['p99_ms']:.1f} | {ivf['speedup_p50_vs_exact']:.2f}x |")
        lines.append("")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="runs, exports and results go here")
    parser.add_argument("--results", default="benchmarks/results",
                        help="also copy ivf_export.{json,md} here ('' = don't)")
    parser.add_argument("--config", default="configs/myntra.yaml",
                        help="the model's config ('' = the package defaults)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="config overrides, as for `tfmmsearch train`")
    parser.add_argument("--queries", type=Path, default=None,
                        help="JSONL with a 'query' field (default: the catalog's search_log.jsonl, "
                             "else product titles)")
    parser.add_argument("--items", type=int, default=400, help="real products embedded")
    parser.add_argument("--sizes", default="12000,1000000")
    parser.add_argument("--lists", type=int, default=0, help="IVF lists (0: about sqrt(N))")
    parser.add_argument("--nprobe", type=int, default=16, help="the IVF export's nprobe")
    parser.add_argument("--nprobes", default="4,16,64", help="retrieve_embedding nprobe values")
    parser.add_argument("--item-vectors", type=Path, default=None,
                        help="[M, D] .npy of real item vectors (e.g. ann.py's cached Myntra "
                             "MiniLM title vectors) to stand for the untrained model's "
                             "embeddings in the dense index: an untrained item tower maps "
                             "every product to nearly one direction, a degenerate IVF")
    parser.add_argument("--rounds-1", type=int, default=30)
    parser.add_argument("--rounds-32", type=int, default=10)
    parser.add_argument("--budget-s", type=float, default=240, help="per size and batch")
    args = parser.parse_args(argv)
    setup_logging()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    from tfmmsearch.exporting.export import export
    from tfmmsearch.exporting.index_rows import read_index, write_index
    from tfmmsearch.model.build import load_run_config

    runs = make_runs(args, out)
    config = load_run_config(runs["exact"])
    from shop_search import read_products

    products = read_products(config).products[:args.items]
    versions = {kind: export(runs[kind], base_dir=out / "export" / kind, products=products)
                for kind in KINDS}
    modules = {kind: load_export(path) for kind, path in versions.items()}
    base_rows = read_index(modules["exact"])
    if args.item_vectors:  # realistic geometry for the dense index (see --item-vectors)
        vectors = normalised(np.load(args.item_vectors).astype(np.float32))
        base_rows.fields["embedding"] = vectors[np.arange(len(base_rows)) % len(vectors)]
    texts = query_texts(args.queries or Path(config.data.catalog_dir or ".") / "search_log.jsonl",
                        products)
    summary = {"command": "python benchmarks/ivf_export.py " + shlex.join(argv or sys.argv[1:]),
               "machine": f"{platform.processor() or platform.machine()}, "
                          f"{tf.config.threading.get_intra_op_parallelism_threads() or 'all'} threads",
               "onednn": os.environ.get("TF_ENABLE_ONEDNN_OPTS", "0 (tfmmsearch's default)"),
               "config": args.config, "dim": int(base_rows.fields["embedding"].shape[1]),
               "item_vectors": str(args.item_vectors or "the model's"),
               "items": len(products), "lists": args.lists, "nprobe": args.nprobe, "sizes": {}}
    nprobes = [int(n) for n in args.nprobes.split(",")]
    for size in [int(s) for s in args.sizes.split(",")]:
        rows = perturbed_rows(base_rows, size)
        assign = {}
        for kind in KINDS:
            start = time.perf_counter()
            write_index(modules[kind], rows)
            assign[kind] = time.perf_counter() - start
            logger.info("%s index of %d items assigned in %.1f s", kind, size, assign[kind])
        del rows
        memory = {kind: index_bytes(modules[kind]) for kind in KINDS}
        entry = {"assign_s": assign, "index_bytes_per_item": {
            kind: sum(sizes.values()) / size for kind, sizes in memory.items()},
                 "index_bytes": memory, "recall": quality(modules, texts, nprobes), "latency": []}
        logger.info("%d items: recall@10 vs exact %s", size, entry["recall"])
        for batch in (1, 32):
            entry["latency"].append(measure(args, modules, texts, size, batch))
            logger.info("%d items, batch %d: %s", size, batch,
                        {k: round(v["p50_ms"], 1) for k, v in entry["latency"][-1]["timings"].items()})
        summary["sizes"][str(size)] = entry
        (out / "ivf_export.json").write_text(json.dumps(summary, indent=1))
    (out / "ivf_export.md").write_text(markdown(summary))
    if args.results:
        results = Path(args.results)
        results.mkdir(parents=True, exist_ok=True)
        for name in ("ivf_export.json", "ivf_export.md"):
            shutil.copy(out / name, results / name)
    print(f"wrote {out / 'ivf_export.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
