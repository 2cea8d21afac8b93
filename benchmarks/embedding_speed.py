"""Catalog embedding throughput (items/s): the in-process path under several settings, and Beam.

Re-indexing runs every new product through an export's `index_outputs` (MiniLM title tower,
EfficientNet-Lite0 image tower, fusion); the image tower dominates. This script measures, on
the first --items Myntra products:

- in process (`export.embed_catalog`), each setting in a fresh process (thread pools and
  malloc tunables only take effect before TensorFlow starts): batch size, intra/inter-op
  threads, oneDNN on or off (the package turns it off by default), GLIBC_TUNABLES hugepages;
- Beam's DirectRunner (`beam_embedding.embed_products`) with 1 and 2 worker processes,
  end to end (worker start and model load included, as a user would wait).

The export is built here from configs/myntra.yaml's towers with untrained projection and
fusion weights (throughput does not depend on training): `tfmmsearch hub build minilm-l6
efficientnet-lite0` first. Reported: median items/s over --repeats passes (after one warm-up
batch), written to --results/embedding_speed.{json,md}.

    .venv/bin/python benchmarks/embedding_speed.py --items 300 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
MYNTRA = REPO.parent / "shared" / "data" / "myntra"
logger = logging.getLogger("benchmarks.embedding_speed")

# name -> (env overrides, worker flags). The first is the package's default today.
IN_PROCESS_SETTINGS = {
    "default (batch 64)": ({}, []),
    "batch 16": ({}, ["--batch-size", "16"]),
    "batch 32": ({}, ["--batch-size", "32"]),
    "batch 128": ({}, ["--batch-size", "128"]),
    "intra 2, inter 1": ({}, ["--intra", "2", "--inter", "1"]),
    "oneDNN on": ({"TF_ENABLE_ONEDNN_OPTS": "1"}, []),
    "GLIBC_TUNABLES hugetlb=1": ({"GLIBC_TUNABLES": "glibc.malloc.hugetlb=1"}, []),
    "GLIBC_TUNABLES mmap/trim thresholds": (
        {"GLIBC_TUNABLES": "glibc.malloc.mmap_threshold=1073741824:"
                           "glibc.malloc.trim_threshold=1073741824"}, []),
}


def _products(items: int):
    from tfmmsearch.data.catalog import read_catalog

    return read_catalog(MYNTRA, on_bad_row="skip", check_images=False).products[:items]


def build_export(out: Path, items: int) -> Path:
    """An export of configs/myntra.yaml's towers (untrained heads) over the first `items`."""
    from tfmmsearch.config import load_config, save_config
    from tfmmsearch.exporting.export import export
    from tfmmsearch.model.build import RUN_WEIGHTS, build_model

    base = out / "export" / "myntra"
    if base.is_dir() and any(p.name.isdigit() for p in base.iterdir()):
        return max((p for p in base.iterdir() if p.name.isdigit()), key=lambda p: int(p.name))
    config = load_config(REPO / "configs" / "myntra.yaml", [
        f"data.catalog_dir={MYNTRA}", f"data.work_dir={out / 'data'}",
        f"export.base_dir={out / 'export'}"])
    run = out / "run"
    run.mkdir(parents=True, exist_ok=True)
    save_config(config, run / "config.yaml")
    model = build_model(config)
    model.build_heads()
    model.save_weights(str(run / RUN_WEIGHTS))
    return export(run, products=_products(items))


def measure_in_process(version: Path, items: int, repeats: int, batch_size: int,
                       intra: int | None, inter: int | None) -> dict:
    """One setting, in this (fresh) process: median items/s of `embed_catalog` passes."""
    import tensorflow as tf

    if intra:
        tf.config.threading.set_intra_op_parallelism_threads(intra)
    if inter:
        tf.config.threading.set_inter_op_parallelism_threads(inter)
    import tensorflow_text  # noqa: F401

    from tfmmsearch.exporting.export import embed_catalog
    from tfmmsearch.exporting.index_rows import export_attribute_columns

    module = tf.saved_model.load(str(version))
    columns = export_attribute_columns(module)
    products = _products(items)
    embed_catalog(module.index_outputs, products[:batch_size], batch_size, columns=columns)
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        embed_catalog(module.index_outputs, products, batch_size, columns=columns)
        rates.append(len(products) / (time.perf_counter() - start))
    return {"items_per_s": statistics.median(rates), "passes": rates}


def _columns(version: Path) -> tuple[str, ...]:
    """The export's item-feature columns, from its JSON file (no SavedModel load here)."""
    from tfmmsearch.contract import EXPORT_ITEM_FEATURES_FILE

    path = version / EXPORT_ITEM_FEATURES_FILE
    return tuple(json.loads(path.read_text())["columns"]) if path.is_file() else ()


def measure_beam(version: Path, items: int, repeats: int, workers: int) -> dict:
    """Beam's DirectRunner, `workers` processes (each with cores / workers intra-op threads)."""
    from tfmmsearch.exporting.beam_embedding import embed_products
    from tfmmsearch.exporting.beam_options import BeamEmbedOptions

    products = _products(items)
    threads = max(1, (os.cpu_count() or 1) // workers)
    options = BeamEmbedOptions(pipeline_args=(f"--direct_num_workers={workers}",
                                              "--direct_running_mode=multi_processing"),
                               intra_op_threads=threads)
    rates = []
    for _ in range(repeats):
        with tempfile.TemporaryDirectory() as directory:
            start = time.perf_counter()
            arrays, bad = embed_products(products, _columns(version), version, directory,
                                         options)
            rates.append(len(arrays["product_id"]) / (time.perf_counter() - start))
            assert not bad and len(arrays["product_id"]) == len(products)
    return {"items_per_s": statistics.median(rates), "passes": rates}


def _child(args, extra: list[str], env: dict) -> dict:
    command = [sys.executable, __file__, "--worker", "--version", str(args.version),
               "--items", str(args.items), "--repeats", str(args.repeats)] + extra
    result = subprocess.run(command, env={**os.environ, **env}, capture_output=True, text=True,
                            timeout=3600)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "bench-embedding")
    parser.add_argument("--results", type=Path, default=REPO / "benchmarks" / "results")
    parser.add_argument("--settings", default=None,
                        help="comma-separated names of IN_PROCESS_SETTINGS to run (default all)")
    parser.add_argument("--no-beam", action="store_true")
    # internal: one measurement in this process
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--beam-workers", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--version", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--batch-size", type=int, default=64, help=argparse.SUPPRESS)
    parser.add_argument("--intra", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--inter", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    import tfmmsearch  # noqa: F401  (TF_USE_LEGACY_KERAS, TF_ENABLE_ONEDNN_OPTS defaults)

    if args.worker:
        if args.beam_workers:
            result = measure_beam(args.version, args.items, args.repeats, args.beam_workers)
        else:
            result = measure_in_process(args.version, args.items, args.repeats, args.batch_size,
                                        args.intra, args.inter)
        print(json.dumps(result))
        return result

    from tfmmsearch.logs import setup_logging

    setup_logging(False)
    args.version = build_export(args.out, args.items)
    logger.info("export: %s", args.version)
    names = args.settings.split(",") if args.settings else list(IN_PROCESS_SETTINGS)
    rows = []
    for name in names:
        env, flags = IN_PROCESS_SETTINGS[name]
        result = _child(args, flags, env)
        rows.append({"path": "in process", "setting": name, **result})
        logger.info("%s: %.1f items/s", name, result["items_per_s"])
    if not args.no_beam:
        for workers in (1, 2):
            result = _child(args, ["--beam-workers", str(workers)], {})
            rows.append({"path": "Beam DirectRunner", "setting": f"{workers} worker process"
                         f"{'es' if workers > 1 else ''}", **result})
            logger.info("Beam %d workers: %.1f items/s", workers, result["items_per_s"])
    report = {"items": args.items, "repeats": args.repeats, "cpu_count": os.cpu_count(),
              "export": str(args.version), "rows": rows}
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / "embedding_speed.json").write_text(json.dumps(report, indent=2) + "\n")
    lines = [f"Embedding throughput, {args.items} Myntra products, median of {args.repeats} "
             f"passes, {os.cpu_count()} CPU cores", "",
             "| path | setting | items/s |", "|---|---|---|"]
    lines += [f"| {r['path']} | {r['setting']} | {r['items_per_s']:.1f} |" for r in rows]
    text = "\n".join(lines) + "\n"
    (args.results / "embedding_speed.md").write_text(text)
    print(text)
    return report


if __name__ == "__main__":
    main()
