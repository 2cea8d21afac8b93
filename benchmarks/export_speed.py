"""Export time of a trained run: reusing training's cached encoder features vs encoding again.

`tfmmsearch export` indexes the catalog through the model's `embed_items`. When training
cached the frozen encoders' outputs for the same products (same cache keys), export reads them
and runs only the small towers; otherwise every title and photo goes through BERT and the
image network again. This script trains (or reuses) a run of the config in its own --out
directory, then times whole `export()` calls both ways on the same machine, in one process:
with the feature cache (median of --rounds) and with the cache directory moved aside (once:
that is the slow one), and checks that both exports hold the same index.

    .venv/bin/python benchmarks/export_speed.py                       # configs/myntra.yaml
    .venv/bin/python benchmarks/export_speed.py --set training.epochs=1 --rounds 3
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import statistics
import time
from pathlib import Path

import numpy as np

import tfmmsearch  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
import tensorflow as tf
from tfmmsearch.config import load_config
from tfmmsearch.exporting.export import export
from tfmmsearch.logs import setup_logging
from tfmmsearch.model.build import RUN_WEIGHTS
from tfmmsearch.training.train import train

logger = logging.getLogger("benchmarks.export_speed")
REPO = Path(__file__).resolve().parent.parent


def _index(version_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    import tensorflow_text  # noqa: F401  (the export's tokenizer ops)

    module = tf.saved_model.load(str(version_dir))
    return module.index.product_ids.numpy(), module.index.embeddings.numpy()


def timed_export(run_dir: Path, base_dir: Path) -> tuple[float, Path]:
    start = time.perf_counter()
    version = export(run_dir, base_dir=base_dir)
    return time.perf_counter() - start, version


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, default=REPO / "configs" / "myntra.yaml")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "bench-export")
    parser.add_argument("--rounds", type=int, default=3, help="exports with the cache (median)")
    parser.add_argument("--results", type=Path, default=REPO / "benchmarks" / "results")
    args = parser.parse_args(argv)
    setup_logging(False)

    out = args.out
    config = load_config(args.config, [f"data.work_dir={out / 'data'}", *args.set])
    run_dir = out / "run"
    if not Path(str(run_dir / RUN_WEIGHTS) + ".index").is_file():
        logger.info("training %s into %s (fills the feature cache)", config.name, run_dir)
    train(config, run_dir)  # a finished run with the same config is a no-op
    cache_dir = Path(config.data.work_dir) / "feature_cache"
    base_dir = out / "export" / config.export.model_name

    cached_seconds = []
    for round_index in range(args.rounds):
        seconds, cached_version = timed_export(run_dir, base_dir)
        cached_seconds.append(seconds)
        logger.info("export with the feature cache, round %d: %.1f s", round_index + 1, seconds)

    aside = cache_dir.with_name(cache_dir.name + ".aside")
    shutil.rmtree(aside, ignore_errors=True)
    cache_dir.rename(aside)
    try:
        encoded_seconds, encoded_version = timed_export(run_dir, base_dir)
    finally:
        shutil.rmtree(cache_dir, ignore_errors=True)
        aside.rename(cache_dir)
    logger.info("export encoding every item again: %.1f s", encoded_seconds)

    cached_ids, cached_vectors = _index(cached_version)
    encoded_ids, encoded_vectors = _index(encoded_version)
    assert (cached_ids == encoded_ids).all(), "the two exports index different products"
    max_difference = float(np.abs(cached_vectors - encoded_vectors).max())

    result = {
        "config": str(args.config), "overrides": args.set, "items": int(len(cached_ids)),
        "export_with_cache_s": cached_seconds,
        "export_with_cache_median_s": statistics.median(cached_seconds),
        "export_encoding_again_s": encoded_seconds,
        "speedup": encoded_seconds / statistics.median(cached_seconds),
        "max_abs_embedding_difference": max_difference,
    }
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / "export_speed.json").write_text(json.dumps(result, indent=2))
    table = "\n".join([
        f"Export of `{config.name}` ({result['items']:,} items), whole `tfmmsearch.export()` calls:",
        "",
        "| export | seconds |",
        "|---|---|",
        f"| reusing the training feature cache (median of {args.rounds}) | "
        f"{result['export_with_cache_median_s']:.1f} |",
        f"| encoding every title and photo again | {encoded_seconds:.1f} |",
        "",
        f"Speed-up {result['speedup']:.1f}x; the two indexes agree within "
        f"{max_difference:.1e} (max absolute embedding difference).",
    ])
    (args.results / "export_speed.md").write_text(table + "\n")
    print(table)
    return result


if __name__ == "__main__":
    main()
