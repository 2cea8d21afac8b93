"""`tfmmsearch.evaluate(run_dir)`: the protocol tasks on a split, with baselines and ablations.

Rows: BM25 over titles, the trained model (fused, re-ranked by the ranking head), the same
without re-ranking, and its text-only and image-only ablations. Queries use the held-out
phrasings of the split; grades come from the catalog attributes (PROTOCOL.md).
"""

from __future__ import annotations

import json
import logging
import random
from pathlib import Path

from tfmmsearch.data.prepare import prepare_data
from tfmmsearch.data.queries import grade_matrix
from tfmmsearch.evaluation.model_system import EncoderMemo, TrainedModelSystem
from tfmmsearch.evaluation.protocol import BM25System, EvaluationRow, evaluate_all
from tfmmsearch.evaluation.report import markdown_table, text_table
from tfmmsearch.model.build import load_trained_model

logger = logging.getLogger(__name__)


def model_systems(model, prefix: str = "tfmmsearch") -> list[TrainedModelSystem]:
    """The trained model and its ablations, sharing one memo of encoder outputs."""
    memo = EncoderMemo(model.encoders, model.image_size)
    return [
        TrainedModelSystem(f"{prefix} fused + ranking head", model, memo=memo),
        TrainedModelSystem(f"{prefix} fused retrieval", model, rerank=0, memo=memo),
        TrainedModelSystem(f"{prefix} text only", model, use_image=False, rerank=0, memo=memo),
        TrainedModelSystem(f"{prefix} image only", model, use_text=False, rerank=0, memo=memo),
    ]


def evaluate(run_dir: str | Path, split: str = "test", max_queries: int | None = 500,
             title_to_image_queries: int | None = 500, seed: int = 0) -> list[EvaluationRow]:
    """Evaluates a trained run on `split`; writes evaluation-<split>.{md,json} into the run dir."""
    run_dir = Path(run_dir)
    config, model = load_trained_model(run_dir)
    prepared = prepare_data(config, progress=False)
    products = prepared.split_catalog(split).products
    queries = list(prepared.queries[split])
    if max_queries is not None and len(queries) > max_queries:
        queries = random.Random(seed).sample(queries, max_queries)
    grades = grade_matrix(queries, products, config.data.attributes)
    titles = [p.title for p in products]
    image_paths = [str(p.image_path) if p.image_path else "" for p in products]
    systems = [BM25System()] + model_systems(model)
    logger.info("evaluating %d systems on %s: %d products, %d queries", len(systems), split,
                len(products), len(queries))
    rows = evaluate_all(systems, [q.text for q in queries], grades, titles, image_paths,
                        max_t2i_queries=title_to_image_queries, seed=seed)
    header = (f"Split `{split}` of `{config.name}`: {len(products)} products, {len(queries)} "
              f"held-out-phrasing queries.\n\n")
    (run_dir / f"evaluation-{split}.md").write_text(header + markdown_table(rows) + "\n")
    (run_dir / f"evaluation-{split}.json").write_text(
        json.dumps([row.to_dict() for row in rows], indent=2))
    print(text_table(rows))
    logger.info("wrote %s and %s", run_dir / f"evaluation-{split}.md", run_dir / f"evaluation-{split}.json")
    return rows
