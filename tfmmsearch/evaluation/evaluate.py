"""`tfmmsearch.evaluate(run_dir)`: the protocol tasks on a split, with baselines and ablations.

Rows: BM25 over titles, the trained model (fused, re-ranked by the ranking head), the same
without re-ranking, and its text-only and image-only ablations. Queries use the held-out
phrasings of the split; grades come from the catalog attributes (PROTOCOL.md). With a judged
query file the same rows also hold the judged task (`judged.py`) over the run's whole catalog,
every split: a shop's judged queries are about its catalog, not about one split of it.
"""

from __future__ import annotations

import json
import logging
import random
from pathlib import Path

from tfmmsearch.data.catalog import read_catalog
from tfmmsearch.data.judgments import Judgments, read_judgments
from tfmmsearch.data.prepare import prepare_data, resolve_catalog_dir
from tfmmsearch.data.queries import grade_matrix
from tfmmsearch.evaluation.judged import Subsets, evaluate_judged
from tfmmsearch.evaluation.model_system import EncoderMemo, ProductAttributes, TrainedModelSystem
from tfmmsearch.evaluation.protocol import BM25System, EvaluationRow, evaluate_all
from tfmmsearch.evaluation.report import counts_lines, markdown_table, text_table
from tfmmsearch.model.build import load_trained_model

logger = logging.getLogger(__name__)


def model_systems(model, prefix: str = "tfmmsearch",
                  products=None) -> list[TrainedModelSystem]:
    """The trained model and its ablations, sharing one memo of encoder outputs; `products`
    (the catalog) give a model with item features its items' attribute values."""
    memo = EncoderMemo(model.encoders, model.image_size)
    attributes = (ProductAttributes(products, model.item_feature_columns)
                  if products is not None and model.item_feature_columns else None)
    shared = {"memo": memo, "attributes": attributes}
    return [
        TrainedModelSystem(f"{prefix} fused + ranking head", model, **shared),
        TrainedModelSystem(f"{prefix} fused retrieval", model, rerank=0, **shared),
        TrainedModelSystem(f"{prefix} text only", model, use_image=False, rerank=0, **shared),
        TrainedModelSystem(f"{prefix} image only", model, use_text=False, rerank=0, **shared),
    ]


def results_stem(split: str, judged: bool, judgments_only: bool) -> str:
    """The results' file name without suffix: a judged run never overwrites the protocol's
    evaluation-<split> files, and a judged-only run (no split involved) has no split in it."""
    if judgments_only:
        return "evaluation-judged"
    return f"evaluation-{split}-judged" if judged else f"evaluation-{split}"


def evaluate(run_dir: str | Path, split: str = "test", max_queries: int | None = 500,
             title_to_image_queries: int | None = 500, seed: int = 0,
             judgments: str | Path | Judgments | None = None, judgments_only: bool = False,
             subsets: Subsets | None = None) -> list[EvaluationRow]:
    """Evaluates a trained run; writes `results_stem(...)`.{md,json} into the run dir.

    Without `judgments`: the protocol tasks on `split`. With `judgments` (a file or a read
    `Judgments`): also the judged task over the whole catalog, and one `judged:<name>` task per
    entry of `subsets` (name -> judged query texts). `judgments_only` skips the protocol
    tasks, so a catalog without attribute columns can be evaluated. The judgments file is read
    first, so a bad one fails before the model loads.
    """
    if judgments_only and judgments is None:
        raise ValueError("judgments_only needs judged queries (--judgments FILE)")
    if subsets and judgments is None:
        raise ValueError("subsets are subsets of judged queries: pass judgments too")
    if judgments is not None and not isinstance(judgments, Judgments):
        judgments = read_judgments(judgments)
    run_dir = Path(run_dir)
    config, model = load_trained_model(run_dir)
    if judgments_only:
        catalog = read_catalog(resolve_catalog_dir(config), on_bad_row=config.data.on_bad_row)
    else:
        prepared = prepare_data(config, progress=False, attribute_queries=True)
        catalog = prepared.catalog
    systems = [BM25System()] + model_systems(model, products=catalog.products)
    header, rows = "", None
    if not judgments_only:
        products = prepared.split_catalog(split).products
        queries = list(prepared.queries[split])
        if not queries:
            raise ValueError(f"no attribute queries on split {split!r}: the catalog has no "
                             f"usable attribute columns (data.attributes) for the protocol "
                             f"tasks; evaluate with judged queries instead: tfmmsearch "
                             f"evaluate --run {run_dir} --judgments FILE --judgments-only")
        if max_queries is not None and len(queries) > max_queries:
            queries = random.Random(seed).sample(queries, max_queries)
        grades = grade_matrix(queries, products, config.data.attributes)
        logger.info("evaluating %d systems on %s: %d products, %d queries", len(systems), split,
                    len(products), len(queries))
        rows = evaluate_all(systems, [q.text for q in queries], grades,
                            [p.title for p in products], _image_paths(products),
                            max_t2i_queries=title_to_image_queries, seed=seed)
        header += (f"Split `{split}` of `{config.name}`: {len(products)} products, "
                   f"{len(queries)} held-out-phrasing queries.\n\n")
    if judgments is not None:
        products = catalog.products
        logger.info("evaluating %d systems on %d judged queries over all %d products",
                    len(systems), len(judgments), len(products))
        judged_rows = evaluate_judged(systems, judgments, [p.product_id for p in products],
                                      [p.title for p in products], _image_paths(products),
                                      subsets=subsets)
        if rows is None:
            rows = judged_rows
        else:
            for row, judged in zip(rows, judged_rows):
                row.update(judged.results)
        header += (f"Judged queries `{judgments.source}`: {len(judgments)} queries over all "
                   f"{len(products)} products of `{config.name}` (every split).\n\n")
    _write_results(run_dir, results_stem(split, judgments is not None, judgments_only), header,
                   rows)
    return rows


def _image_paths(products) -> list[str]:
    return [str(p.image_path) if p.image_path else "" for p in products]


def _write_results(run_dir: Path, stem: str, header: str, rows: list[EvaluationRow]) -> None:
    counts = "".join(f"- {line}\n" for line in counts_lines(rows))
    (run_dir / f"{stem}.md").write_text(header + markdown_table(rows) + "\n"
                                        + ("\n" + counts if counts else ""))
    (run_dir / f"{stem}.json").write_text(json.dumps([row.to_dict() for row in rows], indent=2))
    print(text_table(rows))
    logger.info("wrote %s and %s", run_dir / f"{stem}.md", run_dir / f"{stem}.json")
